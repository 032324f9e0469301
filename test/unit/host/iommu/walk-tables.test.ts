/**
 * The walks follow tables by page number and read an entry through PhysPort.spanPage's u32 view
 * of the region holding the whole table page (host/iommu/phys-port.ts), falling back to
 * PhysPort.load where no view holds it. These check both roads give the walk of the tables in
 * memory (VT-d spec §3.6–3.8): page numbers beyond the small-integer range (guest RAM and the
 * page-table pool above 2^44), a table in the partial last page of a region, and a region with no
 * in-process view (read by positioned I/O, as a file-backed guest RAM is).
 */
import { describe, expect, it } from 'vitest';
import { InProcessBacking, type MemoryBacking } from '../../../../src/memory/backing.js';
import { encode } from '../../../../src/vtd/layout.js';
import { FL_PTE, FL_PTE_MASK } from '../../../../src/vtd/page-table.js';
import { FaultReason } from '../../../../src/vtd/fault.js';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { HostIommu, XLATE_FAULT } from '../../../../host/iommu/index.js';
import { PhysPort } from '../../../../host/iommu/phys-port.js';
import { FlBuilder } from './helpers.js';

const RID = 0x0500;
const PASID = 9;
const MiB = 1024 * 1024;

/** A backing with no `buffer`: every access goes through readU32 / writeU32 (like positioned I/O on a file). */
function bufferless(inner: InProcessBacking): MemoryBacking {
  return {
    size: inner.size,
    path: inner.path,
    kind: 'file',
    buffer: undefined,
    read: (o, d) => inner.read(o, d),
    write: (o, s) => inner.write(o, s),
    readU32: (o) => inner.readU32(o),
    writeU32: (o, v) => inner.writeU32(o, v),
    readU64: (o) => inner.readU64(o),
    writeU64: (o, v) => inner.writeU64(o, v),
    close: () => inner.close(),
  };
}

describe('PhysPort.spanPage', () => {
  it('gives the u32 view of the region holding a whole page, with its first page and whole pages', () => {
    const mem = new HostMemory();
    const ram = new InProcessBacking(3 * 4096 + 16);
    mem.addRegion('r', 0x4000_0000, ram);
    const high = new InProcessBacking(2 * 4096);
    mem.addRegion('high', 2 ** 45, high);
    ram.writeU64(2 * 4096 + 5 * 8, 0x1234_5678_9abc_def0n);
    high.writeU64(4096 + 511 * 8, 0x0fed_cba9_8765_4321n);
    const port = new PhysPort(mem);
    port.begin();

    const u = port.spanPage(0x4000_0000 / 4096 + 2)!;
    expect(port.spanPfn).toBe(0x4000_0000 / 4096);
    expect(port.spanPages).toBe(3);
    expect(u[2 * 1024 + 5 * 2]).toBe(0x9abc_def0);
    expect(u[2 * 1024 + 5 * 2 + 1]).toBe(0x1234_5678);

    const h = port.spanPage(2 ** 33 + 1)!;
    expect(port.spanPfn).toBe(2 ** 33);
    expect(port.spanPages).toBe(2);
    expect(h[1024 + 511 * 2]).toBe(0x8765_4321);
    expect(h[1024 + 511 * 2 + 1]).toBe(0x0fed_cba9);

    // The partial last page: no view (its entries are read one by one with load).
    expect(port.spanPage(0x4000_0000 / 4096 + 3)).toBeNull();
    ram.writeU64(3 * 4096 + 8, 0x0000_0001_0000_0003n);
    expect(port.load(0x4000_0000 + 3 * 4096 + 8)).toBe(true);
    expect([port.lo, port.hi]).toEqual([3, 1]);
    expect(port.load(0x4000_0000 + 3 * 4096 + 16)).toBe(false);
    // Not backed at all.
    expect(port.spanPage(0x5000_0000 / 4096)).toBeNull();
    ram.close();
    high.close();
  });

  it('gives no view of a region without an in-process buffer', () => {
    const mem = new HostMemory();
    const inner = new InProcessBacking(4096);
    mem.addRegion('file', 0x4000_0000, bufferless(inner));
    inner.writeU64(8, 0x42n);
    const port = new PhysPort(mem);
    port.begin();
    expect(port.spanPage(0x4000_0000 / 4096)).toBeNull();
    expect(port.load(0x4000_0000 + 8)).toBe(true);
    expect(port.lo).toBe(0x42);
    inner.close();
  });
});

describe('nested walks with guest RAM and the page-table pool above 2^44', () => {
  it('translates through 4 KiB and 2 MiB leaves, sets A/D bits, and refills from the paging-structure cache', () => {
    const GUEST = 0x2000_0000_0000; // 2^45: page numbers above 2^32
    const mem = new HostMemory();
    const ram = new InProcessBacking(16 * MiB);
    mem.addRegion('guest-ram', GUEST, ram);
    const iommu = new HostIommu({ memory: mem, pool: { base: 0x3000_0000_0000 } });
    try {
      const vm = iommu.allocDomain({ name: 'vm' });
      iommu.map(vm, 0n, BigInt(GUEST), BigInt(16 * MiB), { read: true, write: true });
      iommu.addDevice({ rid: RID });
      const fl = new FlBuilder(ram, 4, 0x1000n);
      fl.map(0x7f00_0000_1000n, 0x30_0000n, '4K');
      fl.map(0x7f00_0000_2000n, 0x30_5000n, '4K');
      fl.map(0x7f00_0020_0000n, 0x80_0000n, '2M');
      iommu.bindPgtablePasid(RID, PASID, vm, { flptr: fl.root });

      const tr = (addr: bigint, write = false): number => iommu.translate({ rid: RID, pasid: PASID, addr, write });
      expect(tr(0x7f00_0000_1234n)).toBe(GUEST + 0x30_0234);
      expect(tr(0x7f00_0023_4567n, true)).toBe(GUEST + 0x83_4567);
      const A = FL_PTE_MASK.A;
      const D = FL_PTE_MASK.D;
      for (let level = 4; level >= 2; level--) expect(fl.readU64(fl.entryGpa(0x7f00_0000_1000n, level)!) & A).toBe(A);
      expect(fl.readU64(fl.entryGpa(0x7f00_0000_1000n, 1)!) & (A | D)).toBe(A);
      expect(fl.readU64(fl.entryGpa(0x7f00_0020_0000n, 2)!) & (A | D)).toBe(A | D);

      // Another page under the same level-1 table: an IOTLB miss that starts from the cached
      // level-2 entry (its table's page number) instead of the root.
      const psc0 = iommu.engine.pscHits;
      expect(tr(0x7f00_0000_2010n, true)).toBe(GUEST + 0x30_5010);
      expect(iommu.engine.pscHits).toBe(psc0 + 1);
      expect(fl.readU64(fl.entryGpa(0x7f00_0000_2000n, 1)!) & (A | D)).toBe(A | D);
      expect(tr(0x7f00_0000_3000n, false)).toBe(XLATE_FAULT);
      expect(iommu.engine.lastFault().reason).toBe(FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT);
    } finally {
      iommu.dispose();
      ram.close();
    }
  });
});

describe('first-level tables where no view holds the whole table page', () => {
  /**
   * Guest RAM at 1 GiB; the first-level tables in a second region of 3 pages and 16 bytes (GPA
   * 32 MiB up): root, level 3 and level 2 in its whole pages, the level-1 table in its partial
   * last page, whose entries 0 and 1 exist and entry 2 lies beyond the region.
   */
  function world(tables: (b: InProcessBacking) => MemoryBacking): { iommu: HostIommu; close(): void } {
    const G = 0x4000_0000;
    const T = 0x8000_0000;
    const mem = new HostMemory();
    const ram = new InProcessBacking(16 * MiB);
    const tbl = new InProcessBacking(3 * 4096 + 16);
    mem.addRegion('guest-ram', G, ram);
    mem.addRegion('fl-tables', T, tables(tbl));
    const iommu = new HostIommu({ memory: mem });
    const vm = iommu.allocDomain({ name: 'vm' });
    iommu.map(vm, 0n, BigInt(G), BigInt(16 * MiB), { read: true, write: true });
    iommu.map(vm, BigInt(32 * MiB), BigInt(T), 4n * 4096n, { read: true, write: true });
    iommu.addDevice({ rid: RID });
    const pte = (gpa: number): bigint => encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(gpa) >> 12n })[0]!;
    tbl.writeU64(0, pte(32 * MiB + 4096));
    tbl.writeU64(4096, pte(32 * MiB + 2 * 4096));
    tbl.writeU64(2 * 4096, pte(32 * MiB + 3 * 4096));
    tbl.writeU64(3 * 4096, pte(0x30_0000));
    tbl.writeU64(3 * 4096 + 8, pte(0x31_0000));
    iommu.bindPgtablePasid(RID, PASID, vm, { flptr: BigInt(32 * MiB) });
    return {
      iommu,
      close() {
        iommu.dispose();
        ram.close();
        tbl.close();
      },
    };
  }

  it.each([
    ['an in-process region with a partial last page', (b: InProcessBacking): MemoryBacking => b],
    ['a region with no in-process view', bufferless],
  ])('reads every entry through %s', (_name, tables) => {
    const w = world(tables);
    try {
      const tr = (addr: number): number => w.iommu.translate({ rid: RID, pasid: PASID, addr: BigInt(addr) });
      expect(tr(0x0123)).toBe(0x4000_0000 + 0x30_0123);
      expect(tr(0x1456)).toBe(0x4000_0000 + 0x31_0456);
      expect(tr(0x2000)).toBe(XLATE_FAULT);
      expect(w.iommu.engine.lastFault().reason).toBe(FaultReason.SFL_1_FL_ENTRY_ACCESS);
    } finally {
      w.close();
    }
  });
});
