/**
 * Property: after any sequence of second-level map/unmap, first-level table edits, PASID
 * bind/unbind and RID attach/detach — each followed by the flush it needs — the IOMMU (with its
 * IOTLB, PASID cache and paging-structure caches) translates exactly like a slow, cache-free
 * walker that reads the tables from memory: same HPA, or same fault reason.
 *
 * The reference walker below is deliberately independent of host/iommu: bigints, the src/vtd
 * layouts, and the check order of VT-d spec §3.6–3.8 and §7.1.3.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decode } from '../../../../src/vtd/layout.js';
import { PASID_TABLE_ENTRY } from '../../../../src/vtd/pasid-entry.js';
import type { HostMemory } from '../../../../host/memory/host-memory.js';
import type { HostIommu } from '../../../../host/iommu/index.js';
import { FlBuilder, GUEST_HPA as G, makeFixture } from '../../../unit/host/iommu/helpers.js';

const RID = 0x0040;
const GPA_SPACE = 0x1000000; // 16 MiB of guest RAM
const GVA_4K = 0x4000_0000n; // 4 KiB first-level leaves (16 mapped, 4 edited)
const GVA_2M = 0x8000_0000n; // 2 MiB first-level leaves (8 mapped, 4 edited)
const ADDR = 0x000ffffffffff000n;

type Result = { hpa: bigint } | { reason: number };

/** Cache-free reference translation (VT-d spec §9.6 PASID entries, §3.6–3.8 walks). */
function refTranslate(mem: HostMemory, dirPtr: number, pasid: number | null, addr: bigint, write: boolean): Result {
  const pe = pasid ?? 0;
  const de = mem.readU64(dirPtr + (pe >> 6) * 8);
  if ((de & 1n) === 0n) return { reason: 0x51 };
  const words: bigint[] = [];
  for (let i = 0; i < 8; i++) words.push(mem.readU64(Number(de & ~0xfffn) + (pe & 63) * 64 + i * 8));
  const f = decode(PASID_TABLE_ENTRY, words).fields;
  if (f.P === 0n) return { reason: 0x59 };
  const slRoot = f.SLPTPTR << 12n;
  const slWidth = 12n + 9n * (f.AW + 2n);
  const sl = (gpa: bigint, purpose: 'request' | 'table' | 'top'): { hpa: bigint; r: boolean; w: boolean } | { reason: number } => {
    let tbl = slRoot;
    let r = true;
    let w = true;
    for (let level = Number(f.AW) + 2; level >= 1; level--) {
      const e = mem.readU64(Number(tbl + ((gpa >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n));
      if ((e & 3n) === 0n) return { reason: 0x79 };
      r &&= (e & 1n) !== 0n;
      w &&= (e & 2n) !== 0n;
      const leaf = level === 1 || ((level === 2 || level === 3) && (e & 0x80n) !== 0n);
      if (leaf) {
        const size = 1n << BigInt(12 + 9 * (level - 1));
        if (purpose === 'top' && !r) return { reason: 0x75 };
        if (purpose === 'table' && !r) return { reason: 0x76 };
        if (purpose === 'request' && write && !w) return { reason: 0x85 };
        if (purpose === 'request' && !write && !r) return { reason: 0x86 };
        return { hpa: (e & ADDR & ~(size - 1n)) + (gpa & (size - 1n)), r, w };
      }
      tbl = e & ADDR;
    }
    throw new Error('unreachable');
  };
  const pgtt = Number(f.PGTT);
  if (pgtt === 2) {
    if (addr >= 1n << slWidth) return { reason: 0x83 };
    const t = sl(addr, 'request');
    return 'reason' in t ? t : { hpa: t.hpa };
  }
  if (pgtt !== 3) throw new Error(`PGTT ${pgtt} not used by this property`);
  if (addr >> 47n !== 0n) return { reason: 0x80 };
  let tblGpa = f.FLPTR << 12n;
  let rw = true;
  let us = true;
  for (let level = 4; level >= 1; level--) {
    const t = sl(tblGpa, level === 4 ? 'top' : 'table');
    if ('reason' in t) return t;
    const e = mem.readU64(Number(t.hpa + ((addr >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n));
    if ((e & 1n) === 0n) return { reason: 0x71 };
    rw &&= (e & 2n) !== 0n;
    us &&= (e & 4n) !== 0n;
    if ((e & 0x20n) === 0n && !t.w) return { reason: 0x77 };
    const leaf = level === 1 || ((level === 2 || level === 3) && (e & 0x80n) !== 0n);
    if (leaf) {
      if (!us) return { reason: 0x81 };
      if (write && !rw) return { reason: 0x85 };
      if (write && (e & 0x40n) === 0n && !t.w) return { reason: 0x77 };
      const size = 1n << BigInt(12 + 9 * (level - 1));
      const gpa = (e & ADDR & ~(size - 1n)) + (addr & (size - 1n));
      if (gpa >= 1n << slWidth) return { reason: 0x84 };
      const o = sl(gpa, 'request');
      return 'reason' in o ? o : { hpa: o.hpa };
    }
    tblGpa = e & ADDR;
  }
  throw new Error('unreachable');
}

type Op =
  | { op: 'slMap'; page: number; pages: number; write: boolean }
  | { op: 'slUnmap'; page: number; pages: number }
  | { op: 'flMap4k'; table: number; idx: number; gpaPage: number; rw: boolean }
  | { op: 'flMap2m'; table: number; idx: number; gpa2m: number; rw: boolean }
  | { op: 'flUnmap4k'; table: number; idx: number }
  | { op: 'flUnmap2m'; table: number; idx: number }
  | { op: 'bind'; pasid: number; table: number }
  | { op: 'unbind'; pasid: number }
  | { op: 'attach' }
  | { op: 'detach' }
  | { op: 'xlate'; pasid: number | null; which: number; off: number; write: boolean };

const xlateArb = fc.record({
  op: fc.constant('xlate' as const),
  pasid: fc.constantFrom(null, 1, 1, 2),
  which: fc.integer({ min: 0, max: 63 }),
  off: fc.integer({ min: 0, max: 4095 }),
  write: fc.boolean(),
});

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('slMap' as const), page: fc.integer({ min: 0, max: 4095 }), pages: fc.integer({ min: 1, max: 600 }), write: fc.boolean() }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('slUnmap' as const), page: fc.integer({ min: 0, max: 4095 }), pages: fc.integer({ min: 1, max: 64 }) }), weight: 2 },
  {
    arbitrary: fc.record({ op: fc.constant('flMap4k' as const), table: fc.integer({ min: 0, max: 1 }), idx: fc.integer({ min: 0, max: 3 }), gpaPage: fc.integer({ min: 0, max: 4095 }), rw: fc.boolean() }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ op: fc.constant('flMap2m' as const), table: fc.integer({ min: 0, max: 1 }), idx: fc.integer({ min: 0, max: 3 }), gpa2m: fc.integer({ min: 0, max: 7 }), rw: fc.boolean() }),
    weight: 2,
  },
  { arbitrary: fc.record({ op: fc.constant('flUnmap4k' as const), table: fc.integer({ min: 0, max: 1 }), idx: fc.integer({ min: 0, max: 3 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('flUnmap2m' as const), table: fc.integer({ min: 0, max: 1 }), idx: fc.integer({ min: 0, max: 3 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('bind' as const), pasid: fc.integer({ min: 1, max: 2 }), table: fc.integer({ min: 0, max: 1 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('unbind' as const), pasid: fc.integer({ min: 1, max: 2 }) }), weight: 1 },
  { arbitrary: fc.constant({ op: 'attach' as const }), weight: 1 },
  { arbitrary: fc.constant({ op: 'detach' as const }), weight: 1 },
  { arbitrary: xlateArb, weight: 10 },
);

function run(ops: Op[]): void {
  const fx = makeFixture({}, GPA_SPACE);
  try {
    const { iommu, mem, ram } = fx;
    const vm = iommu.allocDomain();
    // Start populated: all guest RAM mapped (2 MiB leaves; unmaps split them), two first-level
    // tables in GPA [0, 1 MiB) with every slot of both windows mapped, PASID 1 bound to table 0,
    // the RID attached.
    iommu.map(vm, 0n, BigInt(G), BigInt(GPA_SPACE), { read: true, write: true });
    const tables = [new FlBuilder(ram, 4, 0x1000n), new FlBuilder(ram, 4, 0x40000n)];
    tables.forEach((t, ti) => {
      for (let i = 0; i < 16; i++) t.map(GVA_4K + BigInt(i) * 4096n, BigInt(0x200 + i * 7 + ti * 100) * 4096n);
      for (let i = 0; i < 8; i++) t.map(GVA_2M + BigInt(i) * 0x200000n, BigInt((i + ti) % 8) * 0x200000n, '2M');
    });
    iommu.addDevice({ rid: RID });
    iommu.bindPgtablePasid(RID, 1, vm, { flptr: tables[0]!.root });
    iommu.attachDevice(RID, vm);
    const bound = new Map<number, number>([[1, 0]]); // pasid → table
    let attached = true;
    const flush = (table: number, gva: bigint, am: number): void => {
      for (const [pasid, t] of bound) if (t === table) iommu.invalidatePasidIotlbPages(vm.did, pasid, gva, am);
    };
    for (const o of ops) {
      switch (o.op) {
        case 'slMap': {
          const pages = Math.min(o.pages, 4096 - o.page);
          try {
            iommu.map(vm, BigInt(o.page * 4096), BigInt(G + o.page * 4096), BigInt(pages * 4096), { read: true, write: o.write });
          } catch (e) {
            expect((e as { code?: string }).code).toBe('EEXIST');
          }
          break;
        }
        case 'slUnmap':
          iommu.unmap(vm, BigInt(o.page * 4096), BigInt(Math.min(o.pages, 4096 - o.page) * 4096)); // flushes itself
          break;
        case 'flMap4k': {
          const gva = GVA_4K + BigInt(o.idx) * 4096n;
          tables[o.table]!.map(gva, BigInt(o.gpaPage) * 4096n, '4K', { rw: o.rw });
          flush(o.table, gva, 0);
          break;
        }
        case 'flMap2m': {
          const gva = GVA_2M + BigInt(o.idx) * 0x200000n;
          tables[o.table]!.map(gva, BigInt(o.gpa2m) * 0x200000n, '2M', { rw: o.rw });
          flush(o.table, gva, 9);
          break;
        }
        case 'flUnmap4k': {
          const gva = GVA_4K + BigInt(o.idx) * 4096n;
          tables[o.table]!.unmap(gva, 1);
          flush(o.table, gva, 0);
          break;
        }
        case 'flUnmap2m': {
          const gva = GVA_2M + BigInt(o.idx) * 0x200000n;
          tables[o.table]!.unmap(gva, 2);
          flush(o.table, gva, 9);
          break;
        }
        case 'bind':
          if (!bound.has(o.pasid)) {
            iommu.bindPgtablePasid(RID, o.pasid, vm, { flptr: tables[o.table]!.root });
            bound.set(o.pasid, o.table);
          }
          break;
        case 'unbind':
          if (bound.has(o.pasid)) {
            iommu.unbindPgtablePasid(RID, o.pasid);
            bound.delete(o.pasid);
          }
          break;
        case 'attach':
          if (!attached) iommu.attachDevice(RID, vm);
          attached = true;
          break;
        case 'detach':
          if (attached) iommu.detachDevice(RID);
          attached = false;
          break;
        case 'xlate': {
          // Addresses: the 16 4 KiB-window pages, the 8 2 MiB pages, GPAs for requests without PASID.
          const addr =
            o.pasid === null
              ? BigInt(o.which) * 0x40000n + BigInt(o.off)
              : o.which < 32
                ? GVA_4K + BigInt(o.which % 4) * 4096n + BigInt(o.off)
                : GVA_2M + BigInt(o.which % 4) * 0x200000n + BigInt(o.which) * 4096n + BigInt(o.off);
          const got = iommu.translate(o.pasid === null ? { rid: RID, addr, write: o.write } : { rid: RID, pasid: o.pasid, addr, write: o.write });
          const want = refTranslate(mem, iommu.device(RID).pasidDirPtr, o.pasid, addr, o.write);
          const gotR: Result = got >= 0 ? { hpa: BigInt(got) } : { reason: iommu.lastFault().reason };
          expect(gotR, `${o.write ? 'write' : 'read'} PASID ${o.pasid} addr 0x${addr.toString(16)}`).toEqual(want);
          break;
        }
      }
    }
  } finally {
    fx.dispose();
  }
}

describe('host IOMMU against a cache-free reference walker', () => {
  it('translates identically after random map/unmap/bind/unbind sequences with their flushes', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 10, maxLength: 100 }), (ops) => run(ops)),
      { numRuns: 60 },
    );
  });

  it('also when translations are repeated and bracket every first-level edit (stale entries would show)', () => {
    // Translate the edited slot through both PASIDs before and after each first-level edit, and
    // repeat every translation (and its opposite access), so cached entries are always in play.
    const probe = (which: number, off: number): Op[] =>
      [1, 2].flatMap((pasid): Op[] => [
        { op: 'xlate', pasid, which, off, write: false },
        { op: 'xlate', pasid, which, off, write: true },
      ]);
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 10, maxLength: 60 }), (ops) =>
        run(
          ops.flatMap((o): Op[] => {
            if (o.op === 'xlate') return [o, o, { ...o, write: !o.write }, o];
            if (o.op === 'flMap4k' || o.op === 'flUnmap4k') return [...probe(o.idx, 0x10), o, ...probe(o.idx, 0x20)];
            if (o.op === 'flMap2m' || o.op === 'flUnmap2m') return [...probe(32 + o.idx, 0x10), o, ...probe(32 + o.idx, 0x20)];
            return [o];
          }),
        ),
      ),
      { numRuns: 40 },
    );
  });
});

export type { HostIommu };
