/**
 * CACHE_INVALIDATE (docs/protocol.md §10.6): an array of `struct iommu_cache_invalidate_info`
 * (Linux include/uapi/linux/iommu.h, 5.10–5.13 layout with argsz) each preceded by the RID of the device whose device-TLB is
 * meant. The reply says how many entries were handled, stopping at the first failure, as
 * iommufd's IOMMU_HWPT_INVALIDATE reports entry_num (include/uapi/linux/iommufd.h).
 *
 * As with BIND_GPASID, the VFIO fields (argsz, version, cache, granularity, padding, flags) are
 * carried verbatim and checked by the back-end's container (validity table → EINVAL); the
 * protocol checks the count, the size and its own reserved bytes.
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
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

/**
 * An entry of the current version with the given fields; every other field is neutral (rid 0,
 * no flags, no PASID, no range, zero padding).
 */
export function cacheInvalidateEntry(e: Partial<CacheInvalidateEntry> & Pick<CacheInvalidateEntry, 'cache' | 'granularity'>): CacheInvalidateEntry {
  return {
    rid: 0,
    argsz: IOMMU_CACHE_INVALIDATE_INFO_SIZE,
    version: IOMMU_CACHE_INVALIDATE_INFO_VERSION_1,
    padding: new Uint8Array(6),
    flags: 0,
    archid: 0,
    pasid: 0n,
    addr: 0n,
    granule_size: 0n,
    nb_granules: 0n,
    ...e,
  };
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
/** Bytes of one entry on the wire. */
const E = CacheInvalidateEntryStruct.size;

function checkCount(n: number): void {
  if (n < 1 || n > CACHE_INVALIDATE_MAX_ENTRIES) fail('EINVAL', `CACHE_INVALIDATE: ${n} entries, expected 1–${CACHE_INVALIDATE_MAX_ENTRIES}`);
}

// ---- the hot path: a fixed-layout encoder and decoder for entries -------------------------------
//
// CACHE_INVALIDATE carries up to 1024 entries per message and is the busiest message of a VT-d
// guest (every IOTLB flush), so its entries are encoded and decoded by a loop written for this one
// layout instead of the generic per-field Struct walk. The bytes are the same (the layout table
// above stays the normative description, and CacheInvalidateEntryStruct the reference codec): any
// value the fast loop does not accept as plainly valid goes through the Struct, which produces the
// documented error.

const TWO32 = 4294967296;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

function u64At(v: DataView, at: number): bigint {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function isU(x: unknown, max: number): boolean {
  return typeof x === 'number' && x >= 0 && x <= max && Math.floor(x) === x;
}

function isU64(x: unknown): x is bigint {
  return typeof x === 'bigint' && x >= 0n && x <= U64_MAX;
}

/** Write one entry at `off` (64 bytes); throws EINVAL (as the Struct does) for a value that does not fit. */
export function encodeCacheInvalidateEntry(buf: Buffer, off: number, e: CacheInvalidateEntry): void {
  if (
    !isU(e.rid, 0xffff) || !isU(e.argsz, 0xffff_ffff) || !isU(e.version, 0xffff_ffff) || !isU(e.cache, 0xff) || !isU(e.granularity, 0xff) ||
    !(e.padding instanceof Uint8Array) || e.padding.length !== 6 || !isU(e.flags, 0xffff_ffff) || !isU(e.archid, 0xffff_ffff) ||
    !isU64(e.pasid) || !isU64(e.addr) || !isU64(e.granule_size) || !isU64(e.nb_granules)
  ) {
    CacheInvalidateEntryStruct.encodeInto(buf, off, e); // throws the field's EINVAL
    return;
  }
  buf.writeUInt32LE(e.rid, off);
  buf.writeUInt32LE(0, off + 4);
  buf.writeUInt32LE(e.argsz, off + 8);
  buf.writeUInt32LE(e.version, off + 12);
  buf[off + 16] = e.cache;
  buf[off + 17] = e.granularity;
  buf.set(e.padding, off + 18);
  buf.writeUInt32LE(e.flags, off + 24);
  buf.writeUInt32LE(e.archid, off + 28);
  buf.writeBigUInt64LE(e.pasid, off + 32);
  buf.writeBigUInt64LE(e.addr, off + 40);
  buf.writeBigUInt64LE(e.granule_size, off + 48);
  buf.writeBigUInt64LE(e.nb_granules, off + 56);
}

/** Decode and validate the entry at `off` (the caller has checked that 64 bytes exist). */
export function decodeCacheInvalidateEntry(buf: Buffer, off: number, view: DataView = viewOf(buf)): CacheInvalidateEntry {
  if (view.getUint16(off + 2, true) !== 0 || view.getUint32(off + 4, true) !== 0) return CacheInvalidateEntryStruct.decode(buf, off); // throws EOPNOTSUPP
  return {
    rid: view.getUint16(off, true),
    argsz: view.getUint32(off + 8, true),
    version: view.getUint32(off + 12, true),
    cache: buf[off + 16]!,
    granularity: buf[off + 17]!,
    padding: view.getUint16(off + 18, true) === 0 && view.getUint32(off + 20, true) === 0 ? new Uint8Array(6) : new Uint8Array(buf.subarray(off + 18, off + 24)),
    flags: view.getUint32(off + 24, true),
    archid: view.getUint32(off + 28, true),
    pasid: u64At(view, off + 32),
    addr: u64At(view, off + 40),
    granule_size: u64At(view, off + 48),
    nb_granules: u64At(view, off + 56),
  };
}

/**
 * A CACHE_INVALIDATE request whose entries are already laid out as on the wire: appended from
 * plain numbers without an object per entry (the guest's invalidation queue builds thousands per
 * queue run), and encoded by copying the bytes. `entries` decodes them on demand, so the value is
 * an ordinary CacheInvalidateRequest to anything that inspects it.
 *
 * `push` takes values the caller knows fit (u16 rid, u8 cache / granularity, u32 flags / archid,
 * pasid < 2^32, 64-bit addr as two 32-bit halves, granule size and count < 2^53); the protocol's
 * reserved bytes are always written as zero.
 */
export class PackedCacheInvalidate implements CacheInvalidateRequest {
  private buf: Buffer;
  private view: DataView;
  private n = 0;

  constructor(capacity = CACHE_INVALIDATE_MAX_ENTRIES) {
    this.buf = Buffer.alloc(Math.max(1, capacity) * E);
    this.view = viewOf(this.buf);
  }

  /** A request of `count` entries laid out in `bytes` (count × 64 bytes; not copied). */
  static of(bytes: Uint8Array, count: number): PackedCacheInvalidate {
    if (bytes.length !== count * E) fail('EINVAL', `CACHE_INVALIDATE: ${bytes.length} bytes are not ${count} entries`);
    const p = new PackedCacheInvalidate(0);
    p.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    p.view = viewOf(p.buf);
    p.n = count;
    return p;
  }

  get count(): number {
    return this.n;
  }

  /** The entries' bytes (count × 64). */
  get bytes(): Buffer {
    return this.buf.subarray(0, this.n * E);
  }

  /** Entries from `start` on, sharing these bytes. */
  from(start: number): PackedCacheInvalidate {
    return PackedCacheInvalidate.of(this.buf.subarray(start * E, this.n * E), this.n - start);
  }

  get entries(): CacheInvalidateEntry[] {
    const out: CacheInvalidateEntry[] = new Array(this.n);
    for (let i = 0; i < this.n; i++) out[i] = decodeCacheInvalidateEntry(this.buf, i * E, this.view);
    return out;
  }

  push(rid: number, cache: number, granularity: number, flags: number, archid: number, pasid: number, addrLo: number, addrHi: number, granuleSize: number, nbGranules: number): void {
    const off = this.reserve();
    const v = this.view;
    v.setUint32(off, rid & 0xffff, true); // rid u16 + the first 2 reserved bytes
    v.setUint32(off + 4, 0, true);
    v.setUint32(off + 8, IOMMU_CACHE_INVALIDATE_INFO_SIZE, true);
    v.setUint32(off + 12, IOMMU_CACHE_INVALIDATE_INFO_VERSION_1, true);
    v.setUint32(off + 16, (cache & 0xff) | ((granularity & 0xff) << 8), true); // + padding[0..1]
    v.setUint32(off + 20, 0, true); // padding[2..5]
    v.setUint32(off + 24, flags, true);
    v.setUint32(off + 28, archid, true);
    v.setUint32(off + 32, pasid, true);
    v.setUint32(off + 36, 0, true);
    v.setUint32(off + 40, addrLo, true);
    v.setUint32(off + 44, addrHi, true);
    v.setUint32(off + 48, granuleSize, true);
    v.setUint32(off + 52, Math.floor(granuleSize / TWO32), true);
    v.setUint32(off + 56, nbGranules, true);
    v.setUint32(off + 60, Math.floor(nbGranules / TWO32), true);
  }

  /** Append an entry given as an object (validated as the Struct does). */
  pushEntry(e: CacheInvalidateEntry): void {
    const off = this.reserve();
    try {
      encodeCacheInvalidateEntry(this.buf, off, e);
    } catch (err) {
      this.n--;
      throw err;
    }
  }

  private reserve(): number {
    const off = this.n * E;
    if (off + E > this.buf.length) {
      const grown = Buffer.alloc(Math.max(this.buf.length * 2, off + E));
      this.buf.copy(grown, 0, 0, off);
      this.buf = grown;
      this.view = viewOf(grown);
    }
    this.n++;
    return off;
  }
}

/** count u32, reserved u32, then count × 64-byte entries. */
export const CacheInvalidateCodec: PayloadCodec<CacheInvalidateRequest> = {
  sizeOf: (v) => H + (v instanceof PackedCacheInvalidate ? v.count : v.entries.length) * E,
  encodeInto(buf, off, v) {
    if (v instanceof PackedCacheInvalidate) {
      checkCount(v.count);
      buf.writeUInt32LE(v.count, off);
      buf.writeUInt32LE(0, off + 4);
      v.bytes.copy(buf, off + H);
      return;
    }
    checkCount(v.entries.length);
    buf.writeUInt32LE(v.entries.length, off);
    buf.writeUInt32LE(0, off + 4);
    for (let i = 0; i < v.entries.length; i++) encodeCacheInvalidateEntry(buf, off + H + i * E, v.entries[i]!);
  },
  decode(p) {
    if (p.length < H) fail('EINVAL', `CACHE_INVALIDATE: payload is ${p.length} bytes, shorter than its 8-byte header`);
    const { count } = CacheInvalidateHeaderStruct.decode(p, 0);
    checkCount(count);
    if (p.length !== H + count * E) fail('EINVAL', `CACHE_INVALIDATE: payload is ${p.length} bytes, expected ${H + count * E} for ${count} entries`);
    const entries: CacheInvalidateEntry[] = new Array(count);
    const view = viewOf(p);
    for (let i = 0; i < count; i++) entries[i] = decodeCacheInvalidateEntry(p, H + i * E, view);
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
