/**
 * Devices, domains and attachments (docs/protocol.md §10.3). The topology is the Linux IOMMU
 * core's as iommufd has it (drivers/iommu/iommufd/): kernel-managed (second-level) domains with container-local ids, domain 0 being the VM's
 * default GPA domain; a RID, or a RID+PASID, is attached to a domain.
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message } from './codec.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { VsvaRequest } from './codes.js';
import { IOMMU_PASID_FORMAT_INTEL_VTD } from './pasid.js';

export const DeviceKind = { PF: 0, ADI: 1 } as const;

/** DEVICE_ADD capability bits. */
export const DeviceCap = {
  PASID: 1 << 0,
  ATS: 1 << 1,
  PRI: 1 << 2,
  /** PASID capability: Execute Permission Supported. */
  PASID_EXEC: 1 << 3,
  /** PASID capability: Privileged Mode Supported. */
  PASID_PRIV: 1 << 4,
} as const;
const DEVICE_CAP_MASK = 0x1f;

export interface DeviceAddRequest {
  /** PCI requester id: bus << 8 | devfn. */
  rid: number;
  kind: number;
  /** PASID width in bits (1–20) when DeviceCap.PASID is set, else 0. */
  pasid_width: number;
  caps: number;
}

export const DeviceAddStruct = new Struct<DeviceAddRequest>('DEVICE_ADD', [
  { name: 'rid', type: 'u16', doc: 'requester id, bus << 8 | devfn' },
  { name: 'kind', type: 'u8', doc: '0 pf (PASID used as programmed), 1 adi (SIOV interface, PASID translated)', values: [DeviceKind.PF, DeviceKind.ADI] },
  { name: 'pasid_width', type: 'u8', doc: 'PASID width in bits; 0 without the PASID capability', max: 20 },
  { name: 'caps', type: 'u32', doc: 'bit 0 PASID, 1 ATS, 2 PRI, 3 PASID execute permission, 4 PASID privileged mode', mask: DEVICE_CAP_MASK },
  reserved(8),
]);

export const DEVICE_ADD = message<DeviceAddRequest, void>({
  name: 'DEVICE_ADD', code: VsvaRequest.DEVICE_ADD, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DeviceAddStruct, (v) => {
    const hasPasid = (v.caps & DeviceCap.PASID) !== 0;
    if (hasPasid && v.pasid_width === 0) fail('EINVAL', 'DEVICE_ADD: PASID capability with pasid_width 0');
    if (!hasPasid && v.pasid_width !== 0) fail('EINVAL', 'DEVICE_ADD: pasid_width set without the PASID capability');
    if (!hasPasid && (v.caps & (DeviceCap.PASID_EXEC | DeviceCap.PASID_PRIV)) !== 0) fail('EINVAL', 'DEVICE_ADD: PASID execute/privileged bits without the PASID capability');
    if ((v.caps & DeviceCap.PRI) !== 0 && (v.caps & DeviceCap.ATS) === 0) fail('EINVAL', 'DEVICE_ADD: PRI requires ATS');
  }),
  reply: EMPTY,
  doc: 'Register an assigned device of this VM.',
});

export interface DomainAllocReply {
  domain: number;
}

export const DomainAllocRequestStruct = new Struct<Record<string, never>>('DOMAIN_ALLOC', [reserved(8)]);
export const DomainAllocReplyStruct = new Struct<DomainAllocReply>('DOMAIN_ALLOC reply', [
  { name: 'domain', type: 'u32', doc: 'container-local id of the new second-level domain (never 0)' },
  reserved(4),
]);

export const DOMAIN_ALLOC = message<Record<string, never>, DomainAllocReply>({
  name: 'DOMAIN_ALLOC', code: VsvaRequest.DOMAIN_ALLOC, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DomainAllocRequestStruct),
  reply: new FixedCodec(DomainAllocReplyStruct),
  doc: 'Allocate a kernel-managed (second-level) domain.',
});

export interface DomainRef {
  domain: number;
}

export const DomainFreeStruct = new Struct<DomainRef>('DOMAIN_FREE', [
  { name: 'domain', type: 'u32', doc: 'domain id from DOMAIN_ALLOC (domain 0 cannot be freed)' },
  reserved(4),
]);

export const DOMAIN_FREE = message<DomainRef, void>({
  name: 'DOMAIN_FREE', code: VsvaRequest.DOMAIN_FREE, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DomainFreeStruct), reply: EMPTY,
  doc: 'Free a domain allocated with DOMAIN_ALLOC.',
});

/** ATTACH/DETACH flags. */
export const ATTACH_PASID_VALID = 0x1;
/** Host PASID-entry PGTT for a RID+PASID attachment (VT-d: 2 second-level, 4 pass-through). */
export const AttachPgtt = { NONE: 0, SECOND_LEVEL: 2, PASS_THROUGH: 4 } as const;

export interface AttachRequest {
  rid: number;
  /** AttachPgtt: NONE without PASID_VALID; SECOND_LEVEL or PASS_THROUGH with it (ATTACH only). */
  pgtt: number;
  flags: number;
  pasid: number;
  domain: number;
}

function attachStruct(name: string): Struct<AttachRequest> {
  return new Struct<AttachRequest>(name, [
    { name: 'rid', type: 'u16', doc: 'requester id' },
    { name: 'pgtt', type: 'u8', doc: 'host PGTT for a RID+PASID attach: 2 second-level, 4 pass-through; 0 otherwise', values: [0, 2, 4] },
    reserved(1),
    { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID: attach RID+PASID rather than the RID', mask: ATTACH_PASID_VALID },
    { name: 'pasid', type: 'u32', doc: 'PASID when PASID_VALID, else 0', max: PASID_MAX },
    { name: 'domain', type: 'u32', doc: 'domain id (0: the default GPA domain)' },
  ]);
}

function checkAttach(name: string, detach: boolean) {
  return (v: AttachRequest): void => {
    const pasid = (v.flags & ATTACH_PASID_VALID) !== 0;
    if (!pasid && v.pasid !== 0) fail('EINVAL', `${name}: pasid set without PASID_VALID`);
    if (!pasid && v.pgtt !== 0) fail('EINVAL', `${name}: pgtt set without PASID_VALID`);
    if (pasid && !detach && v.pgtt === 0) fail('EINVAL', `${name}: RID+PASID attach needs pgtt 2 or 4`);
    if (detach && v.pgtt !== 0) fail('EINVAL', `${name}: pgtt must be 0`);
  };
}

export const AttachStruct = attachStruct('ATTACH');
export const DetachStruct = attachStruct('DETACH');

export const ATTACH = message<AttachRequest, void>({
  name: 'ATTACH', code: VsvaRequest.ATTACH, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(AttachStruct, checkAttach('ATTACH', false)), reply: EMPTY,
  doc: 'Attach a RID, or a RID+PASID, to a domain.',
});
export const DETACH = message<AttachRequest, void>({
  name: 'DETACH', code: VsvaRequest.DETACH, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DetachStruct, checkAttach('DETACH', true)), reply: EMPTY,
  doc: 'Detach a RID, or a RID+PASID, from a domain.',
});

/**
 * Nesting features, with the v7 numbering that still had SYSWIDE_PASID (Yi Liu, "iommu: Report
 * domain nesting info", v7, 2020).
 */
export const IOMMU_NESTING_FEAT = {
  SYSWIDE_PASID: 1 << 0,
  BIND_PGTBL: 1 << 1,
  CACHE_INVLD: 1 << 2,
  /** vsva: page responses are forwarded (PAGE_RESPONSE). */
  PAGE_RESP: 1 << 3,
} as const;
const IOMMU_NESTING_FEAT_MASK = 0xf;

export interface NestingInfo {
  format: number;
  features: number;
  /** Stage-1 output address width. */
  addr_width: number;
  pasid_bits: number;
  cap_reg: bigint;
  ecap_reg: bigint;
}

export const NestingInfoStruct = new Struct<NestingInfo>('GET_NESTING_INFO reply', [
  { name: 'format', type: 'u32', doc: 'page-table format, 1 IOMMU_PASID_FORMAT_INTEL_VTD', values: [IOMMU_PASID_FORMAT_INTEL_VTD] },
  { name: 'features', type: 'u32', doc: 'bit 0 SYSWIDE_PASID, 1 BIND_PGTBL, 2 CACHE_INVLD, 3 PAGE_RESP', mask: IOMMU_NESTING_FEAT_MASK },
  { name: 'addr_width', type: 'u16', doc: 'stage-1 output address width in bits', max: 64 },
  { name: 'pasid_bits', type: 'u16', doc: 'host PASID width in bits (0: no PASID)', max: 20 },
  reserved(4, 'flags'),
  { name: 'cap_reg', type: 'u64', doc: 'host VT-d CAP register' },
  { name: 'ecap_reg', type: 'u64', doc: 'host VT-d ECAP register' },
]);

export const GET_NESTING_INFO = message<void, NestingInfo>({
  name: 'GET_NESTING_INFO', code: VsvaRequest.GET_NESTING_INFO, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: EMPTY, reply: new FixedCodec(NestingInfoStruct),
  doc: 'What nesting the host supports (struct iommu_nesting_info of the VFIO vSVA series).',
});
