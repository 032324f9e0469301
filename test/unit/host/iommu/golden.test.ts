/**
 * Golden translations: hand-built first-level tables (4- and 5-level, 4 KiB / 2 MiB / 1 GiB
 * leaves) nested over a 4-level second level with 4 KiB, 2 MiB and 1 GiB leaves; every expected
 * HPA below is worked out by hand from the two mappings.
 */
import { describe, expect, it } from 'vitest';
import { FL_PTE_MASK, SL_PTE_MASK } from '../../../../src/vtd/page-table.js';
import { XLATE_FAULT } from '../../../../host/iommu/index.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const RID = 0x0300; // 03:00.0
const PASID = 0x42;

const fixtures = new FixturePerTest();

/**
 * Second level of the VM (GPA → HPA):
 *   GPA [0, 8 MiB)     → HPA G + 0x2801000 + GPA            (4 KiB leaves: HPA not 2 MiB aligned)
 *   GPA [8, 16 MiB)    → HPA G + 0x200000 + (GPA − 8 MiB)   (2 MiB leaves)
 *   GPA [1 GiB, 2 GiB) → HPA 0x8000_0000 + (GPA − 1 GiB)    (one 1 GiB leaf, never read)
 * First-level tables live in guest RAM from GPA 0x1000 (root) upward.
 */
function setup(levels: 4 | 5): { fl: FlBuilder; did: number } {
  const fx = fixtures.make();
  const { iommu } = fx;
  const vm = iommu.allocDomain({ name: 'vm' });
  iommu.map(vm, 0n, BigInt(G + 0x2801000), 0x800000n, { read: true, write: true });
  iommu.map(vm, 0x800000n, BigInt(G + 0x200000), 0x800000n, { read: true, write: true });
  iommu.map(vm, 0x4000_0000n, 0x8000_0000n, 0x4000_0000n, { read: true, write: true });
  const toOffset = (gpa: bigint): number => {
    if (gpa < 0x800000n) return 0x2801000 + Number(gpa);
    if (gpa < 0x1000000n) return 0x200000 + Number(gpa) - 0x800000;
    throw new Error(`GPA 0x${gpa.toString(16)} is not backed in this test`);
  };
  const fl = new FlBuilder(fx.ram, levels, 0x1000n, toOffset);
  iommu.addDevice({ rid: RID });
  return { fl, did: vm.did };
}

function tr(addr: bigint, more: { write?: boolean; priv?: boolean } = {}): number {
  return fixtures.current.iommu.translate({ rid: RID, pasid: PASID, addr, ...more });
}

describe('second-level mapping picks the largest page that fits', () => {
  it('maps 4 KiB, 2 MiB and 1 GiB leaves as the alignment allows', () => {
    setup(4);
    const { iommu } = fixtures.current;
    const d = iommu.listDomains().find((x) => x.name === 'vm')!;
    expect(d.table!.lookup(0x5000)).toMatchObject({ hpa: G + 0x2806000, pageBytes: 4096 });
    expect(d.table!.lookup(0x912345)).toMatchObject({ hpa: G + 0x312345, pageBytes: 2 ** 21 });
    expect(d.table!.lookup(0x4123_4567)).toMatchObject({ hpa: 0x8123_4567, pageBytes: 2 ** 30 });
  });
});

describe('nested translation, 4-level first level over 4-level second level', () => {
  it('translates GVAs through 4 KiB, 2 MiB and 1 GiB first-level leaves', () => {
    const { fl, did } = setup(4);
    fl.map(0x7f00_0000_1000n, 0x300000n, '4K'); // → SL 4 KiB leaf
    fl.map(0x7f00_0020_0000n, 0x800000n, '2M'); // → SL 2 MiB leaf
    fl.map(0x7f00_0040_0000n, 0x400000n, '2M'); // → SL 4 KiB leaves
    fl.map(0x7f00_4000_0000n, 0x4000_0000n, '1G'); // → SL 1 GiB leaf
    fixtures.current.iommu.bindPgtablePasid(RID, PASID, did, { flptr: fl.root });

    // 0x7f00_0000_1abc → GPA 0x300abc → HPA G + 0x2801000 + 0x300abc
    expect(tr(0x7f00_0000_1abcn)).toBe(G + 0x2b01abc);
    // 0x7f00_0021_2345 → GPA 0x812345 → HPA G + 0x200000 + 0x12345
    expect(tr(0x7f00_0021_2345n)).toBe(G + 0x212345);
    // 0x7f00_0040_5123 → GPA 0x405123 → HPA G + 0x2801000 + 0x405123
    expect(tr(0x7f00_0040_5123n)).toBe(G + 0x2c06123);
    // 0x7f00_5234_5678 → GPA 0x5234_5678 → HPA 0x8000_0000 + 0x1234_5678
    expect(tr(0x7f00_5234_5678n)).toBe(0x9234_5678);
    // An unmapped GVA in a present table faults, not present (0x71).
    expect(tr(0x7f00_0000_2000n)).toBe(XLATE_FAULT);
    expect(fixtures.current.iommu.lastFault()).toMatchObject({ reason: 0x71, addr: 0x7f00_0000_2000n, pasid: PASID, rid: RID });
  });

  it('sets A on every first-level entry used and D on the leaf of a write', () => {
    const { fl, did } = setup(4);
    fl.map(0x7f00_0000_1000n, 0x300000n, '4K');
    fixtures.current.iommu.bindPgtablePasid(RID, PASID, did, { flptr: fl.root });
    const leaf = fl.entryGpa(0x7f00_0000_1000n, 1)!;
    const pml4e = fl.entryGpa(0x7f00_0000_1000n, 4)!;
    expect(tr(0x7f00_0000_1000n)).toBe(G + 0x2b01000);
    expect(fl.readU64(leaf) & FL_PTE_MASK.A).toBe(FL_PTE_MASK.A);
    expect(fl.readU64(leaf) & FL_PTE_MASK.D).toBe(0n);
    expect(fl.readU64(pml4e) & FL_PTE_MASK.A).toBe(FL_PTE_MASK.A);
    expect(tr(0x7f00_0000_1008n, { write: true })).toBe(G + 0x2b01008);
    expect(fl.readU64(leaf) & FL_PTE_MASK.D).toBe(FL_PTE_MASK.D);
  });

  it('sets second-level A/D when the parent domain tracks dirty pages (SLADE)', () => {
    const fx = fixtures.make();
    const { iommu } = fx;
    const vm = iommu.allocDomain({ dirtyTracking: true });
    iommu.map(vm, 0n, BigInt(G), 0x100000n, { read: true, write: true });
    iommu.addDevice({ rid: RID });
    const fl = new FlBuilder(fx.ram, 4, 0x1000n);
    fl.map(0x1000n, 0x80000n);
    iommu.bindPgtablePasid(RID, PASID, vm, { flptr: fl.root });
    const slLeafOf = (gpa: number): bigint => {
      // Walk the domain's second level by hand to find the leaf entry of `gpa`.
      let tbl = vm.table!.root;
      for (let l = 4; l >= 1; l--) {
        const at = tbl + (Math.floor(gpa / 2 ** (12 + 9 * (l - 1))) % 512) * 8;
        const e = fixtures.current.mem.readU64(at);
        if (l === 1) return e;
        tbl = Number(e & 0x000ffffffffff000n);
      }
      throw new Error('unreachable');
    };
    expect(tr(0x1000n)).toBe(G + 0x80000);
    expect(slLeafOf(0x80000) & SL_PTE_MASK.A).toBe(SL_PTE_MASK.A);
    expect(slLeafOf(0x80000) & SL_PTE_MASK.D).toBe(0n);
    expect(tr(0x1000n, { write: true })).toBe(G + 0x80000);
    expect(slLeafOf(0x80000) & SL_PTE_MASK.D).toBe(SL_PTE_MASK.D);
    // The FL leaf's table page was written (A/D), so its SL leaf is dirty too.
    expect(slLeafOf(Number(fl.entryGpa(0x1000n, 1)! & ~0xfffn)) & SL_PTE_MASK.D).toBe(SL_PTE_MASK.D);
  });

  it('serves a whole 2 MiB combined page from one IOTLB entry', () => {
    const { fl, did } = setup(4);
    fl.map(0x7f00_0020_0000n, 0x800000n, '2M');
    fixtures.current.iommu.bindPgtablePasid(RID, PASID, did, { flptr: fl.root });
    expect(tr(0x7f00_0020_0000n)).toBe(G + 0x200000);
    const walks = fixtures.current.iommu.stats().walks;
    expect(tr(0x7f00_003f_fff8n)).toBe(G + 0x3ffff8);
    expect(tr(0x7f00_0030_0000n)).toBe(G + 0x300000);
    expect(fixtures.current.iommu.stats().walks).toBe(walks);
  });
});

describe('nested translation, 5-level first level', () => {
  it('translates addresses above 2^48 that a 4-level table cannot hold', () => {
    const { fl, did } = setup(5);
    fl.map(0x00ab_cdef_0000_1000n, 0x300000n, '4K');
    fl.map(0x0001_0000_0020_0000n, 0x800000n, '2M');
    fl.map(0x0080_0000_4000_0000n, 0x4000_0000n, '1G');
    fixtures.current.iommu.bindPgtablePasid(RID, PASID, did, { flptr: fl.root, levels: 5 });
    expect(tr(0x00ab_cdef_0000_1234n)).toBe(G + 0x2b01234);
    expect(tr(0x0001_0000_0021_0000n)).toBe(G + 0x210000);
    expect(tr(0x0080_0000_4fff_fff0n)).toBe(0x8fff_fff0);
    // Bit 56 is the sign bit of a 57-bit address: 0x0100_… is not canonical.
    expect(tr(0x0100_0000_4fff_fff0n)).toBe(XLATE_FAULT);
    expect(fixtures.current.iommu.lastFault().reason).toBe(0x80);
  });

  it('translates supervisor requests to upper-half canonical addresses with SRE', () => {
    const { fl, did } = setup(5);
    fl.map(0xff00_0000_0000_3000n, 0x300000n, '4K', { us: false });
    fixtures.current.iommu.bindPgtablePasid(RID, PASID, did, { flptr: fl.root, levels: 5, sre: true });
    expect(tr(0xff00_0000_0000_3010n, { priv: true })).toBe(G + 0x2b01010);
    // A user request to the supervisor page faults with 0x81.
    expect(tr(0xff00_0000_0000_3010n)).toBe(XLATE_FAULT);
    expect(fixtures.current.iommu.lastFault().reason).toBe(0x81);
  });

  it('is the same table a 4-level binding rejects as non-canonical', () => {
    const { fl, did } = setup(4);
    fixtures.current.iommu.bindPgtablePasid(RID, PASID, did, { flptr: fl.root, levels: 4 });
    expect(tr(0x0001_0000_0020_0000n)).toBe(XLATE_FAULT);
    expect(fixtures.current.iommu.lastFault().reason).toBe(0x80);
  });
});

describe('requests without PASID and pass-through', () => {
  it('uses the RID default domain (second level only) for requests without PASID', () => {
    setup(4);
    const { iommu } = fixtures.current;
    const vm = iommu.listDomains().find((x) => x.name === 'vm')!;
    iommu.attachDevice(RID, vm);
    expect(iommu.translate({ rid: RID, addr: 0x812345n })).toBe(G + 0x212345);
    expect(iommu.translate({ rid: RID, addr: 0x4000_1000n, write: true })).toBe(0x8000_1000);
  });

  it('passes addresses through unchanged for the identity domain', () => {
    setup(4);
    const { iommu } = fixtures.current;
    iommu.attachPasid(RID, 9, iommu.identityDomain);
    expect(iommu.translate({ rid: RID, pasid: 9, addr: 0x1234_5678n, write: true })).toBe(0x1234_5678);
  });
});
