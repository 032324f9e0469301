/**
 * VM setup, the backend-channel attach, and the state snapshot (docs/protocol.md §10.2, §10.10,
 * §10.9).
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message, type PayloadCodec } from './codec.js';
import { SESSION_TOKEN_SIZE, VsvaRequest } from './codes.js';

/** Bytes of the VM name field (at most 63 bytes of UTF-8 text). */
const VM_NAME_SIZE = 64;

/** VM_SETUP flags bits 1:0: which vIOMMU the guest models (informational for the back-end). */
export const VM_SETUP_VIOMMU_MASK = 0x3;
export const VmViommu = { UNSPECIFIED: 0, VTD: 1, VIRTIO: 2 } as const;
/**
 * VM_SETUP flags bit 2: the VM's host uAPI is iommufd (the IOMMUFD_* family, docs/protocol.md
 * §13; needs VSVA_IOMMUFD); clear: the VFIO SVA uAPI, as every older peer sends it.
 */
export const VM_SETUP_UAPI_IOMMUFD = 0x4;
/** Every VM_SETUP flag bit. */
export const VM_SETUP_FLAGS_MASK = VM_SETUP_VIOMMU_MASK | VM_SETUP_UAPI_IOMMUFD;
/** VM_SETUP reply flags. */
export const VM_SETUP_REPLY_RESUMED = 0x1;

export interface VmSetupRequest {
  name: string;
  pasid_quota: number;
  /** VmViommu value in bits 1:0; VM_SETUP_UAPI_IOMMUFD in bit 2. */
  flags: number;
  /** All zero: new session; otherwise the token of a session to resume. */
  session_token: Uint8Array;
}

export interface VmSetupReply {
  vm_id: number;
  /** VM_SETUP_REPLY_RESUMED when an earlier session was resumed. */
  flags: number;
  session_token: Uint8Array;
}

export const VmSetupRequestStruct = new Struct<VmSetupRequest>('VM_SETUP', [
  { name: 'name', type: { kind: 'cstr', size: VM_NAME_SIZE }, doc: 'VM name, non-empty' },
  { name: 'pasid_quota', type: 'u32', doc: "quota of the VM's IOASID set (0: the host's default quota)" },
  { name: 'flags', type: 'u32', doc: 'bits 1:0 vIOMMU kind: 0 unspecified, 1 VT-d, 2 virtio-iommu (3 is invalid); bit 2 UAPI_IOMMUFD', mask: VM_SETUP_FLAGS_MASK },
  { name: 'session_token', type: { kind: 'bytes', size: SESSION_TOKEN_SIZE }, doc: 'all zero: new session; else resume that session' },
  reserved(8),
]);

export const VmSetupReplyStruct = new Struct<VmSetupReply>('VM_SETUP reply', [
  { name: 'vm_id', type: 'u32', doc: 'VM id assigned by the back-end' },
  { name: 'flags', type: 'u32', doc: 'bit 0 RESUMED: an earlier session was resumed', mask: VM_SETUP_REPLY_RESUMED },
  { name: 'session_token', type: { kind: 'bytes', size: SESSION_TOKEN_SIZE }, doc: 'token for BACKEND_ATTACH and for resuming after a reconnect; never all zero' },
  reserved(8),
]);

export function isZeroToken(t: Uint8Array): boolean {
  for (const b of t) if (b !== 0) return false;
  return true;
}

export const VM_SETUP = message<VmSetupRequest, VmSetupReply>({
  name: 'VM_SETUP', code: VsvaRequest.VM_SETUP, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(VmSetupRequestStruct, (v) => {
    if (v.name.length === 0) fail('EINVAL', 'VM_SETUP: name is empty');
    if ((v.flags & VM_SETUP_VIOMMU_MASK) === 3) fail('EINVAL', 'VM_SETUP: vIOMMU kind 3 is not defined');
  }),
  reply: new FixedCodec(VmSetupReplyStruct, (v) => {
    if (isZeroToken(v.session_token)) fail('EINVAL', 'VM_SETUP reply: session token is all zero');
  }),
  doc: 'Create (or resume) the VM this connection belongs to.',
});

export interface BackendAttachRequest {
  session_token: Uint8Array;
}

export const BackendAttachStruct = new Struct<BackendAttachRequest>('BACKEND_ATTACH', [
  { name: 'session_token', type: { kind: 'bytes', size: SESSION_TOKEN_SIZE }, doc: 'the token VM_SETUP returned on the main connection' },
  reserved(8),
]);

export const BACKEND_ATTACH = message<BackendAttachRequest, void>({
  name: 'BACKEND_ATTACH', code: VsvaRequest.BACKEND_ATTACH, replyKind: 'status', feature: 0n,
  request: new FixedCodec(BackendAttachStruct, (v) => {
    if (isZeroToken(v.session_token)) fail('EINVAL', 'BACKEND_ATTACH: session token is all zero');
  }),
  reply: EMPTY,
  doc: 'Turn this connection into the backend channel of the session that owns the token.',
});

export interface StateReply {
  /** The host snapshot as JSON text. */
  json: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** length u32, reserved u32, then `length` bytes of UTF-8 JSON. */
const StateReplyCodec: PayloadCodec<StateReply> = {
  sizeOf: (v) => 8 + Buffer.byteLength(v.json, 'utf8'),
  encodeInto(buf, off, v) {
    const n = buf.write(v.json, off + 8, 'utf8');
    buf.writeUInt32LE(n, off);
    buf.writeUInt32LE(0, off + 4);
  },
  decode(p) {
    if (p.length < 8) fail('EINVAL', `GET_STATE reply: ${p.length} bytes, shorter than its 8-byte header`);
    const n = p.readUInt32LE(0);
    if (p.readUInt32LE(4) !== 0) fail('EOPNOTSUPP', 'GET_STATE reply: reserved field is not zero');
    if (p.length !== 8 + n) fail('EINVAL', `GET_STATE reply: ${p.length} bytes, expected ${8 + n} for a ${n}-byte document`);
    try {
      return { json: utf8.decode(p.subarray(8)) };
    } catch {
      fail('EINVAL', 'GET_STATE reply: document is not valid UTF-8');
    }
  },
};

/** Most VMs one GET_STATE page may ask for (docs/protocol.md §10.9). */
export const GET_STATE_MAX_PAGE_VMS = 64;

/** GET_STATE with a payload: one page of the snapshot, VMs by id from `cursor`. */
export interface GetStatePageRequest {
  /** First VM id of the page (0: from the first VM); a page's `next` is the next page's cursor. */
  cursor: number;
  /** Most VMs in the page, 1–GET_STATE_MAX_PAGE_VMS. */
  max_vms: number;
  /**
   * The host's monitor token (docs/protocol.md §10.9): with it the page walks every VM of the
   * host; without it, only the VM of this connection. Sent as the 72-byte form.
   */
  monitor_token?: string;
}

export const GetStatePageStruct = new Struct<GetStatePageRequest>('GET_STATE page', [
  { name: 'cursor', type: 'u32', doc: 'first VM id of the page (0: from the first VM; else the `next` of the previous page)' },
  { name: 'max_vms', type: 'u32', doc: `most VMs in the page (1–${GET_STATE_MAX_PAGE_VMS})`, max: GET_STATE_MAX_PAGE_VMS },
]);

/** Bytes of the monitor token field (at most 63 bytes of text). */
const MONITOR_TOKEN_FIELD_SIZE = 64;

/** GET_STATE page request that presents the host's monitor token: the whole-host view. */
export const GetStateMonitorPageStruct = new Struct<Required<GetStatePageRequest>>('GET_STATE monitor page', [
  { name: 'cursor', type: 'u32', doc: 'as in the 8-byte page request' },
  { name: 'max_vms', type: 'u32', doc: `as in the 8-byte page request (1–${GET_STATE_MAX_PAGE_VMS})`, max: GET_STATE_MAX_PAGE_VMS },
  { name: 'monitor_token', type: { kind: 'cstr', size: MONITOR_TOKEN_FIELD_SIZE }, doc: "the host's monitor token (16–63 printable ASCII characters)" },
]);

/** Monitor token lengths (printable ASCII without spaces, as the dashboard token: host/monitor/access.ts). */
export const MONITOR_TOKEN_MIN_LENGTH = 16;
export const MONITOR_TOKEN_MAX_LENGTH = MONITOR_TOKEN_FIELD_SIZE - 1;

/** EINVAL unless `token` is 16–63 printable ASCII characters without spaces. */
export function checkMonitorToken(token: string): void {
  if (token.length < MONITOR_TOKEN_MIN_LENGTH || token.length > MONITOR_TOKEN_MAX_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
    fail('EINVAL', `monitor token must be ${MONITOR_TOKEN_MIN_LENGTH}..${MONITOR_TOKEN_MAX_LENGTH} printable ASCII characters without spaces`);
  }
}

const GetStatePageCodec = new FixedCodec(GetStatePageStruct, (v) => {
  if (v.max_vms < 1) fail('EINVAL', 'GET_STATE: max_vms is 0');
});

const GetStateMonitorPageCodec = new FixedCodec(GetStateMonitorPageStruct, (v) => {
  if (v.max_vms < 1) fail('EINVAL', 'GET_STATE: max_vms is 0');
  checkMonitorToken(v.monitor_token);
});

/**
 * Empty payload: the whole snapshot (of what the connection may see); an 8-byte
 * GetStatePageStruct: one page of it; a 72-byte GetStateMonitorPageStruct: one page of the
 * whole host, for the holder of the monitor token.
 */
const GetStateRequestCodec: PayloadCodec<GetStatePageRequest | void> = {
  sizeOf: (v) => (v === undefined ? 0 : v.monitor_token === undefined ? GetStatePageCodec.sizeOf() : GetStateMonitorPageCodec.sizeOf()),
  encodeInto(buf, off, v) {
    if (v === undefined) return;
    if (v.monitor_token === undefined) GetStatePageCodec.encodeInto(buf, off, v);
    else GetStateMonitorPageCodec.encodeInto(buf, off, v as Required<GetStatePageRequest>);
  },
  decode(p) {
    if (p.length === 0) return undefined;
    if (p.length === GetStateMonitorPageStruct.size) return GetStateMonitorPageCodec.decode(p);
    if (p.length !== GetStatePageStruct.size) fail('EINVAL', `GET_STATE: payload is ${p.length} bytes, expected 0, ${GetStatePageStruct.size} or ${GetStateMonitorPageStruct.size}`);
    const v = GetStatePageCodec.decode(p);
    if (v.max_vms < 1) fail('EINVAL', 'GET_STATE: max_vms is 0');
    return v;
  },
};

export const GET_STATE = message<GetStatePageRequest | void, StateReply>({
  name: 'GET_STATE', code: VsvaRequest.GET_STATE, replyKind: 'status', feature: ProtocolFeature.VSVA | ProtocolFeature.VSVA_STATE,
  request: GetStateRequestCodec, reply: StateReplyCodec,
  doc: "The state snapshot (a HostSnapshot, docs/protocol.md §10.9) as a JSON document: this connection's VM, or the whole host with the monitor token; with a page request, the VMs of one page.",
});
