/**
 * The caches behave as hardware's: after a table change without a flush the old translation is
 * still served; an invalidation that does not match (other DID, PASID, address or device) leaves
 * it; the matching one removes it.
 */
import { describe, expect, it } from 'vitest';
import { FL_PTE_MASK } from '../../../../src/vtd/page-table.js';
import type { HostIommu } from '../../../../host/iommu/index.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const RID = 0x0018;
const PASID = 3;
const GVA = 0x7000_0000n;

const fixtures = new FixturePerTest();

interface World {
  iommu: HostIommu;
  fl: FlBuilder;
  did: number;
}

/** VM second level GPA [0, 16 MiB) → G (2 MiB leaves); FL table at GPA 0x1000; GVA → GPA 0x400000. */
function world(dev: { ats?: boolean; atsEnabled?: boolean } = {}): World {
  const fx = fixtures.make();
  const { iommu } = fx;
  const vm = iommu.allocDomain();
  iommu.map(vm, 0n, BigInt(G), 0x1000000n, { read: true, write: true });
  const fl = new FlBuilder(fx.ram, 4, 0x1000n);
  fl.map(GVA, 0x400000n);
  iommu.addDevice({ rid: RID, ats: dev.ats === true, ...(dev.atsEnabled === undefined ? {} : { atsEnabled: dev.atsEnabled }) });
  iommu.bindPgtablePasid(RID, PASID, vm, { flptr: fl.root });
  return { iommu, fl, did: vm.did };
}

/** Translate a read; `pasid` null = a request without PASID. */
function tr(w: World, addr: bigint = GVA, rid = RID, pasid: number | null = PASID): number {
  return w.iommu.translate(pasid === null ? { rid, addr } : { rid, pasid, addr });
}

/** Point GVA's leaf at another GPA, as a guest editing its page table does (no flush). */
function remap(w: World, gva: bigint, gpa: bigint): void {
  w.fl.writeU64(w.fl.entryGpa(gva, 1)!, w.fl.leaf(gpa, '4K'));
}

/**
 * An ATS world after GVA was translated once, remapped to GPA 0x500000 and its PASID's IOTLB
 * entries invalidated: only the device-TLB (while ATS is enabled) still holds the old page.
 */
function remappedAfterUse(): World {
  const w = world({ ats: true });
  expect(tr(w)).toBe(G + 0x400000);
  remap(w, GVA, 0x500000n);
  w.iommu.invalidatePasidIotlb(w.did, PASID);
  return w;
}

describe('PASID-based IOTLB invalidation', () => {
  it('page-selective: stale until the matching DID + PASID + address is invalidated', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    remap(w, GVA, 0x500000n);
    expect(tr(w)).toBe(G + 0x400000);
    w.iommu.invalidatePasidIotlbPages(w.did, PASID + 1, GVA, 0); // other PASID
    w.iommu.invalidatePasidIotlbPages(w.did + 1, PASID, GVA, 0); // other DID
    w.iommu.invalidatePasidIotlbPages(w.did, PASID, GVA + 0x1000n, 0); // other page
    expect(tr(w)).toBe(G + 0x400000);
    w.iommu.invalidatePasidIotlbPages(w.did, PASID, GVA - 0x1000n, 0); // the page below
    expect(tr(w)).toBe(G + 0x400000);
    w.iommu.invalidatePasidIotlbPages(w.did, PASID, GVA + 0x1000n, 1); // 8 KiB block holding GVA (low bits ignored)
    expect(tr(w)).toBe(G + 0x500000);
  });

  it('all-within-PASID: drops every entry of the PASID and only of that PASID', () => {
    const w = world();
    w.fl.map(0x7000_1000n, 0x401000n);
    w.iommu.bindPgtablePasid(RID, PASID + 1, w.did, { flptr: w.fl.root });
    expect(tr(w)).toBe(G + 0x400000);
    expect(tr(w, GVA, RID, PASID + 1)).toBe(G + 0x400000);
    remap(w, GVA, 0x500000n);
    w.iommu.invalidatePasidIotlb(w.did, PASID + 1);
    expect(tr(w)).toBe(G + 0x400000);
    expect(tr(w, GVA, RID, PASID + 1)).toBe(G + 0x500000);
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    expect(tr(w)).toBe(G + 0x500000);
  });

  it('drops a 2 MiB entry when any 4 KiB page inside it is invalidated', () => {
    const w = world();
    w.fl.map(0x8000_0000n, 0x600000n, '2M');
    expect(tr(w, 0x8000_0000n)).toBe(G + 0x600000);
    w.fl.writeU64(w.fl.entryGpa(0x8000_0000n, 2)!, w.fl.leaf(0x800000n, '2M'));
    expect(tr(w, 0x8010_0000n)).toBe(G + 0x700000); // served by the cached 2 MiB entry
    w.iommu.invalidatePasidIotlbPages(w.did, PASID, 0x8000_0000n + 0x1f_f000n, 0);
    expect(tr(w, 0x8010_0000n)).toBe(G + 0x900000);
  });

  it('keeps paging-structure caches with the leaf-only hint (IH = 1), drops them without it', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    // Move GVA's page table: a new PT whose entry points elsewhere, installed in the PDE.
    const pt = w.fl.allocTable();
    w.fl.writeU64(pt + BigInt(Number((GVA >> 12n) & 511n) * 8), w.fl.leaf(0x500000n, '4K'));
    const pde = w.fl.entryGpa(GVA, 2)!;
    w.fl.writeU64(pde, (w.fl.readU64(pde) & 0xfffn) | pt);
    w.iommu.invalidatePasidIotlbPages(w.did, PASID, GVA, 0, true);
    expect(tr(w)).toBe(G + 0x400000); // cached PDE still points at the old PT
    w.iommu.invalidatePasidIotlbPages(w.did, PASID, GVA, 0, false);
    expect(tr(w)).toBe(G + 0x500000);
  });

  it('does not touch second-level-only entries (VT-d spec §6.5.2: PASID-based-IOTLB PSI is for first-level)', () => {
    const w = world();
    w.iommu.attachPasid(RID, 9, w.did);
    expect(tr(w, 0x400000n, RID, 9)).toBe(G + 0x400000);
    expect(w.iommu.unmap(w.did, 0x400000n, 0x200000n, { flush: false })).toBe(0x200000n);
    w.iommu.invalidatePasidIotlbPages(w.did, 9, 0x400000n, 0);
    expect(tr(w, 0x400000n, RID, 9)).toBe(G + 0x400000);
    w.iommu.invalidatePasidIotlb(w.did, 9);
    expect(tr(w, 0x400000n, RID, 9)).toBe(-1);
  });
});

describe('IOTLB invalidation', () => {
  it('page-selective within domain: stale second-level entries until the matching range', () => {
    const w = world();
    w.iommu.attachDevice(RID, w.did);
    expect(tr(w, 0x812345n, RID, null)).toBe(G + 0x812345);
    expect(w.iommu.unmap(w.did, 0x800000n, 0x200000n, { flush: false })).toBe(0x200000n);
    expect(tr(w, 0x812345n, RID, null)).toBe(G + 0x812345);
    w.iommu.invalidateIotlbPages(w.did, 0xa00000n, 9); // the next 2 MiB
    w.iommu.invalidateIotlbPages(w.did + 1, 0x800000n, 9); // other DID
    expect(tr(w, 0x812345n, RID, null)).toBe(G + 0x812345);
    w.iommu.invalidateIotlbPages(w.did, 0x812000n, 0);
    expect(tr(w, 0x812345n, RID, null)).toBe(-1);
    expect(w.iommu.lastFault().reason).toBe(0x79);
  });

  it('page-selective within domain drops the nested entries of the DID whatever their address', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    remap(w, GVA, 0x500000n);
    w.iommu.invalidateIotlbPages(w.did, 0xf00000n, 0);
    expect(tr(w)).toBe(G + 0x500000);
  });

  it('domain-selective and global', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    remap(w, GVA, 0x500000n);
    w.iommu.invalidateIotlbDomain(w.did + 1);
    expect(tr(w)).toBe(G + 0x400000);
    w.iommu.invalidateIotlbDomain(w.did);
    expect(tr(w)).toBe(G + 0x500000);
    remap(w, GVA, 0x600000n);
    expect(tr(w)).toBe(G + 0x500000);
    w.iommu.invalidateIotlbGlobal();
    expect(tr(w)).toBe(G + 0x600000);
  });

  it('unmap flushes by default, so the mapping is gone at once', () => {
    const w = world();
    w.iommu.attachDevice(RID, w.did);
    expect(tr(w, 0x812345n, RID, null)).toBe(G + 0x812345);
    w.iommu.unmap(w.did, 0x800000n, 0x200000n);
    expect(tr(w, 0x812345n, RID, null)).toBe(-1);
  });

  it('serves write hits only once the dirty bit is set', () => {
    const w = world();
    const leaf = w.fl.entryGpa(GVA, 1)!;
    expect(tr(w)).toBe(G + 0x400000);
    expect(w.fl.readU64(leaf) & FL_PTE_MASK.D).toBe(0n);
    expect(w.iommu.translate({ rid: RID, pasid: PASID, addr: GVA, write: true })).toBe(G + 0x400000);
    expect(w.fl.readU64(leaf) & FL_PTE_MASK.D).toBe(FL_PTE_MASK.D);
  });
});

describe('PASID-cache invalidation', () => {
  it('keeps using the cached PASID entry until a matching PASID-cache invalidation', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    // A second FL table where GVA maps to 0x500000, swapped into the host PASID entry by hand.
    const other = new FlBuilder(fixtures.current.ram, 4, 0x80000n);
    other.map(GVA, 0x500000n);
    const at = w.iommu.device(RID).pasidTable.entryHpa(PASID)! + 16; // qw2: FLPTR
    fixtures.current.mem.writeU64(at, (fixtures.current.mem.readU64(at) & 0xfffn) | other.root);
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    expect(tr(w)).toBe(G + 0x400000); // cached entry still has the old FLPTR
    w.iommu.invalidatePasidCache(w.did, PASID + 1);
    w.iommu.invalidatePasidCache(w.did + 1, PASID);
    w.iommu.invalidatePasidCacheDomain(w.did + 1);
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    expect(tr(w)).toBe(G + 0x400000);
    // As Linux does: PASID-cache invalidation, then the IOTLB for the PASID.
    w.iommu.invalidatePasidCache(w.did, PASID);
    expect(tr(w)).toBe(G + 0x400000); // the IOTLB still holds the translation made with the old entry
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    expect(tr(w)).toBe(G + 0x500000);
  });

  it('a PASID-selective invalidation touches no context: the next request re-reads the entry even on an IOTLB / device-TLB hit, and the holds stay exact', () => {
    for (const ats of [false, true]) {
      const w = world({ ats, atsEnabled: ats });
      expect(tr(w)).toBe(G + 0x400000);
      const eng = w.iommu.engine;
      const ctx = w.iommu.device(RID).contexts.get(PASID)!;
      expect(ctx.pe).not.toBeNull();
      expect(w.iommu.stats().pasidCacheEntries).toBe(1);
      const reads = eng.pasidCacheMisses;
      w.iommu.invalidatePasidCache(w.did, PASID);
      expect(w.iommu.stats().pasidCacheEntries).toBe(0);
      expect(ctx.pe).toBeNull();
      w.iommu.invalidatePasidCache(w.did, PASID); // nothing listed: no second release
      expect(tr(w)).toBe(G + 0x400000);
      expect(eng.pasidCacheMisses).toBe(reads + 1);
      expect(ctx.pe).not.toBeNull();
      expect(w.iommu.stats().pasidCacheEntries).toBe(1);
      w.iommu.invalidatePasidCache(w.did, PASID);
      w.iommu.unbindPgtablePasid(RID, PASID);
      expect(w.iommu.cacheCounts()).toMatchObject({ iotlbBuckets: 0, iotlbEntries: 0, pasidCacheEntries: 0 });
    }
  });

  it('domain-selective and global PASID-cache invalidations', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    const at = w.iommu.device(RID).pasidTable.entryHpa(PASID)!;
    fixtures.current.mem.writeU64(at, fixtures.current.mem.readU64(at) | (1n << 10n)); // reserved bit: the entry becomes invalid
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    expect(tr(w)).toBe(G + 0x400000);
    w.iommu.invalidatePasidCacheDomain(w.did);
    expect(tr(w)).toBe(-1);
    expect(w.iommu.lastFault().reason).toBe(0x5a);
    fixtures.current.mem.writeU64(at, fixtures.current.mem.readU64(at) & ~(1n << 10n));
    expect(tr(w)).toBe(G + 0x400000); // invalid entries are not cached: re-read at once
    w.iommu.invalidatePasidCacheGlobal();
    expect(tr(w)).toBe(G + 0x400000);
  });
});

describe('device-TLB', () => {
  it('an ATS device keeps its translation until its device-TLB is invalidated', () => {
    const w = remappedAfterUse();
    expect(tr(w)).toBe(G + 0x400000); // served by the device-TLB
    w.iommu.invalidateDevTlb(RID, { pasid: PASID + 1 });
    w.iommu.invalidateDevTlb(RID); // requests without PASID only
    w.iommu.invalidateDevTlb(RID, { pasid: PASID, addr: GVA + 0x2000n, size: 0x2000n });
    expect(tr(w)).toBe(G + 0x400000);
    w.iommu.invalidateDevTlb(RID, { pasid: PASID, addr: GVA, size: 0x1000n });
    expect(tr(w)).toBe(G + 0x500000);
    expect(w.iommu.stats().devTlbHits).toBeGreaterThan(0);
  });

  it('all-PASIDs device-TLB invalidation', () => {
    const w = remappedAfterUse();
    w.iommu.invalidateDevTlb(RID, { allPasids: true });
    expect(tr(w)).toBe(G + 0x500000);
  });
});

describe('ATS Enable at run time', () => {
  it('ATS capable but disabled: no device-TLB, so the IOTLB invalidation alone ends a stale translation', () => {
    const w = world({ ats: true, atsEnabled: false });
    expect(w.iommu.device(RID).atsEnabled).toBe(false);
    expect(tr(w)).toBe(G + 0x400000);
    expect(tr(w)).toBe(G + 0x400000);
    remap(w, GVA, 0x500000n);
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    expect(tr(w)).toBe(G + 0x500000);
    expect(w.iommu.stats().devTlbHits).toBe(0);
  });

  it('disabling drops the device-TLB (no invalidation counted); enabling again fills it and it is stale until flushed', () => {
    const w = remappedAfterUse();
    expect(tr(w)).toBe(G + 0x400000); // the device-TLB still holds the old page
    const inv = w.iommu.stats().invalidations;
    w.iommu.setAtsEnabled(RID, false);
    expect(w.iommu.stats().invalidations).toEqual(inv);
    expect(tr(w)).toBe(G + 0x500000);
    w.iommu.setAtsEnabled(RID, true);
    expect(tr(w)).toBe(G + 0x500000); // fills the device-TLB
    remap(w, GVA, 0x600000n);
    w.iommu.invalidatePasidIotlb(w.did, PASID);
    const hits = w.iommu.stats().devTlbHits;
    expect(tr(w)).toBe(G + 0x500000);
    expect(w.iommu.stats().devTlbHits).toBe(hits + 1);
    w.iommu.invalidateDevTlb(RID, { pasid: PASID });
    expect(tr(w)).toBe(G + 0x600000);
  });

  it('route teardown flushes the device-TLB only while ATS is enabled', () => {
    const w = world({ ats: true, atsEnabled: false });
    tr(w);
    let before = w.iommu.stats().invalidations.devTlb;
    w.iommu.unbindPgtablePasid(RID, PASID);
    expect(w.iommu.stats().invalidations.devTlb).toBe(before);
    w.iommu.setAtsEnabled(RID, true);
    w.iommu.bindPgtablePasid(RID, PASID, w.did, { flptr: w.fl.root });
    tr(w);
    before = w.iommu.stats().invalidations.devTlb;
    w.iommu.unbindPgtablePasid(RID, PASID);
    expect(w.iommu.stats().invalidations.devTlb).toBe(before + 1);
  });

  it('refuses ATS on a device without the capability, and unknown devices, changing nothing', () => {
    const w = world();
    expect(() => w.iommu.setAtsEnabled(RID, true)).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }));
    expect(w.iommu.device(RID).atsEnabled).toBe(false);
    w.iommu.setAtsEnabled(RID, false); // already off: nothing to do
    expect(() => w.iommu.setAtsEnabled(0x99, false)).toThrow(expect.objectContaining({ code: 'ENODEV' }));
    expect(() => w.iommu.addDevice({ rid: 0x30, atsEnabled: true })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => w.iommu.device(0x30)).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  });
});

describe('per-device IOTLB statistics', () => {
  it('counts each device’s hits and misses, and they add up to the IOMMU’s', () => {
    const w = world();
    w.iommu.addDevice({ rid: 0x20 });
    w.iommu.bindPgtablePasid(0x20, PASID, w.did, { flptr: w.fl.root });
    const s0 = w.iommu.stats();
    tr(w); // miss (walk)
    tr(w); // hit
    tr(w); // hit
    tr(w, GVA, 0x20); // hit: same DID and PASID share IOTLB entries
    tr(w, GVA + 0x1000n, 0x20); // miss: not mapped, faults after the walk
    const a = w.iommu.device(RID);
    const b = w.iommu.device(0x20);
    expect([a.iotlbHits, a.iotlbMisses]).toEqual([2, 1]);
    expect([b.iotlbHits, b.iotlbMisses]).toEqual([1, 1]);
    const s1 = w.iommu.stats();
    expect(s1.hits - s0.hits).toBe(a.iotlbHits + b.iotlbHits);
    expect(s1.misses - s0.misses).toBe(a.iotlbMisses + b.iotlbMisses);
  });
});

describe('generic invalidation requests', () => {
  it('dispatches each cache and granularity, and rejects malformed ones with EINVAL', () => {
    const w = world();
    expect(tr(w)).toBe(G + 0x400000);
    remap(w, GVA, 0x500000n);
    w.iommu.invalidate({ cache: 'piotlb', granularity: 'page', did: w.did, pasid: PASID, addr: GVA, am: 0 });
    expect(tr(w)).toBe(G + 0x500000);
    const before = w.iommu.stats().invalidations;
    expect(() => w.iommu.invalidate({ cache: 'piotlb', granularity: 'page', did: w.did, pasid: PASID, addr: GVA, am: 19 })).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    expect(() => w.iommu.invalidate({ cache: 'iotlb', granularity: 'domain', did: 0x10000 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => w.iommu.invalidate({ cache: 'pasid', granularity: 'bogus' } as never)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(w.iommu.stats().invalidations).toEqual(before);
  });
});
