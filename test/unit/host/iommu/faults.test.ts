/**
 * Every scalable-mode fault reason the host IOMMU reports (0x50–0x5d, 0x70–0x7b, 0x80–0x87,
 * 0x91, plus the context faults 0x41/0x45/0x46), each produced by building its cause: a
 * corrupted PASID directory or entry, a bad first- or second-level entry, a permission the
 * request lacks. The fault record carries the address, PASID and request type.
 */
import { describe, expect, it } from 'vitest';
import { HostIommu, XLATE_FAULT, type IommuFault, type IommuFaultEvent, type TranslationRequest } from '../../../../host/iommu/index.js';
import { FL_PTE_MASK } from '../../../../src/vtd/page-table.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const RID = 0x0010;
const PASID = 1;
const GVA = 0x1000_0000n; // user data page
const GVA_RO = 0x1000_1000n; // read-only user page
const GVA_SUP = 0x1000_2000n; // supervisor page
const GVA_XD = 0x1000_3000n; // execute-disabled page
const UNBACKED = 0x20_0000_0000; // an HPA no region backs (below the 48-bit HAW)

const fixtures = new FixturePerTest();

interface World {
  iommu: HostIommu;
  fl: FlBuilder;
  vmDid: number;
  faults: IommuFault[];
}

/**
 * The VM's second level: GPA [0, 2 MiB) → HPA G with 4 KiB leaves (so single FL table pages can
 * get their own SL permissions), [2, 16 MiB) → G + 2 MiB with 2 MiB leaves. FL root at GPA
 * 0x1000; data pages at GPA 0x400000.. .
 */
function world(opts: { slLevels?: 3 | 4; bind?: Record<string, unknown> | false; slTablePerm?: { gpa: number; read: boolean; write: boolean } } = {}): World {
  const fx = fixtures.make();
  const { iommu } = fx;
  const vm = iommu.allocDomain({ levels: opts.slLevels ?? 4 });
  const p = opts.slTablePerm;
  for (let gpa = 0; gpa < 0x200000; gpa += 0x1000) {
    const prot = p !== undefined && p.gpa === gpa ? { read: p.read, write: p.write } : { read: true, write: true };
    iommu.map(vm, BigInt(gpa), BigInt(G + gpa), 0x1000n, prot);
  }
  iommu.map(vm, 0x200000n, BigInt(G + 0x200000), 0xe00000n, { read: true, write: true });
  const fl = new FlBuilder(fx.ram, 4, 0x1000n);
  fl.map(GVA, 0x400000n);
  fl.map(GVA_RO, 0x401000n, '4K', { rw: false });
  fl.map(GVA_SUP, 0x402000n, '4K', { us: false });
  fl.map(GVA_XD, 0x403000n, '4K', { xd: true });
  iommu.addDevice({ rid: RID, pasidBits: 20 });
  const faults: IommuFault[] = [];
  iommu.registerFaultHandler(RID, (ev: IommuFaultEvent) => {
    if (ev.kind === 'fault') faults.push(ev.fault);
  });
  if (opts.bind !== false) iommu.bindPgtablePasid(RID, PASID, vm, { flptr: fl.root, ...(opts.bind ?? {}) });
  return { iommu, fl, vmDid: vm.did, faults };
}

/** Translate, expect a fault, return the reported record. */
function faultOf(w: World, req: Partial<TranslationRequest> & { addr: bigint }): IommuFault {
  const r: TranslationRequest = { rid: RID, pasid: PASID, ...req };
  expect(w.iommu.translate(r)).toBe(XLATE_FAULT);
  return w.iommu.lastFault();
}

function pasidEntryHpa(w: World, pasid = PASID): number {
  return w.iommu.device(RID).pasidTable.entryHpa(pasid)!;
}

function orU64(hpa: number, bits: bigint): void {
  fixtures.current.mem.writeU64(hpa, fixtures.current.mem.readU64(hpa) | bits);
}

/** HPA of the second-level entry at `level` for `gpa` in the VM's table. */
function slEntryHpa(w: World, gpa: number, level: number): number {
  const d = w.iommu.domain(w.vmDid);
  let tbl = d.table!.root;
  for (let l = d.table!.levels; ; l--) {
    const at = tbl + (Math.floor(gpa / 2 ** (12 + 9 * (l - 1))) % 512) * 8;
    if (l === level) return at;
    tbl = Number(fixtures.current.mem.readU64(at) & 0x000ffffffffff000n);
  }
}

describe('context faults', () => {
  it('0x41 for an unknown RID, 0x45 for a PASID on a device without PASID, 0x46 beyond its width', () => {
    const w = world();
    expect(faultOf(w, { rid: 0x99, addr: GVA }).reason).toBe(0x41);
    w.iommu.addDevice({ rid: 0x20, pasidBits: 0 });
    expect(faultOf(w, { rid: 0x20, addr: GVA }).reason).toBe(0x45);
    w.iommu.addDevice({ rid: 0x28, pasidBits: 8 });
    expect(faultOf(w, { rid: 0x28, pasid: 0x100, addr: GVA }).reason).toBe(0x46);
  });
});

describe('PASID directory and PASID entry faults', () => {
  it('0x50 when the PASID directory cannot be read', () => {
    const w = world();
    w.iommu.device(RID).pasidDirPtr = UNBACKED;
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x50);
  });

  it('0x51 when the directory entry for the PASID is not present', () => {
    const w = world();
    expect(faultOf(w, { pasid: 0x1000, addr: GVA }).reason).toBe(0x51);
  });

  it('0x52 when the directory entry has a reserved bit set', () => {
    const w = world();
    orU64(w.iommu.device(RID).pasidTable.dirEntryHpa(PASID), 1n << 5n);
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x52);
  });

  it('0x58 when the PASID table cannot be read', () => {
    const w = world();
    const de = w.iommu.device(RID).pasidTable.dirEntryHpa(PASID);
    fixtures.current.mem.writeU64(de, BigInt(UNBACKED) | 1n);
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x58);
  });

  it('0x59 when the PASID entry is not present', () => {
    const w = world();
    expect(faultOf(w, { pasid: PASID + 1, addr: GVA }).reason).toBe(0x59);
  });

  it('0x5a when the PASID entry has a reserved bit set', () => {
    const w = world();
    orU64(pasidEntryHpa(w), 1n << 10n); // qw0 bit 10
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x5a);
  });

  it('0x5b for a reserved PGTT and for an AW outside SAGAW', () => {
    const w = world();
    const at = pasidEntryHpa(w);
    const qw0 = fixtures.current.mem.readU64(at);
    fixtures.current.mem.writeU64(at, (qw0 & ~(7n << 6n)) | (5n << 6n));
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x5b);
    fixtures.current.mem.writeU64(at, (qw0 & ~(7n << 2n)) | (3n << 2n)); // AW 3 = 57-bit: not supported here
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x5b);
  });

  it('0x5c for an execute request when ERE is clear', () => {
    const w = world();
    expect(faultOf(w, { addr: GVA, exec: true }).reason).toBe(0x5c);
  });

  it('0x5d for a supervisor request when SRE is clear', () => {
    const w = world();
    expect(faultOf(w, { addr: GVA_SUP, priv: true }).reason).toBe(0x5d);
  });
});

describe('first-level faults', () => {
  it('0x70 when a lower first-level table cannot be read', () => {
    const w = world();
    // The PML4 entry's table (a GPA) is mapped by the SL to an unbacked HPA.
    const vm = w.iommu.domain(w.vmDid);
    w.iommu.map(vm, 0x1000000n, BigInt(UNBACKED), 0x1000n, { read: true, write: true });
    w.fl.writeU64(w.fl.entryGpa(GVA, 4)!, w.fl.leaf(0x1000000n, '4K', { a: true }) & ~FL_PTE_MASK.PS);
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x70);
  });

  it('0x71 when a first-level entry is not present', () => {
    const w = world();
    const f = faultOf(w, { addr: 0x1000_5123n, write: true });
    expect(f).toMatchObject({ reason: 0x71, addr: 0x1000_5123n, pasid: PASID, rid: RID, write: true, type: 0 });
  });

  it('0x72 for reserved bits: PS in a PML4 entry, bits 20:13 in a 2 MiB leaf', () => {
    const w = world();
    orU64(G + Number(w.fl.entryGpa(GVA, 4)!), FL_PTE_MASK.PS);
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x72);
    const w2 = world();
    w2.fl.map(0x2000_0000n, 0x600000n, '2M');
    orU64(G + Number(w2.fl.entryGpa(0x2000_0000n, 2)!), 1n << 13n);
    expect(faultOf(w2, { addr: 0x2000_0000n }).reason).toBe(0x72);
  });

  it('0x73 when the first-level root (FL-PML4) cannot be read', () => {
    const w = world({ bind: false });
    const vm = w.iommu.domain(w.vmDid);
    w.iommu.map(vm, 0x1000000n, BigInt(UNBACKED), 0x1000n, { read: true, write: true });
    w.iommu.bindPgtablePasid(RID, PASID, vm, { flptr: 0x1000000n });
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x73);
  });

  it('0x74 when a first-level entry points beyond the nested second level width', () => {
    const w = world({ slLevels: 3 }); // 39-bit second level
    w.fl.writeU64(w.fl.entryGpa(GVA, 2)!, w.fl.leaf(0x100_0000_0000n, '4K', { a: true }) & ~FL_PTE_MASK.PS); // table at GPA 2^40
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x74);
  });

  it('0x75 when the second level denies reading the FL-PML4 table', () => {
    const w = world({ slTablePerm: { gpa: 0x1000, read: false, write: true } });
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x75);
  });

  it('0x76 when the second level denies reading a lower first-level table', () => {
    // The builder allocates the PDPT at GPA 0x2000.
    const w = world({ slTablePerm: { gpa: 0x2000, read: false, write: true } });
    expect(w.fl.readU64(0x1000n) & 0xfffff000n).toBe(0x2000n);
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x76);
  });

  it('0x77 when an A/D update would write a first-level table the second level maps read-only', () => {
    const w = world({ slTablePerm: { gpa: 0x2000, read: true, write: false } });
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x77);
  });

  it('0x91 when an A/D update is needed and the PASID entry asks for non-snooped walks (PWSNP = 0)', () => {
    const w = world();
    const qw1 = pasidEntryHpa(w) + 8;
    fixtures.current.mem.writeU64(qw1, fixtures.current.mem.readU64(qw1) & ~(1n << 23n));
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x91);
  });
});

describe('second-level faults', () => {
  it('0x78 when a lower second-level table cannot be read', () => {
    const w = world();
    const e = slEntryHpa(w, 0x400000, 4);
    fixtures.current.mem.writeU64(e, (fixtures.current.mem.readU64(e) & 0xfffn) | BigInt(UNBACKED));
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x78);
  });

  it('0x79 when the second-level entry is not present (R = W = 0)', () => {
    const w = world();
    w.fl.map(0x3000_0000n, 0x2000000n); // GPA 32 MiB: not mapped by the VM's second level
    expect(faultOf(w, { addr: 0x3000_0000n }).reason).toBe(0x79);
  });

  it('0x7a for reserved bits in a second-level entry (address above the HAW)', () => {
    const w = world();
    orU64(slEntryHpa(w, 0x400000, 2), 1n << 50n);
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x7a);
  });

  it('0x7b when the second-level page table pointer is invalid', () => {
    const w = world();
    const at = pasidEntryHpa(w);
    const qw0 = fixtures.current.mem.readU64(at);
    fixtures.current.mem.writeU64(at, (qw0 & 0xfffn) | BigInt(UNBACKED));
    expect(faultOf(w, { addr: GVA }).reason).toBe(0x7b);
  });
});

describe('general faults', () => {
  it('0x80 for a non-canonical input address', () => {
    const w = world();
    expect(faultOf(w, { addr: 0x8000_0000_0000n }).reason).toBe(0x80);
  });

  it('0x81 for a user request to a supervisor page', () => {
    const w = world();
    expect(faultOf(w, { addr: GVA_SUP }).reason).toBe(0x81);
  });

  it('0x82 for an execute request to an XD page with NXE', () => {
    const w = world({ bind: { ere: true, nxe: true } });
    expect(faultOf(w, { addr: GVA_XD, exec: true })).toMatchObject({ reason: 0x82, exec: true });
    expect(w.iommu.translate({ rid: RID, pasid: PASID, addr: GVA, exec: true })).toBe(G + 0x400000);
  });

  it('0x83 for a request without PASID beyond the second-level width', () => {
    const w = world();
    w.iommu.attachDevice(RID, w.vmDid);
    const f = faultOf(w, { pasid: undefined, addr: 1n << 48n });
    expect(f.reason).toBe(0x83);
    expect(f.pasid).toBeUndefined();
  });

  it('0x84 when the first level outputs a GPA beyond the nested second level width', () => {
    const w = world({ slLevels: 3 });
    w.fl.map(0x3000_0000n, 0x100_0000_0000n);
    expect(faultOf(w, { addr: 0x3000_0000n }).reason).toBe(0x84);
  });

  it('0x85 for a write to a read-only page, at either level', () => {
    const w = world();
    expect(faultOf(w, { addr: GVA_RO, write: true }).reason).toBe(0x85);
    w.iommu.map(w.vmDid, 0x1000000n, BigInt(G + 0x1000000), 0x1000n, { read: true, write: false });
    w.fl.map(0x3000_0000n, 0x1000000n);
    expect(faultOf(w, { addr: 0x3000_0000n, write: true }).reason).toBe(0x85);
  });

  it('0x86 for a read of a page the second level maps write-only', () => {
    const w = world();
    w.iommu.map(w.vmDid, 0x1000000n, BigInt(G + 0x1000000), 0x1000n, { read: false, write: true });
    w.fl.map(0x3000_0000n, 0x1000000n);
    expect(faultOf(w, { addr: 0x3000_0000n }).reason).toBe(0x86);
  });

  it('0x87 when the translation lands in the interrupt range 0xFEEx_xxxx', () => {
    const w = world();
    w.iommu.map(w.vmDid, 0x1000000n, 0xfee00000n, 0x1000n, { read: true, write: true });
    w.fl.map(0x3000_0000n, 0x1000000n);
    expect(faultOf(w, { addr: 0x3000_0000n, write: true }).reason).toBe(0x87);
  });
});

describe('fault reporting', () => {
  it('reports each fault to the device handler with address, PASID and request type', () => {
    const w = world();
    faultOf(w, { addr: 0x1000_5010n, write: true });
    faultOf(w, { addr: GVA_SUP });
    expect(w.faults.map((f) => [f.reason, f.addr, f.pasid, f.type])).toEqual([
      [0x71, 0x1000_5010n, PASID, 0],
      [0x81, GVA_SUP, PASID, 2],
    ]);
    expect(w.iommu.stats()).toMatchObject({ faults: 2, faultsReported: 2 });
  });

  it('does not report faults when the PASID entry has FPD set, or for ATS translation requests', () => {
    const w = world();
    orU64(pasidEntryHpa(w), 2n); // FPD
    faultOf(w, { addr: 0x1000_5000n });
    expect(w.faults).toEqual([]);
    expect(w.iommu.stats()).toMatchObject({ faults: 1, faultsReported: 0 });
    fixtures.current.mem.writeU64(pasidEntryHpa(w), fixtures.current.mem.readU64(pasidEntryHpa(w)) & ~2n);
    w.iommu.invalidatePasidCache(w.vmDid, PASID);
    faultOf(w, { addr: 0x1000_5000n, noReport: true });
    expect(w.faults).toEqual([]);
    faultOf(w, { addr: 0x1000_5000n });
    expect(w.faults.length).toBe(1);
  });

  it('keeps second-level permission failures distinct from first-level ones', () => {
    const w = world();
    // SL write-protects the data page: the FL allows writing, the SL does not.
    expect(w.iommu.unmap(w.vmDid, 0x400000n, 0x200000n)).toBe(0x200000n);
    w.iommu.map(w.vmDid, 0x400000n, BigInt(G + 0x400000), 0x200000n, { read: true, write: false });
    expect(w.iommu.translate({ rid: RID, pasid: PASID, addr: GVA })).toBe(G + 0x400000);
    expect(faultOf(w, { addr: GVA, write: true }).reason).toBe(0x85);
  });
});
