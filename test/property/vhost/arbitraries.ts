/**
 * fast-check arbitraries for every message of the catalogue, derived from the struct
 * declarations (field types, masks, enums, maxima) and filtered by the codec's own checks, plus
 * hand-written ones for the variable-size payloads.
 */
import fc from 'fast-check';
import { Struct, type LaidOutField } from '../../../vhost/wire/struct.js';
import {
  BackendMessages, FrontendMessages, FixedCodec, encodePayload, VHOST_MEMORY_MAX_NREGIONS, MemoryRegionStruct,
  CacheInvalidateEntryStruct, CACHE_INVALIDATE_MAX_ENTRIES, IovaRangeStruct, HwptPgfaultStruct, IOMMUFD_MAX_HWPT_DATA,
  IOMMUFD_MAX_INV_ENTRY_LEN, type AnySpec, type PayloadCodec,
} from '../../../vhost/index.js';

function fieldArb(f: LaidOutField): fc.Arbitrary<unknown> | null {
  const t = f.type;
  if (typeof t === 'string') {
    if (f.values) return fc.constantFrom(...f.values);
    if (t === 'u64') {
      return f.mask !== undefined
        ? fc.bigInt({ min: 0n, max: BigInt(f.mask) }).map((x) => x & BigInt(f.mask!))
        : fc.oneof(fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }), fc.bigInt({ min: 0n, max: 0xffff_ffffn }));
    }
    if (t === 'i32') return fc.integer({ min: -4095, max: 0 });
    const limit = t === 'u8' ? 0xff : t === 'u16' ? 0xffff : 0xffff_ffff;
    const max = Math.min(limit, f.max ?? limit);
    const n = fc.integer({ min: 0, max });
    if (f.mask !== undefined) return n.map((x) => (x & Number(f.mask)) >>> 0);
    return fc.oneof(n, fc.integer({ min: 0, max: Math.min(max, 16) }));
  }
  if (t.kind === 'reserved') return null;
  if (t.kind === 'bytes') return fc.uint8Array({ minLength: t.size, maxLength: t.size });
  return fc
    .string({ unit: 'grapheme', minLength: 1, maxLength: 20 })
    .filter((s) => !s.includes('\0') && Buffer.byteLength(s) <= t.size - 1);
}

export function structArb<T extends object>(s: Struct<T>): fc.Arbitrary<T> {
  const rec: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of s.fields) {
    const a = fieldArb(f);
    if (a) rec[f.name] = a;
  }
  return fc.record(rec) as unknown as fc.Arbitrary<T>;
}

/** Values the codec accepts (cross-field rules applied by trying to encode). */
function encodable<T>(codec: PayloadCodec<T>, arb: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return arb.filter((v) => {
    try {
      encodePayload(codec, v);
      return true;
    } catch {
      return false;
    }
  });
}

const regionArb = structArb(MemoryRegionStruct).map((r) => ({
  ...r,
  memory_size: (r.memory_size % 0x1_0000_0000n) + 1n,
  guest_phys_addr: r.guest_phys_addr % 0x1_0000_0000_0000n,
  userspace_addr: r.userspace_addr % 0x1_0000_0000_0000n,
  mmap_offset: r.mmap_offset % 0x1_0000_0000_0000n,
}));

const custom: Record<string, fc.Arbitrary<unknown>> = {
  SET_FEATURES: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
  SET_PROTOCOL_FEATURES: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
  SET_MEM_TABLE: fc.array(regionArb, { minLength: 1, maxLength: VHOST_MEMORY_MAX_NREGIONS }).map((regions) => ({ regions })),
  CACHE_INVALIDATE: fc
    .array(structArb(CacheInvalidateEntryStruct), { minLength: 1, maxLength: 8 })
    .map((entries) => ({ entries })),
  DEVICE_DMA: fc
    .record({
      rid: fc.integer({ min: 0, max: 0xffff }),
      write: fc.boolean(),
      flags: fc.integer({ min: 0, max: 15 }),
      pasid: fc.integer({ min: 0, max: 0xfffff }),
      addr: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffffn }),
      data: fc.uint8Array({ minLength: 1, maxLength: 300 }),
      staging: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffffn }),
    })
    .map(({ rid, write, flags, pasid, addr, data, staging }) => {
      // STAGED (bit 3): the data lies in guest memory at staging_gpa, none travels inline.
      const staged = (flags & 8) !== 0;
      return {
        rid, op: write ? 1 : 0, flags, pasid: flags & 1 ? pasid : 0, addr, length: data.length,
        staging_gpa: staged ? staging : 0n, ...(write && !staged ? { data } : {}),
      };
    }),
};

// The iommufd family's variable payloads: arrays after a count, raw bytes after a length.
custom.IOMMUFD_IOAS_ALLOW_IOVAS = fc
  .record({ ioas_id: fc.integer({ min: 0, max: 0xffff_ffff }), items: fc.array(structArb(IovaRangeStruct), { maxLength: 8 }) })
  .map((v) => ({ ...v, count: v.items.length }));
custom.IOMMUFD_HWPT_ALLOC = fc
  .record({
    flags: fc.integer({ min: 0, max: 0xf }), dev_id: fc.integer({ min: 0, max: 0xffff }), pt_id: fc.integer({ min: 0, max: 0xffff }),
    data_type: fc.integer({ min: 0, max: 2 }), fault_id: fc.integer({ min: 0, max: 0xffff }),
    data: fc.uint8Array({ maxLength: IOMMUFD_MAX_HWPT_DATA }),
  })
  .map((v) => ({ ...v, data_len: v.data.length }));
custom.IOMMUFD_HWPT_INVALIDATE = fc
  .record({
    hwpt_id: fc.integer({ min: 0, max: 0xffff }), data_type: fc.integer({ min: 0, max: 1 }),
    entry_len: fc.integer({ min: 1, max: IOMMUFD_MAX_INV_ENTRY_LEN }), entry_num: fc.integer({ min: 0, max: 4 }),
  })
  .chain((h) => fc.uint8Array({ minLength: h.entry_len * h.entry_num, maxLength: h.entry_len * h.entry_num }).map((data) => ({ ...h, data })));

const replyCustom: Record<string, fc.Arbitrary<unknown>> = {
  IOMMUFD_IOAS_IOVA_RANGES: fc
    .record({ out_iova_alignment: fc.constant(4096n), items: fc.array(structArb(IovaRangeStruct), { maxLength: 8 }) })
    .map((v) => ({ ...v, count: v.items.length })),
  IOMMUFD_FAULT_READ: fc.array(structArb(HwptPgfaultStruct), { maxLength: 8 }).map((items) => ({ count: items.length, items })),
  GET_STATE: fc.json().map((json) => ({ json })),
  DEVICE_DMA: fc.oneof(
    fc.uint8Array({ minLength: 0, maxLength: 300 }).map((d) => ({
      status: 0, reason: 0, flags: 0, pasid: 0, fault_addr: 0n, ...(d.length ? { data: d } : {}),
    })),
    fc.record({
      reason: fc.integer({ min: 1, max: 0xff }),
      pv: fc.boolean(),
      pasid: fc.integer({ min: 0, max: 0xfffff }),
      fault_addr: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
    }).map(({ reason, pv, pasid, fault_addr }) => ({ status: 1, reason, flags: pv ? 1 : 0, pasid: pv ? pasid : 0, fault_addr })),
  ),
};

/** An arbitrary valid request payload for a spec (undefined for empty payloads). */
export function requestArb(spec: AnySpec): fc.Arbitrary<unknown> {
  if (custom[spec.name]) return encodable(spec.request, custom[spec.name]!);
  if (spec.request instanceof FixedCodec) return encodable(spec.request, structArb(spec.request.struct));
  return fc.constant(undefined);
}

/** An arbitrary valid reply body for a 'status' spec. */
export function replyArb(spec: AnySpec): fc.Arbitrary<unknown> {
  if (replyCustom[spec.name]) return encodable(spec.reply, replyCustom[spec.name]!);
  if (spec.reply instanceof FixedCodec) return encodable(spec.reply, structArb(spec.reply.struct));
  return fc.constant(undefined);
}

export const allSpecs: AnySpec[] = [...Object.values(FrontendMessages), ...Object.values(BackendMessages)];
export { CACHE_INVALIDATE_MAX_ENTRIES };
