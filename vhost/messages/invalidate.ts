/**
 * CACHE_INVALIDATE (docs/protocol.md §5.5): an array of `struct iommu_cache_invalidate_info`
 * (5.10+ layout, reference B.1) each preceded by the RID of the device whose device-TLB is
 * meant. The reply says how many entries were handled, stopping at the first failure, as
 * iommufd's IOMMU_HWPT_INVALIDATE reports entry_num (style anchor L9).
 *
 * As with BIND_GPASID, the VFIO fields (argsz, version, cache, granularity, padding, flags) are
 * carried verbatim and checked by the back-end's container (validity table → EINVAL); the
 * protocol checks the count, the size and its own reserved bytes.
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../features.js';
import { Struct, reserved } from '../struct.js';
import { FixedCodec, message, type PayloadCodec } from './codec.js';
import { VsvaRequest } from './codes.js';

/** Entries per CACHE_INVALIDATE message (64 KiB of entries). */
export const CACHE_INVALIDATE_MAX_ENTRIES = 1024;

export const IOMMU_CACHE_INVALIDATE_INFO_VERSION_1 = 1;
/** sizeof(struct iommu_cache_invalidate_info), 5.10+ layout. */
export const IOMMU_CACHE_INVALIDATE_INFO_SIZE = 56;
export const IOMMU_CACHE_INV_TYPE = { IOTLB: 1 << 0, DEV_IOTLB: 1 << 1, PASID: 1 << 2 } as const;
export const IOMMU_INV_GRANU = { DOMAIN: 0, PASID: 1, ADDR: 2 } as const;
export const IOMMU_INV_GRANU_NR = 3;
export const IOMMU_INV_ADDR_FLAGS = { PASID: 1 << 0, ARCHID: 1 << 1, LEAF: 1 << 2 } as const;
export const IOMMU_INV_PASID_FLAGS = { PASID: 1 << 0, ARCHID: 1 << 1 } as const;

export interface CacheInvalidateEntry {
  /** Requester id of the device whose device-TLB is meant (DEV_IOTLB); else 0. */
  rid: number;
  argsz: number;
  version: number;
  /** IOMMU_CACHE_INV_TYPE bitmap. */
  cache: number;
  /** IOMMU_INV_GRANU value. */
  granularity: number;
  /** iommu_cache_invalidate_info.padding[6] (container requires zero). */
  padding: Uint8Array;
  /** granu.{pasid_info,addr_info}.flags */
  flags: number;
  /** archid: the domain id (VT-d DID) with ARCHID. */
  archid: number;
  pasid: bigint;
  /** addr_info only (zero for other granularities). */
  addr: bigint;
  granule_size: bigint;
  nb_granules: bigint;
}

export interface CacheInvalidateRequest {
  entries: CacheInvalidateEntry[];
}

export interface CacheInvalidateReply {
  /** Entries handled, in order, before the first failure (count when all succeeded). */
  handled: number;
  /** 0 when every entry was handled; else the negative errno of entry `handled`. */
  first_error: number;
}

export const CacheInvalidateHeaderStruct = new Struct<{ count: number }>('CACHE_INVALIDATE', [
  { name: 'count', type: 'u32', doc: `number of entries (1–${CACHE_INVALIDATE_MAX_ENTRIES})` },
  reserved(4),
]);

export const CacheInvalidateEntryStruct = new Struct<CacheInvalidateEntry>('CACHE_INVALIDATE entry', [
  { name: 'rid', type: 'u16', doc: 'requester id for DEV_IOTLB, else 0' },
  reserved(6),
  { name: 'argsz', type: 'u32', doc: 'iommu_cache_invalidate_info.argsz (56)' },
  { name: 'version', type: 'u32', doc: 'IOMMU_CACHE_INVALIDATE_INFO_VERSION_1 = 1' },
  { name: 'cache', type: 'u8', doc: 'bit 0 IOTLB, 1 DEV_IOTLB, 2 PASID' },
  { name: 'granularity', type: 'u8', doc: '0 DOMAIN, 1 PASID, 2 ADDR' },
  { name: 'padding', type: { kind: 'bytes', size: 6 }, doc: 'iommu_cache_invalidate_info.padding[6] (container requires 0)' },
  { name: 'flags', type: 'u32', doc: 'granu flags: bit 0 PASID valid, 1 ARCHID valid, 2 LEAF (ADDR only)' },
  { name: 'archid', type: 'u32', doc: 'architecture id: the VT-d domain id (DID)' },
  { name: 'pasid', type: 'u64', doc: 'PASID (with the PASID flag)' },
  { name: 'addr', type: 'u64', doc: 'ADDR: first address' },
  { name: 'granule_size', type: 'u64', doc: 'ADDR: bytes per granule' },
  { name: 'nb_granules', type: 'u64', doc: 'ADDR: number of granules' },
]);

const H = CacheInvalidateHeaderStruct.size;
const E = CacheInvalidateEntryStruct.size;

function checkCount(n: number): void {
  if (n < 1 || n > CACHE_INVALIDATE_MAX_ENTRIES) fail('EINVAL', `CACHE_INVALIDATE: ${n} entries, expected 1–${CACHE_INVALIDATE_MAX_ENTRIES}`);
}

/** count u32, reserved u32, then count × 64-byte entries. */
export const CacheInvalidateCodec: PayloadCodec<CacheInvalidateRequest> = {
  sizeOf: (v) => H + v.entries.length * E,
  encodeInto(buf, off, v) {
    checkCount(v.entries.length);
    CacheInvalidateHeaderStruct.encodeInto(buf, off, { count: v.entries.length });
    for (let i = 0; i < v.entries.length; i++) CacheInvalidateEntryStruct.encodeInto(buf, off + H + i * E, v.entries[i]!);
  },
  decode(p) {
    if (p.length < H) fail('EINVAL', `CACHE_INVALIDATE: payload is ${p.length} bytes, shorter than its 8-byte header`);
    const { count } = CacheInvalidateHeaderStruct.decode(p, 0);
    checkCount(count);
    if (p.length !== H + count * E) fail('EINVAL', `CACHE_INVALIDATE: payload is ${p.length} bytes, expected ${H + count * E} for ${count} entries`);
    const entries: CacheInvalidateEntry[] = new Array(count);
    for (let i = 0; i < count; i++) entries[i] = CacheInvalidateEntryStruct.decode(p, H + i * E);
    return { entries };
  },
};

export const CacheInvalidateReplyStruct = new Struct<CacheInvalidateReply>('CACHE_INVALIDATE reply', [
  { name: 'handled', type: 'u32', doc: 'entries handled before the first failure' },
  { name: 'first_error', type: 'i32', doc: '0, or the negative errno of entry `handled`' },
]);

export const CACHE_INVALIDATE = message<CacheInvalidateRequest, CacheInvalidateReply>({
  name: 'CACHE_INVALIDATE', code: VsvaRequest.CACHE_INVALIDATE, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: CacheInvalidateCodec,
  reply: new FixedCodec(CacheInvalidateReplyStruct, (v) => {
    if (v.first_error > 0 || v.first_error < -4095) fail('EINVAL', `CACHE_INVALIDATE reply: first_error ${v.first_error} is not 0 or a negative errno`);
  }),
  doc: 'Invalidate host caches, entry by entry, stopping at the first failure.',
});
