/**
 * PASID allocation and guest page-table binding (docs/protocol.md §10.5): VFIO_IOMMU_PASID_REQUEST
 * and the BIND/UNBIND_PGTBL nesting ops of the VFIO vSVA series (Yi Liu, "vfio: expose virtual
 * Shared Virtual Addressing to VMs", v1–v7, 2020), carrying `struct iommu_gpasid_bind_data`
 * (Linux include/uapi/linux/iommu.h, 5.10–5.13 layout with argsz) verbatim.
 *
 * The protocol checks only its own envelope (size, rid, reserved). The VFIO fields — argsz,
 * version, format, flags, padding, vendor flags — are passed through unchanged so that the
 * back-end's emulated container applies that series' rules and errnos (all EINVAL).
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message } from './codec.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { VsvaRequest } from './codes.js';

export interface PasidRange {
  /** Inclusive bounds. */
  min: number;
  max: number;
}

export interface PasidAllocReply {
  pasid: number;
}

export interface PasidFreeReply {
  /** How many PASIDs of the range were freed. */
  freed: number;
}

function rangeStruct(name: string): Struct<PasidRange> {
  return new Struct<PasidRange>(name, [
    { name: 'min', type: 'u32', doc: 'lowest PASID (inclusive)', max: PASID_MAX },
    { name: 'max', type: 'u32', doc: 'highest PASID (inclusive), ≥ min', max: PASID_MAX },
  ]);
}

function checkRange(name: string) {
  return (v: PasidRange): void => {
    if (v.min > v.max) fail('EINVAL', `${name}: min ${v.min} > max ${v.max}`);
  };
}

export const PasidAllocStruct = rangeStruct('PASID_ALLOC');
export const PasidFreeStruct = rangeStruct('PASID_FREE');
export const PasidAllocReplyStruct = new Struct<PasidAllocReply>('PASID_ALLOC reply', [
  { name: 'pasid', type: 'u32', doc: 'the allocated host PASID', max: PASID_MAX },
  reserved(4),
]);
export const PasidFreeReplyStruct = new Struct<PasidFreeReply>('PASID_FREE reply', [
  { name: 'freed', type: 'u32', doc: 'PASIDs freed' },
  reserved(4),
]);

export const PASID_ALLOC = message<PasidRange, PasidAllocReply>({
  name: 'PASID_ALLOC', code: VsvaRequest.PASID_ALLOC, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(PasidAllocStruct, checkRange('PASID_ALLOC')),
  reply: new FixedCodec(PasidAllocReplyStruct),
  doc: "Allocate one PASID in [min, max] from the VM's IOASID set (VFIO_IOMMU_FLAG_ALLOC_PASID).",
});
export const PASID_FREE = message<PasidRange, PasidFreeReply>({
  name: 'PASID_FREE', code: VsvaRequest.PASID_FREE, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(PasidFreeStruct, checkRange('PASID_FREE')),
  reply: new FixedCodec(PasidFreeReplyStruct),
  doc: "Free every PASID of this VM in [min, max] (VFIO_IOMMU_FLAG_FREE_PASID).",
});

/** struct iommu_gpasid_bind_data constants (include/uapi/linux/iommu.h, 5.10–5.13). */
export const IOMMU_GPASID_BIND_VERSION_1 = 1;
export const IOMMU_PASID_FORMAT_INTEL_VTD = 1;
export const IOMMU_PASID_FORMAT_LAST = 2;
export const IOMMU_SVA_GPASID_VAL = 1n << 0n;
export const IOMMU_SVA_VTD_GPASID = {
  SRE: 1n << 0n,
  EAFE: 1n << 1n,
  PCD: 1n << 2n,
  PWT: 1n << 3n,
  EMTE: 1n << 4n,
  CD: 1n << 5n,
  WPE: 1n << 6n,
} as const;
export const IOMMU_SVA_VTD_GPASID_LAST = 1n << 7n;
/** sizeof(struct iommu_gpasid_bind_data) in the 5.10+ layout. */
export const IOMMU_GPASID_BIND_DATA_SIZE = 72;

export interface GpasidBindRequest {
  /** Device the binding is for. */
  rid: number;
  argsz: number;
  version: number;
  format: number;
  addr_width: number;
  flags: bigint;
  /** Guest first-level page-table root (GPA). */
  gpgd: bigint;
  hpasid: bigint;
  gpasid: bigint;
  /** iommu_gpasid_bind_data.padding[8] as a little-endian u64; the container requires 0. */
  padding: bigint;
  vtd_flags: bigint;
  vtd_pat: number;
  vtd_emt: number;
}

function bindStruct(name: string): Struct<GpasidBindRequest> {
  return new Struct<GpasidBindRequest>(name, [
    { name: 'rid', type: 'u16', doc: 'requester id of the device' },
    reserved(6),
    { name: 'argsz', type: 'u32', doc: 'iommu_gpasid_bind_data.argsz (72)' },
    { name: 'version', type: 'u32', doc: 'IOMMU_GPASID_BIND_VERSION_1 = 1' },
    { name: 'format', type: 'u32', doc: 'IOMMU_PASID_FORMAT_INTEL_VTD = 1' },
    { name: 'addr_width', type: 'u32', doc: 'guest first-level address width (48 or 57)' },
    { name: 'flags', type: 'u64', doc: 'bit 0 IOMMU_SVA_GPASID_VAL: gpasid is valid' },
    { name: 'gpgd', type: 'u64', doc: 'guest first-level page-table root (GPA)' },
    { name: 'hpasid', type: 'u64', doc: 'host PASID' },
    { name: 'gpasid', type: 'u64', doc: 'guest PASID (with GPASID_VAL)' },
    { name: 'padding', type: 'u64', doc: 'iommu_gpasid_bind_data.padding[8] (container requires 0)' },
    { name: 'vtd_flags', type: 'u64', doc: 'vendor.vtd.flags: bit 0 SRE, 1 EAFE, 2 PCD, 3 PWT, 4 EMTE, 5 CD, 6 WPE' },
    { name: 'vtd_pat', type: 'u32', doc: 'vendor.vtd.pat: page attribute table' },
    { name: 'vtd_emt', type: 'u32', doc: 'vendor.vtd.emt: extended memory type' },
  ]);
}

export const BindGpasidStruct = bindStruct('BIND_GPASID');
export const UnbindGpasidStruct = bindStruct('UNBIND_GPASID');

export const BIND_GPASID = message<GpasidBindRequest, void>({
  name: 'BIND_GPASID', code: VsvaRequest.BIND_GPASID, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(BindGpasidStruct),
  reply: EMPTY,
  doc: "Bind a guest first-level table for hpasid nested over the VM's second level (VFIO_IOMMU_NESTING_OP_BIND_PGTBL).",
});
export const UNBIND_GPASID = message<GpasidBindRequest, void>({
  name: 'UNBIND_GPASID', code: VsvaRequest.UNBIND_GPASID, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(UnbindGpasidStruct),
  reply: EMPTY,
  doc: 'Undo BIND_GPASID (VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL; the container uses hpasid).',
});
