/**
 * CACHE_INVALIDATE's fixed-layout entry codec and packed requests (vhost/messages/invalidate.ts)
 * against the reference Struct codec: the same bytes, the same decoded values, the same errors.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  CacheInvalidateCodec, CacheInvalidateEntryStruct, PackedCacheInvalidate, decodeCacheInvalidateEntry, encodeCacheInvalidateEntry,
  IOMMU_CACHE_INVALIDATE_INFO_SIZE, IOMMU_CACHE_INVALIDATE_INFO_VERSION_1, type CacheInvalidateEntry,
} from '../../../vhost/messages/invalidate.js';
import { encodePayload } from '../../../vhost/messages/codec.js';
import { VsvaError } from '../../../src/errors.js';

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const entryArb: fc.Arbitrary<CacheInvalidateEntry> = fc.record({
  rid: fc.integer({ min: 0, max: 0xffff }),
  argsz: fc.nat({ max: 0xffff_ffff }),
  version: fc.nat({ max: 0xffff_ffff }),
  cache: fc.integer({ min: 0, max: 0xff }),
  granularity: fc.integer({ min: 0, max: 0xff }),
  padding: fc.uint8Array({ minLength: 6, maxLength: 6 }),
  flags: fc.nat({ max: 0xffff_ffff }),
  archid: fc.nat({ max: 0xffff_ffff }),
  pasid: u64,
  addr: u64,
  granule_size: u64,
  nb_granules: u64,
});

function structBytes(e: CacheInvalidateEntry): Buffer {
  const b = Buffer.alloc(64);
  CacheInvalidateEntryStruct.encodeInto(b, 0, e);
  return b;
}

function errorOf(f: () => unknown): VsvaError {
  try {
    f();
  } catch (e) {
    if (e instanceof VsvaError) return e;
    throw e;
  }
  throw new Error('expected a VsvaError');
}

describe('CACHE_INVALIDATE entry codec', () => {
  it('encodes every entry to the Struct codec’s bytes and decodes them back to the Struct’s values', () => {
    fc.assert(
      fc.property(entryArb, (e) => {
        const fast = Buffer.alloc(64);
        encodeCacheInvalidateEntry(fast, 0, e);
        const ref = structBytes(e);
        expect(fast.equals(ref)).toBe(true);
        expect(decodeCacheInvalidateEntry(fast, 0)).toEqual(CacheInvalidateEntryStruct.decode(ref, 0));
      }),
      { numRuns: 300 },
    );
  });

  it('a whole request round-trips through the codec', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { minLength: 1, maxLength: 20 }), (entries) => {
        const p = encodePayload(CacheInvalidateCodec, { entries });
        expect(p.length).toBe(8 + 64 * entries.length);
        expect(CacheInvalidateCodec.decode(p).entries).toEqual(entries);
      }),
      { numRuns: 100 },
    );
  });

  it('refuses what the Struct refuses, with the Struct’s errno and message', () => {
    const good: CacheInvalidateEntry = {
      rid: 1, argsz: 56, version: 1, cache: 1, granularity: 2, padding: new Uint8Array(6), flags: 1, archid: 0, pasid: 5n, addr: 0x1000n, granule_size: 4096n, nb_granules: 1n,
    };
    for (const bad of [{ ...good, rid: 0x10000 }, { ...good, cache: 256 }, { ...good, pasid: -1n }, { ...good, addr: 1n << 64n }, { ...good, padding: new Uint8Array(5) }, { ...good, flags: 1.5 }]) {
      const a = errorOf(() => encodeCacheInvalidateEntry(Buffer.alloc(64), 0, bad));
      const b = errorOf(() => structBytes(bad));
      expect([a.code, a.message]).toEqual([b.code, b.message]);
    }
    const withReserved = structBytes(good);
    withReserved[5] = 1;
    const a = errorOf(() => decodeCacheInvalidateEntry(withReserved, 0));
    expect(a.code).toBe('EOPNOTSUPP');
    expect(a.message).toBe(errorOf(() => CacheInvalidateEntryStruct.decode(withReserved, 0)).message);
  });
});

describe('PackedCacheInvalidate', () => {
  it('push lays out the same bytes as the Struct for the same entry (64-bit address halves, counts past 2^32)', () => {
    const p = new PackedCacheInvalidate(1); // grows
    p.push(0x18, 2, 2, 1, 7, 0xfffff, 0xdead_f000, 0x7fff_ffff, 4096, 2 ** 40 + 3);
    p.push(0, 1, 1, 1, 0, 3, 0, 0, 0, 0);
    const want: CacheInvalidateEntry[] = [
      { rid: 0x18, argsz: IOMMU_CACHE_INVALIDATE_INFO_SIZE, version: IOMMU_CACHE_INVALIDATE_INFO_VERSION_1, cache: 2, granularity: 2, padding: new Uint8Array(6), flags: 1, archid: 7, pasid: 0xfffffn, addr: 0x7fff_ffff_dead_f000n, granule_size: 4096n, nb_granules: 2n ** 40n + 3n },
      { rid: 0, argsz: 56, version: 1, cache: 1, granularity: 1, padding: new Uint8Array(6), flags: 1, archid: 0, pasid: 3n, addr: 0n, granule_size: 0n, nb_granules: 0n },
    ];
    expect(p.count).toBe(2);
    expect(p.bytes.equals(Buffer.concat(want.map(structBytes)))).toBe(true);
    expect(p.entries).toEqual(want);
    // Encoded by copying; decoded on the other side as plain entries.
    expect(CacheInvalidateCodec.decode(encodePayload(CacheInvalidateCodec, p)).entries).toEqual(want);
    expect(p.from(1).entries).toEqual([want[1]]);
  });

  it('pushEntry validates like the Struct and leaves the request unchanged on error', () => {
    const p = new PackedCacheInvalidate();
    expect(() => p.pushEntry({ rid: 0x1_0000, argsz: 56, version: 1, cache: 1, granularity: 0, padding: new Uint8Array(6), flags: 0, archid: 0, pasid: 0n, addr: 0n, granule_size: 0n, nb_granules: 0n })).toThrow(VsvaError);
    expect(p.count).toBe(0);
    expect(() => encodePayload(CacheInvalidateCodec, p)).toThrow(/0 entries/);
  });
});
