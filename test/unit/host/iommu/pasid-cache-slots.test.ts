/**
 * The PASID-cache slots (host/iommu/pasid-cache-slots.ts) behind the PASID-cache index
 * (pasid-cache-index.ts): a PASID-selective invalidation (VT-d spec §6.5.2, PASID-cache
 * invalidate descriptor 0x7) drops the entry of its tag on every device; the count of cached
 * entries stays exact beyond what a slot's holds field counts; a generation that wraps, or a leaf
 * reused for other PASIDs, never makes an invalidated entry valid again; a context caches an entry
 * only through a bucket registered in the IOTLB (EINVAL otherwise).
 */
import { describe, expect, it } from 'vitest';
import { Iotlb, TlbBucket } from '../../../../host/iommu/tlb.js';
import { PasidCacheIndex } from '../../../../host/iommu/pasid-cache-index.js';
import { GEN_MASK, GEN_ONE, HOLDS_OVERFLOW, LEAF_PASIDS } from '../../../../host/iommu/pasid-cache-slots.js';
import { RequestContext, type ContextDevice } from '../../../../host/iommu/request-context.js';
import type { CachedPasidEntry } from '../../../../host/iommu/pasid-cache.js';

const device = (rid: number): ContextDevice => ({ rid, pasidDirPtr: 0, devTlb: null, atsEnabled: false });
const entry = (did: number): CachedPasidEntry => ({ did }) as CachedPasidEntry;

/** `devices` devices with one context each for `pasid`, an IOTLB and the index over them. */
function world(devices: number, pasid: number): { iotlb: Iotlb; index: PasidCacheIndex; ctxs: RequestContext[] } {
  const iotlb = new Iotlb(1 << 20);
  const ctxs: RequestContext[] = [];
  for (let rid = 1; rid <= devices; rid++) ctxs.push(new RequestContext(device(rid), pasid));
  return { iotlb, index: new PasidCacheIndex(iotlb, () => ctxs), ctxs };
}

describe('PASID-cache slots', () => {
  it('a PASID-selective flush drops the tag’s entry on every device and nothing else', () => {
    const { iotlb, index, ctxs } = world(3, 7);
    const other = new RequestContext(device(9), 8);
    for (const c of ctxs) index.load(c, entry(2), iotlb.bucket(2, 7));
    index.load(other, entry(2), iotlb.bucket(2, 8));
    iotlb.insert(other.iotlb, 1, 1, 0x1000, 1);
    expect(index.size).toBe(4);
    index.dropPasid(2, 7);
    expect(ctxs.map((c) => c.pe)).toEqual([null, null, null]);
    expect(other.pe?.did).toBe(2);
    expect(index.size).toBe(1);
    // The bucket of (2, 7) cached nothing and lost its last hold: it left the IOTLB.
    expect(iotlb.find(2, 7)).toBeUndefined();
    expect(iotlb.bucketCount).toBe(1);
    index.dropPasid(2, 7); // nothing cached: a no-op
    index.dropPasid(3, 8); // another domain's tag: nothing there
    expect(other.pe?.did).toBe(2);
    index.dropDomain(2);
    expect(other.pe).toBeNull();
    expect(index.domainCount).toBe(0);
    expect(iotlb.find(2, 8)).toBeDefined(); // it caches an entry
  });

  it('counts more contexts on one tag than the holds field holds, exactly', () => {
    const n = HOLDS_OVERFLOW + 5;
    const { iotlb, index, ctxs } = world(n, 3);
    for (const c of ctxs) index.load(c, entry(4), iotlb.bucket(4, 3));
    expect(index.size).toBe(n);
    expect(iotlb.slotsOf(4)!.overflow.get(3)).toBe(n);
    for (const c of ctxs.slice(0, 6)) index.drop(c);
    expect(index.size).toBe(n - 6);
    expect(iotlb.slotsOf(4)!.overflow.size).toBe(0); // 14: back in the holds field
    expect(iotlb.bucketCount).toBe(1);
    for (const c of ctxs.slice(0, 6)) index.load(c, entry(4), iotlb.bucket(4, 3));
    index.dropPasid(4, 3);
    expect(index.size).toBe(0);
    expect(ctxs.every((c) => c.pe === null)).toBe(true);
    expect(iotlb.bucketCount).toBe(0);
  });

  it('a generation that wraps never validates an entry invalidated a cycle earlier', () => {
    const { iotlb, index, ctxs } = world(2, 5);
    const [a, b] = ctxs as [RequestContext, RequestContext];
    index.load(a, entry(2), iotlb.bucket(2, 5));
    iotlb.insert(a.iotlb, 1, 1, 0x1000, 1); // the bucket stays through the flushes
    index.dropPasid(2, 5);
    expect(a.pe).toBeNull(); // stale, holding generation 0
    index.load(b, entry(2), iotlb.bucket(2, 5));
    // As after 2^27 − 2 more flushes and reloads by b: the generation is one step short of wrapping.
    const leaf = b.pcLeaf;
    leaf[b.pcAt] = (GEN_MASK | (leaf[b.pcAt]! & ~GEN_MASK)) | 0;
    b.peGen = GEN_MASK;
    expect(b.pe?.did).toBe(2);
    index.dropPasid(2, 5); // the generation returns to 0, a's
    expect(leaf[b.pcAt]! & GEN_MASK).toBe(0);
    expect(a.pe).toBeNull();
    expect(b.pe).toBeNull();
    expect(index.size).toBe(0);
    index.load(a, entry(2), iotlb.bucket(2, 5));
    expect(a.pe?.did).toBe(2);
    index.dropPasid(2, 5);
    expect(leaf[a.pcAt]! & GEN_MASK).toBe(GEN_ONE);
  });

  it('a leaf reused for other PASIDs keeps its generations', () => {
    const { iotlb, index, ctxs } = world(1, 5);
    const a = ctxs[0]!;
    index.load(a, entry(2), iotlb.bucket(2, 5));
    const leaf = a.pcLeaf;
    // A bucket of another leaf, in use, keeps the DID's slots table (and its spare leaves).
    const keep = iotlb.bucket(2, 3 * LEAF_PASIDS);
    keep.acquire();
    index.dropPasid(2, 5);
    expect(iotlb.find(2, 5)).toBeUndefined(); // left, and its leaf with it
    // PASID 1029 is slot 5 of leaf 1, which reuses the freed leaf.
    const c = new RequestContext(device(2), LEAF_PASIDS + 5);
    index.load(c, entry(2), iotlb.bucket(2, LEAF_PASIDS + 5));
    expect(c.pcLeaf).toBe(leaf);
    expect(c.pcAt).toBe(a.pcAt);
    expect(c.pe?.did).toBe(2);
    expect(a.pe).toBeNull(); // its generation (0) is not the slot's
    keep.release();
  });

  it('refuses a context caching its entry through a bucket the IOTLB does not hold', () => {
    const c = new RequestContext(device(1), 4);
    expect(() => c.cachePasidEntry(entry(2), new TlbBucket(2, 4))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(c.pe).toBeNull();
  });
});
