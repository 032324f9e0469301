/**
 * A kernel-managed second-level (GPA/IOVA → HPA) page table in host memory, in the VT-d
 * second-level format (VT-d spec §9.8, second-level paging entries, and §3.7 for levels and strides;
 * entry layout from src/vtd/page-table.ts).
 *
 * - 3-level (39-bit) or 4-level (48-bit) tables; 4 KiB, 2 MiB and 1 GiB leaves (PS = 1 at
 *   levels 2 and 3, CAP.SLLPS both). `map` uses the largest page that the IOVA and HPA alignment
 *   and the remaining size allow.
 * - Table entries (non-leaf) carry R|W|X so permissions come from the leaf.
 * - `map` refuses any overlap with an existing mapping (EEXIST) before it changes anything, and
 *   undoes its own partial work if it fails midway.
 * - `unmap` removes whatever is mapped in the range and returns the bytes it removed; a large
 *   leaf that the range covers only partly is split into a table of smaller leaves first (same
 *   attributes), so the rest of it stays mapped. Tables left empty are freed.
 *
 * Cache maintenance is not done here: the caller (HostIommu) flushes after unmap.
 */
import { fail } from '../../src/errors.js';
import { leafAddrMask, levelIndex, levelShift, SL_PTE_MASK, PTE_ADDR_MASK, type PageSize, type PtLevel } from '../../src/vtd/page-table.js';
import type { HostMemory } from '../memory/host-memory.js';
import type { MemoryBacking } from '../../src/memory/backing.js';
import type { PageTablePool } from './pt-pool.js';

export interface SlProt {
  read: boolean;
  write: boolean;
  exec?: boolean;
}

export interface SlLookup {
  hpa: number;
  /** Leaf page size in bytes (4 KiB, 2 MiB or 1 GiB). */
  pageBytes: number;
  prot: SlProt;
}

const R = SL_PTE_MASK.R;
const W = SL_PTE_MASK.W;
const X = SL_PTE_MASK.X;
const PS = SL_PTE_MASK.PS;
const TABLE_BITS = R | W | X;
const SIZE_OF_LEVEL: Record<number, PageSize> = { 1: '4K', 2: '2M', 3: '1G' };

function span(level: number): number {
  return 2 ** levelShift(level);
}
function present(e: bigint): boolean {
  return (e & (R | W)) !== 0n;
}
function isLeaf(e: bigint, level: number): boolean {
  return level === 1 || ((level === 2 || level === 3) && (e & PS) !== 0n);
}
function nextTable(e: bigint): number {
  return Number(e & PTE_ADDR_MASK);
}

// The unmap path (unmapLevel, tableEmpty, freeSubtree) reads entries as two u32 halves, so it
// allocates nothing per entry (a bigint per read was ~240 bytes of garbage a mapping on a
// 65,535-mapping DMA_UNMAP, and young-generation collections in other VMs' way; docs/performance.md
// "Fairness and snapshots"). The masks below are the bigint ones above, split.
const PRESENT_LO = Number(R | W);
const PS_LO = Number(PS);
/** PTE_ADDR_MASK's low half (bits 31:12) as an int32 mask, and its high half (bits 51:32). */
const ADDR_LO = Number(PTE_ADDR_MASK & 0xffff_ffffn) | 0;
const ADDR_HI = Number(PTE_ADDR_MASK >> 32n);
const TWO_32 = 2 ** 32;

function isLeafLo(lo: number, level: number): boolean {
  return level === 1 || ((level === 2 || level === 3) && (lo & PS_LO) !== 0);
}

/** Zero the entry at offset `o` of `store` (both halves; nothing reads the table between the two stores). */
function clearEntry(store: MemoryBacking, o: number): void {
  store.writeU32(o, 0);
  store.writeU32(o + 4, 0);
}

export class SecondLevelTable {
  readonly root: number;
  /** Input address width: 39 (3-level) or 48 (4-level). */
  readonly width: number;
  private mapped = 0;
  private pages = 1;

  constructor(
    private readonly pool: PageTablePool,
    private readonly mem: HostMemory,
    readonly levels: 3 | 4,
    private readonly haw: number,
  ) {
    this.root = pool.alloc();
    this.width = levelShift(levels + 1);
  }

  /** Bytes currently mapped. */
  get mappedBytes(): number {
    return this.mapped;
  }

  /** Page-table pages this table uses (root included). */
  get tablePages(): number {
    return this.pages;
  }

  /**
   * Map [iova, iova+size) to [hpa, hpa+size) with `prot`.
   * @throws EINVAL misaligned/zero size/no permission; ERANGE beyond the table's or HAW's width;
   *         EEXIST when any page of the range is already mapped. Nothing changes on error.
   */
  map(iova: number, hpa: number, size: number, prot: SlProt): void {
    this.checkRange('map', iova, size);
    if (!Number.isSafeInteger(hpa) || hpa < 0 || hpa % 4096 !== 0) fail('EINVAL', `map: HPA 0x${hpa.toString(16)} is not 4 KiB aligned`);
    if (hpa + size > 2 ** this.haw) fail('ERANGE', `map: HPA range 0x${hpa.toString(16)}+0x${size.toString(16)} is beyond the ${this.haw}-bit host address width`);
    if (!prot.read && !prot.write) fail('EINVAL', 'map: a second-level mapping needs read or write permission (R=W=0 is not present)');
    const clash = this.firstMapped(this.root, this.levels, iova, iova + size, 0);
    if (clash >= 0) fail('EEXIST', `map: IOVA 0x${clash.toString(16)} is already mapped`);
    const bits = (prot.read ? R : 0n) | (prot.write ? W : 0n) | (prot.exec === true ? X : 0n);
    let pos = 0;
    try {
      while (pos < size) {
        const a = iova + pos;
        const p = hpa + pos;
        const rem = size - pos;
        let level: PtLevel = 1;
        if (a % 2 ** 30 === 0 && p % 2 ** 30 === 0 && rem >= 2 ** 30) level = 3;
        else if (a % 2 ** 21 === 0 && p % 2 ** 21 === 0 && rem >= 2 ** 21) level = 2;
        this.installLeaf(a, p, level, bits);
        pos += span(level);
        this.mapped += span(level);
      }
    } catch (e) {
      if (pos > 0) this.removeRange(iova, iova + pos);
      throw e;
    }
  }

  /**
   * Remove every mapping inside [iova, iova+size); returns the bytes removed (0 when nothing was
   * mapped). Large leaves partly inside the range are split first.
   * @throws EINVAL misaligned or zero size; ERANGE beyond the table's width.
   */
  unmap(iova: number, size: number): number {
    this.checkRange('unmap', iova, size);
    // At most one split per level at each end of the range.
    this.pool.reserve(2 * (this.levels - 1));
    return this.removeRange(iova, iova + size);
  }

  /** The leaf mapping `iova`, or undefined. */
  lookup(iova: number): SlLookup | undefined {
    if (!Number.isSafeInteger(iova) || iova < 0 || iova >= 2 ** this.width) return undefined;
    let tbl = this.root;
    for (let level = this.levels; level >= 1; level--) {
      const e = this.mem.readU64(tbl + levelIndex(iova, level) * 8);
      if (!present(e)) return undefined;
      if (isLeaf(e, level)) {
        const size = span(level);
        const frame = Number(e & leafAddrMask(SIZE_OF_LEVEL[level]!));
        return { hpa: frame + (iova % size), pageBytes: size, prot: { read: (e & R) !== 0n, write: (e & W) !== 0n, exec: (e & X) !== 0n } };
      }
      tbl = nextTable(e);
    }
    return undefined;
  }

  /** Free every table page (the table is unusable afterwards). */
  destroy(): void {
    this.freeSubtree(this.root, this.levels);
    this.pool.free(this.root);
    this.pages = 0;
    this.mapped = 0;
  }

  private checkRange(what: string, iova: number, size: number): void {
    if (!Number.isSafeInteger(iova) || iova < 0 || iova % 4096 !== 0) fail('EINVAL', `${what}: IOVA 0x${iova.toString(16)} is not 4 KiB aligned`);
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) fail('EINVAL', `${what}: size ${size} is not a positive multiple of 4096`);
    if (iova + size > 2 ** this.width) {
      fail('ERANGE', `${what}: IOVA range 0x${iova.toString(16)}+0x${size.toString(16)} is beyond the ${this.width}-bit second-level width`);
    }
  }

  private removeRange(start: number, end: number): number {
    const bytes = this.unmapLevel(this.root, this.levels, start, end, 0);
    this.mapped -= bytes;
    return bytes;
  }

  private installLeaf(addr: number, hpa: number, level: PtLevel, bits: bigint): void {
    let tbl = this.root;
    for (let l = this.levels; l > level; l--) {
      const ea = tbl + levelIndex(addr, l) * 8;
      const e = this.mem.readU64(ea);
      if (!present(e)) {
        const t = this.allocTable();
        this.mem.writeU64(ea, BigInt(t) | TABLE_BITS);
        tbl = t;
      } else if (isLeaf(e, l)) {
        fail('EEXIST', `map: IOVA 0x${addr.toString(16)} is inside an existing large page`);
      } else {
        tbl = nextTable(e);
      }
    }
    const ea = tbl + levelIndex(addr, level) * 8;
    const e = this.mem.readU64(ea);
    if (present(e)) {
      if (isLeaf(e, level)) fail('EEXIST', `map: IOVA 0x${addr.toString(16)} is already mapped`);
      // An empty table left where a large leaf goes (the overlap check found nothing mapped in it).
      const child = nextTable(e);
      this.freeSubtree(child, level - 1);
      this.freeTable(child);
    }
    this.mem.writeU64(ea, BigInt(hpa) | bits | (level > 1 ? PS : 0n));
  }

  /** Lowest mapped address in [start, end) below table `tbl` (covering from `base`), or -1. */
  private firstMapped(tbl: number, level: number, start: number, end: number, base: number): number {
    const s = span(level);
    const first = Math.floor((start - base) / s);
    const last = Math.floor((end - 1 - base) / s);
    for (let i = first; i <= last; i++) {
      const e = this.mem.readU64(tbl + i * 8);
      if (!present(e)) continue;
      const eb = base + i * s;
      const lo = Math.max(start, eb);
      if (isLeaf(e, level)) return lo;
      const r = this.firstMapped(nextTable(e), level - 1, lo, Math.min(end, eb + s), eb);
      if (r >= 0) return r;
    }
    return -1;
  }

  private unmapLevel(tbl: number, level: number, start: number, end: number, base: number): number {
    const s = span(level);
    const first = Math.floor((start - base) / s);
    const last = Math.floor((end - 1 - base) / s);
    // The table page's entries through its region's backing at small offsets (HPAs are above
    // 4 GiB: per-entry HPA arithmetic would box a heap number per access).
    const region = this.mem.regionFor(tbl, 4096);
    const store = region.backing;
    const at = tbl - region.hpa;
    let bytes = 0;
    for (let i = first; i <= last; i++) {
      const o = at + i * 8;
      const elo = store.readU32(o);
      if ((elo & PRESENT_LO) === 0) continue;
      const eb = base + i * s;
      const lo = Math.max(start, eb);
      const hi = Math.min(end, eb + s);
      const leaf = isLeafLo(elo, level);
      if (leaf && lo === eb && hi === eb + s) {
        clearEntry(store, o);
        bytes += s;
        continue;
      }
      let child: number;
      if (leaf) {
        child = this.split(store.readU64(o), level);
        store.writeU64(o, BigInt(child) | TABLE_BITS);
      } else {
        child = (store.readU32(o + 4) & ADDR_HI) * TWO_32 + ((elo & ADDR_LO) >>> 0);
      }
      bytes += this.unmapLevel(child, level - 1, lo, hi, eb);
      if (this.tableEmpty(child)) {
        clearEntry(store, o);
        this.freeTable(child);
      }
    }
    return bytes;
  }

  /** A new table at `level − 1` whose 512 leaves together map what the large leaf `e` mapped. */
  private split(e: bigint, level: number): number {
    const child = this.allocTable();
    const frame = e & leafAddrMask(SIZE_OF_LEVEL[level]!);
    const attrs = e & ~(PTE_ADDR_MASK | PS);
    const childLevel = level - 1;
    const childSpan = BigInt(span(childLevel));
    const ps = childLevel > 1 ? PS : 0n;
    for (let i = 0; i < 512; i++) this.mem.writeU64(child + i * 8, (frame + BigInt(i) * childSpan) | attrs | ps);
    return child;
  }

  private tableEmpty(tbl: number): boolean {
    const words = this.scratchWords;
    this.mem.readInto(tbl, this.scratch);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }

  /** One table page, read by tableEmpty (kept: no 4 KiB allocation per check). */
  private readonly scratch = new Uint8Array(4096);
  private readonly scratchWords = new Uint32Array(this.scratch.buffer);

  private freeSubtree(tbl: number, level: number): void {
    if (level <= 1) return;
    const mem = this.mem;
    for (let i = 0; i < 512; i++) {
      const ea = tbl + i * 8;
      const elo = mem.readU32(ea);
      if ((elo & PRESENT_LO) !== 0 && !isLeafLo(elo, level)) {
        const child = (mem.readU32(ea + 4) & ADDR_HI) * TWO_32 + ((elo & ADDR_LO) >>> 0);
        this.freeSubtree(child, level - 1);
        this.freeTable(child);
      }
    }
  }

  private allocTable(): number {
    const t = this.pool.alloc();
    this.pages++;
    return t;
  }

  private freeTable(t: number): void {
    this.pool.free(t);
    this.pages--;
  }
}
