/**
 * Property: the container's fast path for the entry one page-selective PASID-based IOTLB flush
 * sends (host/vfio/cache-invalidate.ts pageSelectiveMask) takes only entries the general path
 * accepts and turns into the same single page-selective invalidation: checkInvalidateEntry
 * returns an IOTLB-only ADDR range of that PASID with the same leaf hint, and singleBlockMask
 * gives the same address mask. Entries are drawn around every boundary the fast path checks.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { pageSelectiveMask, singleBlockMask } from '../../../../host/vfio/cache-invalidate.js';
import { checkInvalidateEntry } from '../../../../host/vfio/uapi.js';
import { cacheInvalidateEntry, type CacheInvalidateEntry } from '../../../../vhost/messages/invalidate.js';
import { isVsvaError } from '../../../../src/errors.js';

/** Any field drawn around its boundaries. */
const anyEntry: fc.Arbitrary<CacheInvalidateEntry> = fc
  .record({
    cache: fc.constantFrom(0, 1, 1, 1, 2, 3, 4, 5, 8),
    granularity: fc.constantFrom(0, 1, 2, 2, 2, 3),
    flags: fc.constantFrom(0, 1, 1, 2, 3, 4, 5, 5, 7, 8, 9),
    argsz: fc.constantFrom(16, 32, 48, 55, 56, 56, 64),
    version: fc.constantFrom(0, 1, 1, 1, 2),
    pasid: fc.oneof(fc.constantFrom(0n, 1n, 0xf_ffffn, 0x10_0000n, 1n << 32n), fc.bigInt({ min: 1n, max: 0xf_ffffn })),
    page: fc.oneof(fc.bigInt({ min: 0n, max: 1n << 20n }), fc.constantFrom(0n, (1n << 41n) - 1n, 1n << 41n, (1n << 52n) - 1n)),
    low: fc.constantFrom(0n, 0n, 0n, 0x800n),
    granule: fc.constantFrom(4096n, 4096n, 4096n, 2048n, 8192n, 3000n),
    nb: fc.oneof(fc.constantFrom(0n, 1n, 2n, 3n, 6n, 1n << 18n, 1n << 19n), fc.integer({ min: 0, max: 20 }).map((k) => 1n << BigInt(k))),
    pad: fc.constantFrom(0, 0, 0, 1),
  })
  .map((r) => cacheInvalidateEntry({
    cache: r.cache,
    granularity: r.granularity,
    flags: r.flags,
    argsz: r.argsz,
    version: r.version,
    pasid: r.pasid,
    addr: r.page * 4096n + r.low,
    granule_size: r.granule,
    nb_granules: r.nb,
    padding: Uint8Array.of(0, 0, 0, r.pad, 0, 0),
  }));

/** A page-selective flush's entry (aligned 2^am pages), then at most one field replaced by one of anyEntry's. */
const nearEntry: fc.Arbitrary<CacheInvalidateEntry> = fc
  .tuple(fc.integer({ min: 0, max: 20 }), fc.bigInt({ min: 0n, max: 1n << 24n }), fc.boolean(), fc.bigInt({ min: 1n, max: 0xf_ffffn }), anyEntry, fc.constantFrom<keyof CacheInvalidateEntry | null>(null, null, null, 'cache', 'granularity', 'flags', 'argsz', 'version', 'pasid', 'addr', 'granule_size', 'nb_granules', 'padding'))
  .map(([am, block, leaf, pasid, other, field]) => {
    const e = cacheInvalidateEntry({ cache: 1, granularity: 2, flags: leaf ? 5 : 1, pasid, addr: (block << BigInt(am)) * 4096n, granule_size: 4096n, nb_granules: 1n << BigInt(am) });
    return field === null ? e : { ...e, [field]: other[field] };
  });

const entry = fc.oneof(anyEntry, nearEntry);

describe('the page-selective entry fast path', () => {
  it('accepts only what the general path turns into the same one-block invalidation', () => {
    let fast = 0;
    fc.assert(
      fc.property(entry, (e) => {
        const am = pageSelectiveMask(e);
        if (am < 0) return;
        fast++;
        let c;
        try {
          c = checkInvalidateEntry(e, 0);
        } catch (err) {
          if (isVsvaError(err)) throw new Error(`fast path took an entry the general path refuses: ${err.detail.message}`);
          throw err;
        }
        expect(c).toEqual({ granu: 'addr', cache: 1, pasid: Number(e.pasid), addr: e.addr, size: e.granule_size * e.nb_granules, leaf: (e.flags & 4) !== 0 });
        expect(singleBlockMask(e.addr, e.granule_size * e.nb_granules)).toBe(am);
      }),
      { numRuns: 5000 },
    );
    expect(fast).toBeGreaterThan(500);
  });

  it('takes the entry a guest page-selective descriptor sends (4 KiB × 2^AM, aligned, with and without LEAF)', () => {
    for (const [nb, flags, addr, am] of [[1n, 1, 0x1000n, 0], [8n, 5, 0x8000n, 3], [1n << 13n, 1, 0x4000_0000n, 13]] as const) {
      expect(pageSelectiveMask(cacheInvalidateEntry({ cache: 1, granularity: 2, flags, pasid: 5n, addr, granule_size: 4096n, nb_granules: nb }))).toBe(am);
    }
    // Not one aligned block: the general path splits it.
    expect(pageSelectiveMask(cacheInvalidateEntry({ cache: 1, granularity: 2, flags: 1, pasid: 5n, addr: 0x1000n, granule_size: 4096n, nb_granules: 2n }))).toBe(-1);
  });
});
