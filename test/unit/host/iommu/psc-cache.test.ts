/**
 * The first-level paging-structure cache of an IOTLB bucket (host/iommu/tlb-bucket.ts): entries
 * of every level in one open-addressing table of numbers (page-hash.ts, three numbers per key) —
 * each entry's table page, the page as the FL entry names it and its PSC_* flags round-trip;
 * a flush makes every entry stale and a refill reuses its slot; a flush of a table holding more
 * than STALE_LIMIT keys frees it; stale keys are purged when they crowd a full table; range
 * removals count only live entries off.
 */
import { describe, expect, it } from 'vitest';
import { PSC_RW, PSC_TBL_W, PSC_US, PSC_XD, STALE_LIMIT, TlbBucket } from '../../../../host/iommu/tlb-bucket.js';

const SPAN = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4];

describe('paging-structure cache of a bucket', () => {
  it('returns what was cached, per level and flag combination', () => {
    const b = new TlbBucket(1, 2);
    for (let f = 0; f < 16; f++) b.pscInsert(2, f * SPAN[2]!, 2 ** 33 + f, 0x100 + f, f);
    b.pscInsert(4, 7 * SPAN[4]!, 2 ** 40, 2 ** 36, PSC_XD);
    expect(b.pscLive).toBe(17);
    for (let f = 0; f < 16; f++) {
      const e = b.pscLookup(2, f * SPAN[2]! + 511)!;
      expect(e).toMatchObject({ tblPfn: 2 ** 33 + f, tblGfn: 0x100 + f, tblWritable: (f & PSC_TBL_W) !== 0, rw: (f & PSC_RW) !== 0, us: (f & PSC_US) !== 0, xd: (f & PSC_XD) !== 0 });
    }
    expect(b.pscLookup(3, 0)).toBeUndefined();
    expect(b.pscLookup(4, 7 * SPAN[4]! + 12345)).toMatchObject({ tblPfn: 2 ** 40, tblGfn: 2 ** 36, xd: true, rw: false });
    expect(b.pscLookup(4, 8 * SPAN[4]!)).toBeUndefined();
  });

  it('keys level 5 by page / 512^4 for small and large page numbers alike', () => {
    const b = new TlbBucket(1, 2);
    b.pscInsert(5, 5, 10, 11, PSC_RW);
    expect(b.pscLookup(5, 2 ** 30)?.tblPfn).toBe(10);
    expect(b.pscLookup(5, SPAN[5]! - 1)?.tblPfn).toBe(10);
    expect(b.pscLookup(5, SPAN[5]!)).toBeUndefined();
    b.pscInsert(5, 3 * SPAN[5]!, 12, 13, PSC_RW);
    expect(b.pscLookup(5, 3 * SPAN[5]! + 2 ** 31)?.tblPfn).toBe(12);
  });

  it('a flush makes every entry stale; a refill reuses the key', () => {
    const b = new TlbBucket(1, 2);
    for (let k = 0; k < 100; k++) b.pscInsert(2, k * SPAN[2]!, k, k, PSC_RW);
    const keys = b.keys;
    b.clearPsc();
    expect(b.pscLive).toBe(0);
    expect(b.pscLookup(2, 0)).toBeUndefined();
    expect(b.keys).toBe(keys);
    b.pscInsert(2, 5 * SPAN[2]!, 50, 51, PSC_US);
    expect(b.pscLive).toBe(1);
    expect(b.keys).toBe(keys);
    expect(b.pscLookup(2, 5 * SPAN[2]!)).toMatchObject({ tblPfn: 50, tblGfn: 51, us: true, rw: false });
    expect(b.pscLookup(2, 6 * SPAN[2]!)).toBeUndefined();
  });

  it('frees a table of more than STALE_LIMIT keys on a flush, and purges stale keys that crowd a full one', () => {
    const b = new TlbBucket(1, 2);
    for (let k = 0; k <= STALE_LIMIT; k++) b.pscInsert(2, k * SPAN[2]!, k, k, 0);
    expect(b.keys).toBe(STALE_LIMIT + 1);
    b.clearPsc();
    expect(b.keys).toBe(0);

    for (let k = 0; k < STALE_LIMIT; k++) b.pscInsert(3, k * SPAN[3]!, k, k, 0);
    b.clearPsc();
    expect(b.keys).toBe(STALE_LIMIT);
    b.pscInsert(3, 0, 1, 1, 0); // a stale key refilled: no purge
    expect(b.keys).toBe(STALE_LIMIT);
    b.pscInsert(3, STALE_LIMIT * SPAN[3]!, 2, 2, 0); // a new key into a full table of stale keys
    expect(b.keys).toBe(2);
    expect(b.pscLive).toBe(2);
    expect(b.pscLookup(3, 0)?.tblPfn).toBe(1);
    expect(b.pscLookup(3, STALE_LIMIT * SPAN[3]!)?.tblPfn).toBe(2);
  });

  it('removes the entries of a range, counting only live ones off', () => {
    const b = new TlbBucket(1, 2);
    for (let k = 0; k < 8; k++) b.pscInsert(2, k * SPAN[2]!, k, k, 0);
    b.pscInsert(3, 0, 100, 100, 0);
    b.pscInsert(4, 0, 200, 200, 0);
    expect(b.pscLive).toBe(10);
    // Pages of level-2 keys 2..3: removes those two and the level-3 and level-4 entries above them.
    b.removePscRange(2 * SPAN[2]!, 4 * SPAN[2]! - 1);
    expect(b.pscLive).toBe(6);
    expect(b.pscLookup(2, 2 * SPAN[2]!)).toBeUndefined();
    expect(b.pscLookup(2, 4 * SPAN[2]!)?.tblPfn).toBe(4);
    expect(b.pscLookup(3, 0)).toBeUndefined();
    // A range wider than the table (the scan road), after a flush left stale keys.
    b.clearPsc();
    b.pscInsert(2, 6 * SPAN[2]!, 60, 60, 0);
    expect(b.pscLive).toBe(1);
    b.removePscRange(0, 2 ** 40);
    expect(b.pscLive).toBe(0);
    expect(b.keys).toBe(0);
  });
});
