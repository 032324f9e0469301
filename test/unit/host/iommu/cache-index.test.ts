/**
 * The indexes of the translation caches (host/iommu/tlb.ts, tlb-bucket.ts, pasid-radix.ts,
 * pasid-cache-index.ts): stale-entry purging keeps the 2 MiB region index exact, empty buckets
 * leave their store, unbinding one nested PASID drops only that PASID's cached translations
 * (attach.ts teardown); a 4 KiB entry packs into one number only when its base and access
 * classes fit (EINVAL otherwise), an entry permitting nothing is not cached; the per-DID radix
 * table takes 20-bit PASIDs only.
 */
import { describe, expect, it } from 'vitest';
import { Iotlb } from '../../../../host/iommu/tlb.js';
import { PasidRadix } from '../../../../host/iommu/pasid-radix.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const fixtures = new FixturePerTest();

describe('IOTLB bucket region index', () => {
  it('stays exact through a purge of stale entries and a full clear of a large bucket', () => {
    const t = new Iotlb(1 << 20);
    const b = t.bucket(2, 1);
    b.acquire();
    for (let v = 0; v < 4096; v++) t.insert(b, v, 1, v * 4096, 1);
    expect(b.regions.size).toBe(8);
    b.clear(); // 4096 keys: kept stale for reuse
    t.entries = 0;
    t.insert(b, 100_000, 1, 0, 1); // the map is full of stale keys: purged first
    expect(b.t4k.size).toBe(1);
    expect([...b.regions.keys()]).toEqual([Math.floor(100_000 / 512)]);
    for (let v = 0; v < 5000; v++) t.insert(b, v, 1, v * 4096, 1);
    expect(t.entries).toBe(5001);
    t.invalidatePasidPages(2, 1, 0, 511, true); // not first-level: PASID-based page flush leaves it
    expect(t.entries).toBe(5001);
    t.invalidatePages(2, 512, 1023);
    expect(t.entries).toBe(4489);
    expect(b.lookup(600)).toBeUndefined();
    expect(b.lookup(1024)?.base).toBe(1024 * 4096);
    t.invalidatePasid(2, 1); // > 4096 keys: the maps and the region index are emptied
    expect(b.t4k.size).toBe(0);
    expect(b.regions.size).toBe(0);
    expect(t.bucketCount).toBe(1); // still used by its context
    b.release();
    expect(t.bucketCount).toBe(0);
  });

  it('removes a bucket when its last entry goes and no context uses it, and refuses a second bucket for one tag', () => {
    const t = new Iotlb(1 << 20);
    const b = t.bucket(3, 7);
    b.firstLevel = true;
    b.acquire();
    t.insert(b, 42, 1, 0x1000, 1);
    b.release();
    expect(t.bucketCount).toBe(1); // holds an entry
    t.invalidatePasidPages(3, 7, 42, 42, false);
    expect(t.bucketCount).toBe(0);
    expect(t.bucketsOfDomain(3)).toBe(0);
    expect(t.find(3, 7)).toBeUndefined();
    // A bucket made while an old, unused one lies around: filling the old one would split the tag.
    const c = t.bucket(3, 7);
    c.acquire();
    expect(() => t.insert(b, 1, 1, 0, 1)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
  });
});

describe('nested unbind', () => {
  it('drops only the unbound PASID’s IOTLB entries and leaves no bucket or PASID-cache entry behind', () => {
    const fx = fixtures.make();
    const { iommu } = fx;
    const vm = iommu.allocDomain();
    iommu.map(vm, 0n, BigInt(G), 0x1000000n, { read: true, write: true });
    const fl = new FlBuilder(fx.ram, 4, 0x1000n);
    const GVA = 0x7000_0000n;
    fl.map(GVA, 0x400000n);
    iommu.addDevice({ rid: 0x18 });
    iommu.bindPgtablePasid(0x18, 3, vm, { flptr: fl.root });
    iommu.bindPgtablePasid(0x18, 4, vm, { flptr: fl.root });
    expect(iommu.translate({ rid: 0x18, pasid: 3, addr: GVA })).toBe(G + 0x400000);
    expect(iommu.translate({ rid: 0x18, pasid: 4, addr: GVA })).toBe(G + 0x400000);
    expect(iommu.stats()).toMatchObject({ iotlbBuckets: 2, pasidCacheEntries: 2 });
    // The guest edits its table without a flush: both PASIDs still hold the old translation.
    fl.writeU64(fl.entryGpa(GVA, 1)!, fl.leaf(0x500000n, '4K'));
    const before = iommu.stats().invalidations;
    iommu.unbindPgtablePasid(0x18, 3);
    const after = iommu.stats();
    expect(after.invalidations.piotlbPasid).toBe(before.piotlbPasid + 1);
    expect(after.invalidations.iotlbDomain).toBe(before.iotlbDomain);
    expect(after).toMatchObject({ iotlbBuckets: 1, pasidCacheEntries: 1, iotlbEntries: 1 });
    // PASID 4 keeps its cached translation (no domain-wide flush); PASID 3 no longer translates.
    expect(iommu.translate({ rid: 0x18, pasid: 4, addr: GVA })).toBe(G + 0x400000);
    expect(iommu.translate({ rid: 0x18, pasid: 3, addr: GVA })).toBe(-1);
    iommu.unbindPgtablePasid(0x18, 4);
    expect(iommu.stats()).toMatchObject({ iotlbBuckets: 0, pasidCacheEntries: 0, iotlbEntries: 0 });
  });

  it('after detach and device removal nothing of the device stays cached', () => {
    const fx = fixtures.make();
    const { iommu } = fx;
    const vm = iommu.allocDomain();
    iommu.map(vm, 0n, BigInt(G), 0x200000n, { read: true, write: false });
    iommu.addDevice({ rid: 0x20, ats: true });
    iommu.attachDevice(0x20, vm);
    expect(iommu.translate({ rid: 0x20, addr: 0x1000n })).toBe(G + 0x1000);
    expect(iommu.stats()).toMatchObject({ iotlbBuckets: 1, pasidCacheEntries: 1 });
    iommu.detachDevice(0x20);
    expect(iommu.stats().pasidCacheEntries).toBe(0);
    iommu.removeDevice(0x20);
    expect(iommu.stats()).toMatchObject({ iotlbBuckets: 0, pasidCacheEntries: 0 });
  });
});

describe('a page invalidated, faulted and mapped again', () => {
  it('translates again for every device sharing the (DID, PASID) tag, with and without ATS', () => {
    const fx = fixtures.make();
    const { iommu } = fx;
    const vm = iommu.allocDomain();
    iommu.map(vm, 0n, BigInt(G), 0x1000000n, { read: true, write: true });
    const fl = new FlBuilder(fx.ram, 4, 0x1000n);
    const A = 0x7f12_3456_0000n;
    const B = A + 0x1000n;
    fl.map(A, 0x400000n);
    fl.map(B, 0x401000n);
    iommu.addDevice({ rid: 0x18, ats: true, pri: true });
    iommu.addDevice({ rid: 0x20, ats: true });
    iommu.bindPgtablePasid(0x18, 1, vm, { flptr: fl.root });
    iommu.bindPgtablePasid(0x20, 1, vm, { flptr: fl.root });
    expect(iommu.translate({ rid: 0x20, pasid: 1, addr: B + 8n, write: true })).toBe(G + 0x401008);
    // The guest unmaps B and flushes it (PASID-based IOTLB page, then both device-TLBs).
    fl.unmap(B);
    iommu.invalidatePasidIotlbPages(vm.did, 1, B, 0, false);
    iommu.invalidateDevTlb(0x18, { pasid: 1, addr: B, size: 0x1000n });
    iommu.invalidateDevTlb(0x20, { pasid: 1, addr: B, size: 0x1000n });
    expect(iommu.translate({ rid: 0x20, pasid: 1, addr: B + 0x10n, noReport: true })).toBe(-1);
    expect(iommu.translate({ rid: 0x18, pasid: 1, addr: B + 0x20n, write: true, noReport: true })).toBe(-1);
    expect(iommu.lastFault().reason).toBe(0x71);
    // It maps B to a new page (no flush: not-present entries are not cached) and the retries succeed.
    fl.map(B, 0x402000n);
    expect(iommu.translate({ rid: 0x18, pasid: 1, addr: B + 0x20n, write: true })).toBe(G + 0x402020);
    expect(iommu.translate({ rid: 0x20, pasid: 1, addr: B + 0x10n })).toBe(G + 0x402010);
    expect(iommu.translate({ rid: 0x20, pasid: 1, addr: A })).toBe(G + 0x400000);
  });
});

describe('IOTLB bucket entries', () => {
  it('refuses a 4 KiB entry whose base is not a 4 KiB-aligned HPA below 2^52, and access classes outside 0..63 (EINVAL)', () => {
    const t = new Iotlb(1 << 20);
    const b = t.bucket(2, 1);
    b.acquire();
    expect(() => t.insert(b, 5, 1, 0x1001, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => t.insert(b, 5, 1, 2 ** 52, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => t.insert(b, 5, 1, 0x1000, 64)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => t.insert(b, 5, 1, 0x1000, 1.5)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(t.entries).toBe(0);
    // The largest frame and every class bit round-trip through the packed value.
    t.insert(b, 5, 1, 2 ** 52 - 4096, 63);
    expect(b.lookup(5)).toMatchObject({ base: 2 ** 52 - 4096, allow: 63, level: 1 });
  });

  it('does not cache an entry that permits nothing, and such an insert drops the live entry it replaces', () => {
    const t = new Iotlb(1 << 20);
    const b = t.bucket(2, 1);
    b.acquire();
    t.insert(b, 7, 1, 0x7000, 0);
    expect(t.entries).toBe(0);
    expect(b.lookup(7)).toBeUndefined();
    t.insert(b, 7, 1, 0x7000, 3);
    t.insert(b, 0, 2, 0x20_0000, 3);
    expect(t.entries).toBe(2);
    t.insert(b, 7, 1, 0x7000, 0);
    t.insert(b, 0, 2, 0x20_0000, 0);
    expect(t.entries).toBe(0);
    expect(b.lookup(7)).toBeUndefined();
    expect(b.lookup(100)).toBeUndefined();
  });
});

describe('IOTLB bucket epochs', () => {
  it('a whole-bucket flush makes every earlier 4 KiB entry a miss, also after the 7-bit epoch wraps (300 flushes)', () => {
    const t = new Iotlb(1 << 20);
    const b = t.bucket(2, 1);
    b.acquire();
    t.insert(b, 7, 1, 0x7000, 3);
    for (let i = 0; i < 300; i++) {
      t.invalidatePasid(2, 1);
      expect(b.lookup(7)).toBeUndefined();
      expect(b.lookup(1000 + i - 1)).toBeUndefined();
      t.insert(b, 1000 + i, 1, 0x1000 * (i + 1), 1);
      expect(b.lookup(1000 + i)?.base).toBe(0x1000 * (i + 1));
      expect(t.entries).toBe(1);
    }
    expect([...b.liveEntries()].map(([k]) => k)).toEqual([1299]);
  });

  it('keeps the keys and region lists of a small bucket through the epoch wrap (refills allocate nothing), with every earlier entry a miss', () => {
    const t = new Iotlb(1 << 20);
    const b = t.bucket(2, 1);
    b.acquire();
    for (let v = 0; v < 64; v++) t.insert(b, v, 1, 0x1000 * (v + 1), 1);
    const table = b.t4k.data;
    const region = b.regions.get(0);
    for (let i = 0; i < 130; i++) {
      t.invalidatePasid(2, 1);
      for (let v = 0; v < 64; v++) expect(b.lookup(v)).toBeUndefined();
      t.insert(b, i % 64, 1, 0x1000 * (i + 7), 1);
      expect(b.lookup(i % 64)?.base).toBe(0x1000 * (i + 7));
    }
    expect(b.t4k.data).toBe(table);
    expect(b.t4k.size).toBe(64);
    expect(b.regions.get(0)).toBe(region);
    expect(region).toHaveLength(64);
    expect([...b.liveEntries()].map(([k]) => k)).toEqual([129 % 64]);
  });
});

describe('PASID radix table', () => {
  it('refuses a key that is not a 20-bit PASID (EINVAL) and frees emptied leaves', () => {
    const r = new PasidRadix<string>();
    expect(() => r.set(1 << 20, 'x')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => r.set(-1, 'x')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => r.set(1.5, 'x')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    r.set(5, 'a');
    r.set(2048, 'b');
    r.set((1 << 20) - 1, 'c');
    expect([r.get(5), r.get(2048), r.get((1 << 20) - 1), r.get(6), r.size]).toEqual(['a', 'b', 'c', undefined, 3]);
    expect(r.values()).toEqual(['a', 'b', 'c']);
    expect(r.delete(2048)).toBe(true);
    expect(r.delete(2048)).toBe(false);
    expect(r.size).toBe(2);
    expect(r.get(2048)).toBeUndefined();
  });
});
