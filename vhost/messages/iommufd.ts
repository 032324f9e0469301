/**
 * The iommufd message family (docs/protocol.md §13): Linux iommufd's ioctls
 * (include/uapi/linux/iommufd.h) as front-end requests of the main channel, codes 0x200–0x2ff,
 * gated by ProtocolFeature.VSVA_IOMMUFD. A VM chooses this uAPI at VM_SETUP
 * (VM_SETUP_UAPI_IOMMUFD); requests of this family sent by a VM of the VFIO SVA uAPI are
 * EOPNOTSUPP.
 *
 * What the ioctls pass by user pointer travels inline: HWPT_ALLOC's driver data and
 * HWPT_INVALIDATE's entry array follow their header as raw bytes (data_len, entry_len ×
 * entry_num), so that the back-end applies iommufd's own rules to them (short → EINVAL, longer
 * with non-zero trailing bytes → E2BIG, as copy_struct_from_user). The protocol checks only its
 * envelope: sizes (EINVAL), its own reserved bytes (EOPNOTSUPP) and its array bounds (EINVAL).
 * Flags, IDs and types are passed through unchecked and answered by the back-end with iommufd's
 * errnos.
 *
 * The file descriptor of a fault queue (IOMMU_FAULT_QUEUE_ALLOC's out_fault_fd) becomes two
 * requests: FAULT_READ (read(): whole groups of `struct iommu_hwpt_pgfault`) and FAULT_RESPOND
 * (write() of one `struct iommu_hwpt_page_response`).
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message } from './codec.js';
import { HeaderArrayCodec, HeaderBytesCodec } from './header-codecs.js';

/** Front-end request codes of the family (a range of its own, after the vSVA range 0x100–0x1ff). */
export const IommufdRequest = {
  IOMMUFD_DESTROY: 0x200,
  IOMMUFD_IOAS_ALLOC: 0x201,
  IOMMUFD_IOAS_ALLOW_IOVAS: 0x202,
  IOMMUFD_IOAS_COPY: 0x203,
  IOMMUFD_IOAS_IOVA_RANGES: 0x204,
  IOMMUFD_IOAS_MAP: 0x205,
  IOMMUFD_IOAS_UNMAP: 0x206,
  IOMMUFD_DEVICE_BIND: 0x207,
  IOMMUFD_DEVICE_UNBIND: 0x208,
  IOMMUFD_DEVICE_ATTACH: 0x209,
  IOMMUFD_DEVICE_REPLACE: 0x20a,
  IOMMUFD_DEVICE_DETACH: 0x20b,
  IOMMUFD_HWPT_ALLOC: 0x20c,
  IOMMUFD_GET_HW_INFO: 0x20d,
  IOMMUFD_HWPT_INVALIDATE: 0x20e,
  IOMMUFD_FAULT_QUEUE_ALLOC: 0x20f,
  IOMMUFD_FAULT_READ: 0x210,
  IOMMUFD_FAULT_RESPOND: 0x211,
} as const;

// ---- uAPI constants (include/uapi/linux/iommufd.h) ------------------------------------------------

/** enum iommufd_ioas_map_flags. */
export const IOMMU_IOAS_MAP = { FIXED_IOVA: 1 << 0, WRITEABLE: 1 << 1, READABLE: 1 << 2 } as const;
/** enum iommufd_hwpt_alloc_flags. */
export const IOMMU_HWPT_ALLOC = { NEST_PARENT: 1 << 0, DIRTY_TRACKING: 1 << 1, FAULT_ID_VALID: 1 << 2, PASID: 1 << 3 } as const;
/** enum iommu_hwpt_data_type. */
export const IOMMU_HWPT_DATA = { NONE: 0, VTD_S1: 1, ARM_SMMUV3: 2 } as const;
/** enum iommu_hwpt_vtd_s1_flags. */
export const IOMMU_VTD_S1 = { SRE: 1n << 0n, EAFE: 1n << 1n, WPE: 1n << 2n } as const;
/** enum iommu_hwpt_invalidate_data_type. */
export const IOMMU_HWPT_INVALIDATE_DATA = { VTD_S1: 0, ARM_SMMUV3: 1 } as const;
/** enum iommu_hwpt_vtd_s1_invalidate_flags. */
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0;
/** enum iommu_hw_info_type. */
export const IOMMU_HW_INFO_TYPE = { NONE: 0, INTEL_VTD: 1, ARM_SMMUV3: 2 } as const;
/** enum iommufd_hw_capabilities. */
export const IOMMU_HW_CAP = { DIRTY_TRACKING: 1n << 0n, PCI_PASID_EXEC: 1n << 1n, PCI_PASID_PRIV: 1n << 2n } as const;
/** enum iommu_hwpt_pgfault_flags / _perm, enum iommufd_page_response_code. */
export const IOMMU_PGFAULT_FLAGS = { PASID_VALID: 1 << 0, LAST_PAGE: 1 << 1 } as const;
export const IOMMU_PGFAULT_PERM = { READ: 1 << 0, WRITE: 1 << 1, EXEC: 1 << 2, PRIV: 1 << 3 } as const;
export const IOMMUFD_PAGE_RESP = { SUCCESS: 0, INVALID: 1 } as const;

/** The vsva device-attach flags (VFIO_DEVICE_ATTACH_IOMMUFD_PT with a PASID, plus the global-PASID choice). */
export const IOMMUFD_ATTACH = {
  /** Attach RID+pasid instead of the RID. */
  PASID: 1 << 0,
  /** The PASID was allocated with PASID_ALLOC from the VM's IOASID set (ENQCMD / SIOV ADI). */
  GLOBAL_PASID: 1 << 1,
} as const;
/** The vsva device-bind capability bits. */
export const IOMMUFD_DEVICE_CAP = { ATS: 1 << 0, PRI: 1 << 1 } as const;

/** Array bounds of the envelope. */
export const IOMMUFD_MAX_IOVA_RANGES = 64;
export const IOMMUFD_MAX_HWPT_DATA = 256;
export const IOMMUFD_MAX_INV_ENTRIES = 1024;
export const IOMMUFD_MAX_INV_ENTRY_LEN = 256;
export const IOMMUFD_MAX_FAULT_RECORDS = 256;

// ---- driver data structs (carried as raw bytes; the back-end decodes them) -------------------------

/** struct iommu_hwpt_vtd_s1 (24 bytes). */
export interface HwptVtdS1 {
  flags: bigint;
  pgtbl_addr: bigint;
  addr_width: number;
  __reserved: number;
}
export const HwptVtdS1Struct = new Struct<HwptVtdS1>('iommu_hwpt_vtd_s1', [
  { name: 'flags', type: 'u64', doc: 'bit 0 SRE, 1 EAFE, 2 WPE' },
  { name: 'pgtbl_addr', type: 'u64', doc: 'guest first-level page-table root (GPA), 4 KiB aligned' },
  { name: 'addr_width', type: 'u32', doc: 'first-level input width: 48 (4-level) or 57 (5-level)' },
  { name: '__reserved', type: 'u32', doc: 'must be 0' },
]);

/** struct iommu_hwpt_vtd_s1_invalidate (24 bytes). */
export interface VtdS1Invalidate {
  addr: bigint;
  npages: bigint;
  flags: number;
  __reserved: number;
}
export const VtdS1InvalidateStruct = new Struct<VtdS1Invalidate>('iommu_hwpt_vtd_s1_invalidate', [
  { name: 'addr', type: 'u64', doc: 'first address, 4 KiB aligned (0 with npages U64_MAX: everything)' },
  { name: 'npages', type: 'u64', doc: 'number of 4 KiB pages (U64_MAX: everything)' },
  { name: 'flags', type: 'u32', doc: 'bit 0 LEAF: only leaf entries changed' },
  { name: '__reserved', type: 'u32', doc: 'must be 0' },
]);

/** The bytes of `v` in `s`'s layout (for HWPT_ALLOC data and HWPT_INVALIDATE entries). */
export function structBytes<T extends object>(s: Struct<T>, values: readonly T[]): Uint8Array {
  const buf = Buffer.alloc(s.size * values.length);
  values.forEach((v, i) => s.encodeInto(buf, i * s.size, v));
  return new Uint8Array(buf);
}

// ---- codecs -------------------------------------------------------------------------------------

function fixed<T extends object>(s: Struct<T>): FixedCodec<T> {
  return new FixedCodec(s);
}

const F = ProtocolFeature.VSVA | ProtocolFeature.VSVA_IOMMUFD;

// ---- DESTROY, IOAS --------------------------------------------------------------------------------

export interface IommufdIdRequest {
  id: number;
}
export const IommufdDestroyStruct = new Struct<IommufdIdRequest>('IOMMUFD_DESTROY', [
  { name: 'id', type: 'u32', doc: 'object ID' },
  reserved(4),
]);
export const IOMMUFD_DESTROY = message<IommufdIdRequest, void>({
  name: 'IOMMUFD_DESTROY', code: IommufdRequest.IOMMUFD_DESTROY, replyKind: 'status', feature: F,
  request: fixed(IommufdDestroyStruct), reply: EMPTY,
  doc: 'IOMMU_DESTROY: destroy an IOAS, HWPT or fault queue (EBUSY while in use).',
});

export interface IommufdFlagsRequest {
  flags: number;
}
export interface IommufdIdReply {
  out_id: number;
}
export const IommufdIoasAllocStruct = new Struct<IommufdFlagsRequest>('IOMMUFD_IOAS_ALLOC', [
  { name: 'flags', type: 'u32', doc: 'must be 0 (EOPNOTSUPP)' },
  reserved(4),
]);
export const IommufdIdReplyStruct = new Struct<IommufdIdReply>('IOMMUFD id reply', [
  { name: 'out_id', type: 'u32', doc: 'ID of the new object' },
  reserved(4),
]);
export const IOMMUFD_IOAS_ALLOC = message<IommufdFlagsRequest, IommufdIdReply>({
  name: 'IOMMUFD_IOAS_ALLOC', code: IommufdRequest.IOMMUFD_IOAS_ALLOC, replyKind: 'status', feature: F,
  request: fixed(IommufdIoasAllocStruct), reply: fixed(IommufdIdReplyStruct),
  doc: 'IOMMU_IOAS_ALLOC: a new, empty IOAS.',
});

export interface IovaRange {
  start: bigint;
  last: bigint;
}
export const IovaRangeStruct = new Struct<IovaRange>('iommu_iova_range', [
  { name: 'start', type: 'u64', doc: 'first IOVA' },
  { name: 'last', type: 'u64', doc: 'last IOVA (inclusive)' },
]);

export interface IoasAllowIovasHeader {
  ioas_id: number;
  count: number;
}
export const IommufdAllowIovasStruct = new Struct<IoasAllowIovasHeader>('IOMMUFD_IOAS_ALLOW_IOVAS', [
  { name: 'ioas_id', type: 'u32', doc: 'IOAS ID' },
  { name: 'count', type: 'u32', doc: `number of ranges that follow (0–${IOMMUFD_MAX_IOVA_RANGES}; 0 removes the restriction)` },
]);
export const IOMMUFD_IOAS_ALLOW_IOVAS = message<IoasAllowIovasHeader & { items: IovaRange[] }, void>({
  name: 'IOMMUFD_IOAS_ALLOW_IOVAS', code: IommufdRequest.IOMMUFD_IOAS_ALLOW_IOVAS, replyKind: 'status', feature: F,
  request: new HeaderArrayCodec(IommufdAllowIovasStruct, IovaRangeStruct, IOMMUFD_MAX_IOVA_RANGES), reply: EMPTY,
  doc: 'IOMMU_IOAS_ALLOW_IOVAS: restrict automatic IOVA allocation to these ranges.',
});

export interface IoasCopyRequest {
  flags: number;
  dst_ioas_id: number;
  src_ioas_id: number;
  length: bigint;
  dst_iova: bigint;
  src_iova: bigint;
}
export interface IovaReply {
  iova: bigint;
}
export const IommufdIoasCopyStruct = new Struct<IoasCopyRequest>('IOMMUFD_IOAS_COPY', [
  { name: 'flags', type: 'u32', doc: 'bit 0 FIXED_IOVA, 1 WRITEABLE, 2 READABLE' },
  { name: 'dst_ioas_id', type: 'u32', doc: 'destination IOAS' },
  { name: 'src_ioas_id', type: 'u32', doc: 'source IOAS' },
  reserved(4),
  { name: 'length', type: 'u64', doc: 'bytes to copy (4 KiB multiple)' },
  { name: 'dst_iova', type: 'u64', doc: 'destination IOVA (with FIXED_IOVA)' },
  { name: 'src_iova', type: 'u64', doc: 'source IOVA: must cover whole mapped areas' },
]);
export const IommufdIovaReplyStruct = new Struct<IovaReply>('IOMMUFD iova reply', [
  { name: 'iova', type: 'u64', doc: 'the IOVA used' },
]);
export const IOMMUFD_IOAS_COPY = message<IoasCopyRequest, IovaReply>({
  name: 'IOMMUFD_IOAS_COPY', code: IommufdRequest.IOMMUFD_IOAS_COPY, replyKind: 'status', feature: F,
  request: fixed(IommufdIoasCopyStruct), reply: fixed(IommufdIovaReplyStruct),
  doc: 'IOMMU_IOAS_COPY: map in dst what [src_iova, +length) maps in src.',
});

export interface IoasIovaRangesReplyHeader {
  count: number;
  out_iova_alignment: bigint;
}
export const IommufdIoasIdStruct = new Struct<{ ioas_id: number }>('IOMMUFD_IOAS_IOVA_RANGES', [
  { name: 'ioas_id', type: 'u32', doc: 'IOAS ID' },
  reserved(4),
]);
export const IommufdIovaRangesReplyStruct = new Struct<IoasIovaRangesReplyHeader>('IOMMUFD_IOAS_IOVA_RANGES reply', [
  { name: 'count', type: 'u32', doc: `number of ranges that follow (at most ${IOMMUFD_MAX_IOVA_RANGES})` },
  reserved(4),
  { name: 'out_iova_alignment', type: 'u64', doc: 'required IOVA alignment (4096)' },
]);
export const IOMMUFD_IOAS_IOVA_RANGES = message<{ ioas_id: number }, IoasIovaRangesReplyHeader & { items: IovaRange[] }>({
  name: 'IOMMUFD_IOAS_IOVA_RANGES', code: IommufdRequest.IOMMUFD_IOAS_IOVA_RANGES, replyKind: 'status', feature: F,
  request: fixed(IommufdIoasIdStruct), reply: new HeaderArrayCodec(IommufdIovaRangesReplyStruct, IovaRangeStruct, IOMMUFD_MAX_IOVA_RANGES),
  doc: 'IOMMU_IOAS_IOVA_RANGES: the usable IOVA ranges of an IOAS.',
});

export interface IoasMapRequest {
  ioas_id: number;
  flags: number;
  user_va: bigint;
  length: bigint;
  iova: bigint;
}
export const IommufdIoasMapStruct = new Struct<IoasMapRequest>('IOMMUFD_IOAS_MAP', [
  { name: 'ioas_id', type: 'u32', doc: 'IOAS ID' },
  { name: 'flags', type: 'u32', doc: 'bit 0 FIXED_IOVA, 1 WRITEABLE, 2 READABLE' },
  { name: 'user_va', type: 'u64', doc: "the memory: a guest-physical address of the VM's memory table" },
  { name: 'length', type: 'u64', doc: 'bytes (4 KiB multiple, non-zero)' },
  { name: 'iova', type: 'u64', doc: 'IOVA with FIXED_IOVA; else ignored (the back-end picks one)' },
]);
export const IOMMUFD_IOAS_MAP = message<IoasMapRequest, IovaReply>({
  name: 'IOMMUFD_IOAS_MAP', code: IommufdRequest.IOMMUFD_IOAS_MAP, replyKind: 'status', feature: F,
  request: fixed(IommufdIoasMapStruct), reply: fixed(IommufdIovaReplyStruct),
  doc: 'IOMMU_IOAS_MAP: map guest memory at an IOVA of an IOAS (and of every paging HWPT built from it).',
});

export interface IoasUnmapRequest {
  ioas_id: number;
  iova: bigint;
  length: bigint;
}
export const IommufdIoasUnmapStruct = new Struct<IoasUnmapRequest>('IOMMUFD_IOAS_UNMAP', [
  { name: 'ioas_id', type: 'u32', doc: 'IOAS ID' },
  reserved(4),
  { name: 'iova', type: 'u64', doc: 'first IOVA (0 with length U64_MAX: everything)' },
  { name: 'length', type: 'u64', doc: 'bytes; must cover whole areas' },
]);
export const IommufdLengthReplyStruct = new Struct<{ length: bigint }>('IOMMUFD_IOAS_UNMAP reply', [
  { name: 'length', type: 'u64', doc: 'bytes unmapped' },
]);
export const IOMMUFD_IOAS_UNMAP = message<IoasUnmapRequest, { length: bigint }>({
  name: 'IOMMUFD_IOAS_UNMAP', code: IommufdRequest.IOMMUFD_IOAS_UNMAP, replyKind: 'status', feature: F,
  request: fixed(IommufdIoasUnmapStruct), reply: fixed(IommufdLengthReplyStruct),
  doc: 'IOMMU_IOAS_UNMAP: unmap whole areas inside a range.',
});

// ---- devices -------------------------------------------------------------------------------------

export interface DeviceBindRequest {
  rid: number;
  pasid_width: number;
  caps: number;
}
export const IommufdDeviceBindStruct = new Struct<DeviceBindRequest>('IOMMUFD_DEVICE_BIND', [
  { name: 'rid', type: 'u16', doc: 'guest requester id (bus << 8 | devfn)' },
  { name: 'pasid_width', type: 'u8', doc: 'PASID capability width in bits, 0–20 (0: no PASID)' },
  reserved(1),
  { name: 'caps', type: 'u32', doc: 'bit 0 ATS, 1 PRI' },
]);
export const IOMMUFD_DEVICE_BIND = message<DeviceBindRequest, IommufdIdReply>({
  name: 'IOMMUFD_DEVICE_BIND', code: IommufdRequest.IOMMUFD_DEVICE_BIND, replyKind: 'status', feature: F,
  request: fixed(IommufdDeviceBindStruct), reply: fixed(IommufdIdReplyStruct),
  doc: 'VFIO_DEVICE_BIND_IOMMUFD: assign a device to the VM and bind it; out_id is its dev_id. DMA is blocked until attached.',
});

export const IommufdDeviceUnbindStruct = new Struct<IommufdIdRequest>('IOMMUFD_DEVICE_UNBIND', [
  { name: 'id', type: 'u32', doc: 'dev_id' },
  reserved(4),
]);
export const IOMMUFD_DEVICE_UNBIND = message<IommufdIdRequest, void>({
  name: 'IOMMUFD_DEVICE_UNBIND', code: IommufdRequest.IOMMUFD_DEVICE_UNBIND, replyKind: 'status', feature: F,
  request: fixed(IommufdDeviceUnbindStruct), reply: EMPTY,
  doc: 'Close of the VFIO device: unbind a device with no attachment left (EBUSY otherwise).',
});

export interface DeviceAttachRequest {
  dev_id: number;
  flags: number;
  pasid: number;
  pt_id: number;
}
function attachStruct(name: string): Struct<DeviceAttachRequest> {
  return new Struct<DeviceAttachRequest>(name, [
    { name: 'dev_id', type: 'u32', doc: 'dev_id' },
    { name: 'flags', type: 'u32', doc: 'bit 0 PASID, 1 GLOBAL_PASID' },
    { name: 'pasid', type: 'u32', doc: 'PASID (with PASID), else 0' },
    { name: 'pt_id', type: 'u32', doc: 'IOAS or HWPT ID (DETACH: 0)' },
  ]);
}
export const IommufdDeviceAttachStruct = attachStruct('IOMMUFD_DEVICE_ATTACH');
export const IommufdDeviceReplaceStruct = attachStruct('IOMMUFD_DEVICE_REPLACE');
export const IommufdDeviceDetachStruct = attachStruct('IOMMUFD_DEVICE_DETACH');
export const IommufdHwptIdReplyStruct = new Struct<{ hwpt_id: number }>('IOMMUFD attach reply', [
  { name: 'hwpt_id', type: 'u32', doc: 'the HWPT now attached (the automatic paging HWPT for an IOAS)' },
  reserved(4),
]);
export const IOMMUFD_DEVICE_ATTACH = message<DeviceAttachRequest, { hwpt_id: number }>({
  name: 'IOMMUFD_DEVICE_ATTACH', code: IommufdRequest.IOMMUFD_DEVICE_ATTACH, replyKind: 'status', feature: F,
  request: fixed(IommufdDeviceAttachStruct), reply: fixed(IommufdHwptIdReplyStruct),
  doc: 'VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach the RID or RID+PASID to an IOAS or HWPT.',
});
export const IOMMUFD_DEVICE_REPLACE = message<DeviceAttachRequest, { hwpt_id: number }>({
  name: 'IOMMUFD_DEVICE_REPLACE', code: IommufdRequest.IOMMUFD_DEVICE_REPLACE, replyKind: 'status', feature: F,
  request: fixed(IommufdDeviceReplaceStruct), reply: fixed(IommufdHwptIdReplyStruct),
  doc: 'VFIO_DEVICE_ATTACH_IOMMUFD_PT on an attached device: replace its IOAS/HWPT.',
});
export const IOMMUFD_DEVICE_DETACH = message<DeviceAttachRequest, void>({
  name: 'IOMMUFD_DEVICE_DETACH', code: IommufdRequest.IOMMUFD_DEVICE_DETACH, replyKind: 'status', feature: F,
  request: fixed(IommufdDeviceDetachStruct), reply: EMPTY,
  doc: 'VFIO_DEVICE_DETACH_IOMMUFD_PT: detach the RID or RID+PASID (DMA blocked).',
});

// ---- HWPT, hardware info, invalidation ----------------------------------------------------------------

export interface HwptAllocHeader {
  flags: number;
  dev_id: number;
  pt_id: number;
  data_type: number;
  data_len: number;
  fault_id: number;
}
export const IommufdHwptAllocStruct = new Struct<HwptAllocHeader>('IOMMUFD_HWPT_ALLOC', [
  { name: 'flags', type: 'u32', doc: 'bit 0 NEST_PARENT, 1 DIRTY_TRACKING, 2 FAULT_ID_VALID, 3 PASID' },
  { name: 'dev_id', type: 'u32', doc: 'the device the HWPT is for' },
  { name: 'pt_id', type: 'u32', doc: 'IOAS (paging HWPT) or nest-parent paging HWPT (nested HWPT)' },
  { name: 'data_type', type: 'u32', doc: '0 NONE (paging), 1 VTD_S1 (nested)' },
  { name: 'data_len', type: 'u32', doc: `bytes of driver data that follow (0–${IOMMUFD_MAX_HWPT_DATA})` },
  { name: 'fault_id', type: 'u32', doc: 'fault queue ID (with FAULT_ID_VALID)' },
]);
export type HwptAllocRequest = HwptAllocHeader & { data: Uint8Array };
export const IOMMUFD_HWPT_ALLOC = message<HwptAllocRequest, IommufdIdReply>({
  name: 'IOMMUFD_HWPT_ALLOC', code: IommufdRequest.IOMMUFD_HWPT_ALLOC, replyKind: 'status', feature: F,
  request: new HeaderBytesCodec(IommufdHwptAllocStruct, (h) => h.data_len, IOMMUFD_MAX_HWPT_DATA), reply: fixed(IommufdIdReplyStruct),
  doc: 'IOMMU_HWPT_ALLOC: a paging HWPT from an IOAS, or a nested HWPT (VT-d stage-1) on a nest parent.',
});

export interface HwInfoRequest {
  dev_id: number;
  flags: number;
}
export interface HwInfoReply {
  out_data_type: number;
  vtd_flags: number;
  out_capabilities: bigint;
  cap_reg: bigint;
  ecap_reg: bigint;
  out_max_pasid_log2: number;
}
export const IommufdGetHwInfoStruct = new Struct<HwInfoRequest>('IOMMUFD_GET_HW_INFO', [
  { name: 'dev_id', type: 'u32', doc: 'dev_id' },
  { name: 'flags', type: 'u32', doc: 'must be 0 (EOPNOTSUPP)' },
]);
export const IommufdHwInfoReplyStruct = new Struct<HwInfoReply>('IOMMUFD_GET_HW_INFO reply', [
  { name: 'out_data_type', type: 'u32', doc: '1 INTEL_VTD' },
  { name: 'vtd_flags', type: 'u32', doc: 'iommu_hw_info_vtd.flags (0: no errata)' },
  { name: 'out_capabilities', type: 'u64', doc: 'bit 0 DIRTY_TRACKING, 1 PCI_PASID_EXEC, 2 PCI_PASID_PRIV' },
  { name: 'cap_reg', type: 'u64', doc: 'VT-d CAP_REG of the host IOMMU' },
  { name: 'ecap_reg', type: 'u64', doc: 'VT-d ECAP_REG of the host IOMMU' },
  { name: 'out_max_pasid_log2', type: 'u8', doc: "the device's PASID width (0: no PASID)" },
  reserved(7),
]);
export const IOMMUFD_GET_HW_INFO = message<HwInfoRequest, HwInfoReply>({
  name: 'IOMMUFD_GET_HW_INFO', code: IommufdRequest.IOMMUFD_GET_HW_INFO, replyKind: 'status', feature: F,
  request: fixed(IommufdGetHwInfoStruct), reply: fixed(IommufdHwInfoReplyStruct),
  doc: 'IOMMU_GET_HW_INFO: the VT-d CAP/ECAP behind a device (struct iommu_hw_info_vtd).',
});

export interface HwptInvalidateHeader {
  hwpt_id: number;
  data_type: number;
  entry_len: number;
  entry_num: number;
}
export const IommufdHwptInvalidateStruct = new Struct<HwptInvalidateHeader>('IOMMUFD_HWPT_INVALIDATE', [
  { name: 'hwpt_id', type: 'u32', doc: 'nested HWPT ID' },
  { name: 'data_type', type: 'u32', doc: '0 VTD_S1' },
  { name: 'entry_len', type: 'u32', doc: `bytes per entry (≤ ${IOMMUFD_MAX_INV_ENTRY_LEN}; ignored when entry_num is 0)` },
  { name: 'entry_num', type: 'u32', doc: `entries that follow (0–${IOMMUFD_MAX_INV_ENTRIES}); 0 only checks data_type` },
]);
export type HwptInvalidateRequest = HwptInvalidateHeader & { data: Uint8Array };
export interface HwptInvalidateReply {
  entry_num: number;
  first_error: number;
}
export const IommufdHwptInvalidateReplyStruct = new Struct<HwptInvalidateReply>('IOMMUFD_HWPT_INVALIDATE reply', [
  { name: 'entry_num', type: 'u32', doc: 'entries handled before the first failure' },
  { name: 'first_error', type: 'i32', doc: '0, or the negative errno of entry `entry_num`' },
]);
export const IOMMUFD_HWPT_INVALIDATE = message<HwptInvalidateRequest, HwptInvalidateReply>({
  name: 'IOMMUFD_HWPT_INVALIDATE', code: IommufdRequest.IOMMUFD_HWPT_INVALIDATE, replyKind: 'status', feature: F,
  request: new HeaderBytesCodec(IommufdHwptInvalidateStruct, (h) => {
    if (h.entry_num > IOMMUFD_MAX_INV_ENTRIES) fail('EINVAL', `IOMMUFD_HWPT_INVALIDATE: ${h.entry_num} entries, at most ${IOMMUFD_MAX_INV_ENTRIES}`);
    if (h.entry_num > 0 && h.entry_len > IOMMUFD_MAX_INV_ENTRY_LEN) fail('EINVAL', `IOMMUFD_HWPT_INVALIDATE: entry_len ${h.entry_len}, at most ${IOMMUFD_MAX_INV_ENTRY_LEN}`);
    return h.entry_num === 0 ? 0 : h.entry_len * h.entry_num;
  }, IOMMUFD_MAX_INV_ENTRIES * IOMMUFD_MAX_INV_ENTRY_LEN),
  reply: new FixedCodec(IommufdHwptInvalidateReplyStruct, (v) => {
    if (v.first_error > 0 || v.first_error < -4095) fail('EINVAL', `IOMMUFD_HWPT_INVALIDATE reply: first_error ${v.first_error} is not 0 or a negative errno`);
  }),
  doc: 'IOMMU_HWPT_INVALIDATE: VT-d stage-1 invalidations of a nested HWPT, stopping at the first failing entry.',
});

// ---- fault queue -----------------------------------------------------------------------------------

export const IommufdFaultAllocStruct = new Struct<IommufdFlagsRequest>('IOMMUFD_FAULT_QUEUE_ALLOC', [
  { name: 'flags', type: 'u32', doc: 'must be 0 (EOPNOTSUPP)' },
  reserved(4),
]);
export const IOMMUFD_FAULT_QUEUE_ALLOC = message<IommufdFlagsRequest, IommufdIdReply>({
  name: 'IOMMUFD_FAULT_QUEUE_ALLOC', code: IommufdRequest.IOMMUFD_FAULT_QUEUE_ALLOC, replyKind: 'status', feature: F,
  request: fixed(IommufdFaultAllocStruct), reply: fixed(IommufdIdReplyStruct),
  doc: 'IOMMU_FAULT_QUEUE_ALLOC: a queue for the page faults of HWPTs allocated with FAULT_ID_VALID.',
});

/** struct iommu_hwpt_pgfault (40 bytes). */
export interface HwptPgfault {
  flags: number;
  dev_id: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
  length: number;
  cookie: number;
}
export const HwptPgfaultStruct = new Struct<HwptPgfault>('iommu_hwpt_pgfault', [
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID, 1 LAST_PAGE' },
  { name: 'dev_id', type: 'u32', doc: 'dev_id of the faulting device' },
  { name: 'pasid', type: 'u32', doc: 'PASID (with PASID_VALID)' },
  { name: 'grpid', type: 'u32', doc: 'page request group index' },
  { name: 'perm', type: 'u32', doc: 'bit 0 READ, 1 WRITE, 2 EXEC, 3 PRIV' },
  reserved(4),
  { name: 'addr', type: 'u64', doc: 'faulting page address' },
  { name: 'length', type: 'u32', doc: 'bytes (4096)' },
  { name: 'cookie', type: 'u32', doc: 'the group cookie FAULT_RESPOND names' },
]);
export interface FaultReadRequest {
  fault_id: number;
  max_records: number;
}
export const IommufdFaultReadStruct = new Struct<FaultReadRequest>('IOMMUFD_FAULT_READ', [
  { name: 'fault_id', type: 'u32', doc: 'fault queue ID' },
  { name: 'max_records', type: 'u32', doc: `records wanted (0–${IOMMUFD_MAX_FAULT_RECORDS}); only whole groups are returned`, max: IOMMUFD_MAX_FAULT_RECORDS },
]);
export const IommufdFaultReadReplyStruct = new Struct<{ count: number }>('IOMMUFD_FAULT_READ reply', [
  { name: 'count', type: 'u32', doc: `records that follow (at most ${IOMMUFD_MAX_FAULT_RECORDS})` },
  reserved(4),
]);
export const IOMMUFD_FAULT_READ = message<FaultReadRequest, { count: number; items: HwptPgfault[] }>({
  name: 'IOMMUFD_FAULT_READ', code: IommufdRequest.IOMMUFD_FAULT_READ, replyKind: 'status', feature: F,
  request: fixed(IommufdFaultReadStruct), reply: new HeaderArrayCodec(IommufdFaultReadReplyStruct, HwptPgfaultStruct, IOMMUFD_MAX_FAULT_RECORDS),
  doc: 'read() of a fault queue: queued page-fault records, whole groups only.',
});

export interface FaultRespondRequest {
  fault_id: number;
  cookie: number;
  code: number;
}
export const IommufdFaultRespondStruct = new Struct<FaultRespondRequest>('IOMMUFD_FAULT_RESPOND', [
  { name: 'fault_id', type: 'u32', doc: 'fault queue ID' },
  { name: 'cookie', type: 'u32', doc: 'cookie of the group answered' },
  { name: 'code', type: 'u32', doc: '0 SUCCESS, 1 INVALID (else EINVAL)' },
  reserved(4),
]);
export const IOMMUFD_FAULT_RESPOND = message<FaultRespondRequest, void>({
  name: 'IOMMUFD_FAULT_RESPOND', code: IommufdRequest.IOMMUFD_FAULT_RESPOND, replyKind: 'status', feature: F,
  request: fixed(IommufdFaultRespondStruct), reply: EMPTY,
  doc: 'write() of struct iommu_hwpt_page_response: answer a fault group by cookie.',
});

/** Back-end → front-end request codes of the family (backend channel namespace). */
export const IommufdBackendRequest = { IOMMUFD_FAULT: 0x200 } as const;

export type FaultEventMessage = { fault_id: number } & HwptPgfault;
export const IommufdFaultEventStruct = new Struct<FaultEventMessage>('IOMMUFD_FAULT', [
  { name: 'fault_id', type: 'u32', doc: 'fault queue ID' },
  reserved(4),
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID, 1 LAST_PAGE' },
  { name: 'dev_id', type: 'u32', doc: 'dev_id of the faulting device' },
  { name: 'pasid', type: 'u32', doc: 'PASID (with PASID_VALID)' },
  { name: 'grpid', type: 'u32', doc: 'page request group index' },
  { name: 'perm', type: 'u32', doc: 'bit 0 READ, 1 WRITE, 2 EXEC, 3 PRIV' },
  reserved(4, 'reserved2'),
  { name: 'addr', type: 'u64', doc: 'faulting page address' },
  { name: 'length', type: 'u32', doc: 'bytes (4096)' },
  { name: 'cookie', type: 'u32', doc: 'the group cookie FAULT_RESPOND names' },
]);
export const IOMMUFD_FAULT = message<FaultEventMessage, void>({
  name: 'IOMMUFD_FAULT', code: IommufdBackendRequest.IOMMUFD_FAULT, replyKind: 'ack', feature: ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA_IOMMUFD,
  request: fixed(IommufdFaultEventStruct), reply: EMPTY,
  doc: "A fault queue's page-fault record, pushed as the queue's fd would be read (the group counts as read).",
});

/** The family, for the catalogue. */
export const IommufdMessages = {
  IOMMUFD_DESTROY, IOMMUFD_IOAS_ALLOC, IOMMUFD_IOAS_ALLOW_IOVAS, IOMMUFD_IOAS_COPY, IOMMUFD_IOAS_IOVA_RANGES,
  IOMMUFD_IOAS_MAP, IOMMUFD_IOAS_UNMAP, IOMMUFD_DEVICE_BIND, IOMMUFD_DEVICE_UNBIND, IOMMUFD_DEVICE_ATTACH,
  IOMMUFD_DEVICE_REPLACE, IOMMUFD_DEVICE_DETACH, IOMMUFD_HWPT_ALLOC, IOMMUFD_GET_HW_INFO, IOMMUFD_HWPT_INVALIDATE,
  IOMMUFD_FAULT_QUEUE_ALLOC, IOMMUFD_FAULT_READ, IOMMUFD_FAULT_RESPOND,
} as const;
