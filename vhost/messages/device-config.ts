/**
 * DEVICE_CONFIG (docs/protocol.md §10.3): runtime enables of an assigned device that the guest
 * controls after DEVICE_ADD — the guest's context-entry PRE (VT-d) or the virtio-iommu page
 * request enable turns PRI on; ATS enable follows the device's ATS control register.
 *
 * The request replaces both enables at once. A bit whose capability the device lacks (DEVICE_ADD
 * caps) is EINVAL from the back-end; unknown bits are EOPNOTSUPP here.
 */
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message } from './codec.js';
import { VsvaRequest } from './codes.js';

export const DeviceConfigFlag = {
  /** Page requests enabled: a translation fault becomes a PAGE_REQUEST (needs the PRI capability). */
  PRI_ENABLE: 1 << 0,
  /** Address translation services enabled (needs the ATS capability). */
  ATS_ENABLE: 1 << 1,
} as const;
const DEVICE_CONFIG_FLAG_MASK = 0x3;

export interface DeviceConfigRequest {
  rid: number;
  flags: number;
}

export const DeviceConfigStruct = new Struct<DeviceConfigRequest>('DEVICE_CONFIG', [
  { name: 'rid', type: 'u16', doc: 'requester id of a device added with DEVICE_ADD' },
  reserved(2),
  { name: 'flags', type: 'u32', doc: 'bit 0 PRI_ENABLE, bit 1 ATS_ENABLE (each needs the matching DEVICE_ADD capability)', mask: DEVICE_CONFIG_FLAG_MASK },
  reserved(8),
]);

export const DEVICE_CONFIG = message<DeviceConfigRequest, void>({
  name: 'DEVICE_CONFIG', code: VsvaRequest.DEVICE_CONFIG, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DeviceConfigStruct),
  reply: EMPTY,
  doc: "Set a device's runtime enables (PRI, ATS).",
});
