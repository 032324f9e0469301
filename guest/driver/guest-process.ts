/**
 * A guest process's address space: x86-64 first-level page tables in guest RAM, 4-level
 * (48-bit VAs) or 5-level (57-bit), as the guest kernel builds them for a process it binds to a
 * device with SVA (docs/design.md §3.3; entry format: VT-d spec rev. 5.10 §9.7 "First-Stage
 * Paging Entries", the x86-64 CPU page-table format).
 *
 * Entries are written with the CPU's format: table entries P | R/W | U/S | A (permissions are
 * decided at the leaf, as Linux's _PAGE_TABLE does); leaves P, R/W when writable, U/S when user,
 * XD unless executable, PS for 2 MiB / 1 GiB pages. A and D are left for the walker (CPU or
 * IOMMU) to set. Tables are 4 KiB pages from the PageAllocator.
 *
 * Contracts:
 * - `map` refuses (EEXIST) a VA that is already mapped by any leaf, or whose range overlaps a
 *   larger or smaller existing leaf; EINVAL for a non-canonical or misaligned VA/GPA.
 *   Nothing is written on a refusal.
 * - `unmap(va)` removes the leaf that maps `va` and returns what the IOTLB flush needs (the
 *   PASID-based page-selective invalidation's address and AM, Linux `qi_flush_piotlb`).
 *   ENOENT when `va` is not mapped.
 * - `read`/`write` go through the tables exactly as a CPU load/store (user mode) would; EFAULT
 *   for an unmapped page or a store to a read-only page. They do not set A/D bits.
 */
import { fail } from '../../src/errors.js';
import {
  FL_ADDR_WIDTH_4LEVEL,
  FL_ADDR_WIDTH_5LEVEL,
  FL_PTE_MASK,
  PAGE_SIZES,
  isCanonical,
  leafAddrMask,
  levelIndex,
  levelShift,
  type PageSize,
} from '../../src/vtd/page-table.js';
import { PAGE_SIZE, readU64, writeU64, type GuestMemory } from './guest-memory.js';
import type { PageAllocator } from './page-allocator.js';

export type FlLevels = 4 | 5;

export interface GuestProcessOptions {
  /** Paging levels: 4 (48-bit VAs, default) or 5 (57-bit). */
  levels?: FlLevels;
  name?: string;
}

export interface MapOptions {
  /** Page size of the leaf. Default '4K'. */
  size?: PageSize;
  /** R/W: writable. Default true. */
  write?: boolean;
  /** U/S: user-accessible. Default true. */
  user?: boolean;
  /** Executable: XD clear. Default false (XD set). */
  exec?: boolean;
}

/** What an IOTLB flush of an unmap needs (PASID-based IOTLB page-selective invalidation). */
export interface FlushRange {
  /** Address aligned down to 4 KiB << am. */
  addr: bigint;
  /** 4 KiB pages covered by the unmap. */
  npages: number;
  /** Address mask: log2 of the power-of-two page count the descriptor covers. */
  am: number;
}

export interface UnmapResult {
  va: bigint;
  size: PageSize;
  gpa: bigint;
  flush: FlushRange;
}

export interface Translation {
  gpa: bigint;
  size: PageSize;
  pte: bigint;
  writable: boolean;
  user: boolean;
  exec: boolean;
}

const TABLE_FLAGS = FL_PTE_MASK.P | FL_PTE_MASK.RW | FL_PTE_MASK.US | FL_PTE_MASK.A;
const ADDR_MASK = 0x000ffffffffff000n;
const SIZE_AT_LEVEL: Record<number, PageSize | undefined> = { 1: '4K', 2: '2M', 3: '1G' };

/** PSI flush range for `npages` 4 KiB pages at `addr` (Linux: mask = ilog2(roundup_pow_of_two(npages))). */
export function flushRangeFor(addr: bigint, npages: number): FlushRange {
  if (!Number.isSafeInteger(npages) || npages < 1) fail('EINVAL', `page count ${npages} must be positive`);
  let am = 0;
  while (1 << am < npages) am++;
  const align = BigInt(PAGE_SIZE) << BigInt(am);
  return { addr: BigInt.asUintN(64, addr) & ~(align - 1n) & ((1n << 64n) - 1n), npages, am };
}

export class GuestProcess {
  readonly levels: FlLevels;
  /** Input address width: 48 or 57. */
  readonly addressWidth: number;
  readonly name: string;
  /** Tables this process allocated (the root first). */
  private readonly tables = new Set<bigint>();
  /** Data pages allocated by mapNew, freed by destroy. */
  private readonly ownedPages = new Set<bigint>();

  private constructor(
    private readonly mem: GuestMemory,
    private readonly alloc: PageAllocator,
    /** The root table (CR3, and the PASID entry's FLPTR). */
    readonly pgd: bigint,
    levels: FlLevels,
    name: string,
  ) {
    this.levels = levels;
    this.addressWidth = levels === 5 ? FL_ADDR_WIDTH_5LEVEL : FL_ADDR_WIDTH_4LEVEL;
    this.name = name;
    this.tables.add(pgd);
  }

  static async create(mem: GuestMemory, alloc: PageAllocator, opts: GuestProcessOptions = {}): Promise<GuestProcess> {
    const levels = opts.levels ?? 4;
    if (levels !== 4 && levels !== 5) fail('EINVAL', `first-level paging has 4 or 5 levels, not ${String(levels)}`);
    const pgd = await alloc.alloc(1);
    return new GuestProcess(mem, alloc, pgd, levels, opts.name ?? 'process');
  }

  /** Pages of page tables this process holds. */
  get tablePages(): number {
    return this.tables.size;
  }

  /**
   * Map `va` → `gpa` with one leaf of `opts.size`.
   * @throws VsvaError EINVAL (non-canonical / misaligned), EEXIST (already mapped), ENOMEM.
   */
  async map(va: bigint, gpa: bigint, opts: MapOptions = {}): Promise<void> {
    const size = opts.size ?? '4K';
    const { shift, level: leafLevel } = PAGE_SIZES[size];
    const mask = (1n << BigInt(shift)) - 1n;
    this.checkVa(va);
    if ((va & mask) !== 0n) fail('EINVAL', `VA 0x${va.toString(16)} is not ${size} aligned`);
    if (gpa < 0n || (gpa & mask) !== 0n || gpa > ADDR_MASK) fail('EINVAL', `GPA 0x${gpa.toString(16)} is not a ${size}-aligned address`);
    // Walk first without writing, so a refusal leaves memory untouched.
    let table = this.pgd;
    const missingFrom: { level: number; entryGpa: bigint }[] = [];
    for (let level: number = this.levels; level > leafLevel; level--) {
      const entryGpa = table + BigInt(levelIndex(va, level) * 8);
      const e = await readU64(this.mem, entryGpa);
      if ((e & FL_PTE_MASK.P) === 0n) {
        missingFrom.push({ level, entryGpa });
        break;
      }
      if (level <= 3 && (e & FL_PTE_MASK.PS) !== 0n) fail('EEXIST', `VA 0x${va.toString(16)} lies inside an existing ${SIZE_AT_LEVEL[level]} page`);
      table = e & ADDR_MASK;
    }
    let leafEntry: bigint;
    if (missingFrom.length === 0) {
      leafEntry = table + BigInt(levelIndex(va, leafLevel) * 8);
      const e = await readU64(this.mem, leafEntry);
      if ((e & FL_PTE_MASK.P) !== 0n) {
        const what = leafLevel > 1 && (e & FL_PTE_MASK.PS) === 0n ? 'smaller pages' : 'an existing page';
        fail('EEXIST', `VA 0x${va.toString(16)} is already mapped by ${what}`);
      }
    } else {
      // Build the missing tables bottom-up so the new subtree appears with one store.
      const { level: topMissing, entryGpa } = missingFrom[0]!;
      const fresh: bigint[] = [];
      try {
        for (let l = topMissing; l > leafLevel; l--) fresh.push(await this.alloc.alloc(1));
      } catch (e) {
        for (const t of fresh) this.alloc.free(t);
        throw e;
      }
      for (let i = 0; i < fresh.length - 1; i++) {
        const l = topMissing - 1 - i;
        await writeU64(this.mem, fresh[i]! + BigInt(levelIndex(va, l) * 8), fresh[i + 1]! | TABLE_FLAGS);
      }
      for (const t of fresh) this.tables.add(t);
      leafEntry = fresh[fresh.length - 1]! + BigInt(levelIndex(va, leafLevel) * 8);
      await writeU64(this.mem, leafEntry, leafPte(gpa, leafLevel, opts));
      await writeU64(this.mem, entryGpa, fresh[0]! | TABLE_FLAGS);
      return;
    }
    await writeU64(this.mem, leafEntry, leafPte(gpa, leafLevel, opts));
  }

  /**
   * Allocate zeroed 4 KiB pages for [va, va + bytes) and map them (bytes rounded up to pages).
   * Returns the GPAs, one per page. The pages are freed by destroy().
   */
  async mapNew(va: bigint, bytes: number, opts: Omit<MapOptions, 'size'> = {}): Promise<bigint[]> {
    const n = Math.ceil(bytes / PAGE_SIZE);
    if (n < 1) fail('EINVAL', `mapNew of ${bytes} bytes`);
    const out: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const gpa = await this.alloc.alloc(1);
      try {
        await this.map(va + BigInt(i * PAGE_SIZE), gpa, { ...opts, size: '4K' });
      } catch (e) {
        this.alloc.free(gpa);
        throw e;
      }
      this.ownedPages.add(gpa);
      out.push(gpa);
    }
    return out;
  }

  /**
   * Remove the leaf mapping `va`.
   * @throws VsvaError ENOENT when `va` is not mapped.
   */
  async unmap(va: bigint): Promise<UnmapResult> {
    this.checkVa(va);
    const w = await this.walk(va);
    if (w === undefined) fail('ENOENT', `VA 0x${va.toString(16)} is not mapped in ${this.name}`);
    await writeU64(this.mem, w.entryGpa, 0n);
    const { shift } = PAGE_SIZES[w.size];
    const start = va & ~((1n << BigInt(shift)) - 1n);
    return { va: start, size: w.size, gpa: w.gpa & ~((1n << BigInt(shift)) - 1n), flush: flushRangeFor(start, 1 << (shift - 12)) };
  }

  /** The translation of `va`, or undefined when it is not mapped. */
  async translate(va: bigint): Promise<Translation | undefined> {
    if (!isCanonical(va, this.addressWidth)) return undefined;
    const w = await this.walk(va);
    if (w === undefined) return undefined;
    return {
      gpa: w.gpa,
      size: w.size,
      pte: w.pte,
      writable: (w.pte & FL_PTE_MASK.RW) !== 0n,
      user: (w.pte & FL_PTE_MASK.US) !== 0n,
      exec: (w.pte & FL_PTE_MASK.XD) === 0n,
    };
  }

  /** Read `length` bytes of the process's memory at `va`, as a user-mode load would. */
  async read(va: bigint, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const cur = va + BigInt(done);
      const t = await this.translate(cur);
      if (t === undefined) fail('EFAULT', `${this.name}: VA 0x${cur.toString(16)} is not mapped`);
      const inPage = Number(cur & ((1n << BigInt(PAGE_SIZES[t.size].shift)) - 1n));
      const n = Math.min(length - done, PAGE_SIZES[t.size].bytes - inPage);
      out.set(await this.mem.memread(t.gpa, n), done);
      done += n;
    }
    return out;
  }

  /** Write `data` at `va`, as a user-mode store would (EFAULT on a read-only page). */
  async write(va: bigint, data: Uint8Array): Promise<void> {
    const pieces: { gpa: bigint; from: number; n: number }[] = [];
    let done = 0;
    while (done < data.length) {
      const cur = va + BigInt(done);
      const t = await this.translate(cur);
      if (t === undefined) fail('EFAULT', `${this.name}: VA 0x${cur.toString(16)} is not mapped`);
      if (!t.writable) fail('EFAULT', `${this.name}: VA 0x${cur.toString(16)} is read-only`);
      const inPage = Number(cur & ((1n << BigInt(PAGE_SIZES[t.size].shift)) - 1n));
      const n = Math.min(data.length - done, PAGE_SIZES[t.size].bytes - inPage);
      pieces.push({ gpa: t.gpa, from: done, n });
      done += n;
    }
    for (const p of pieces) await this.mem.memwrite(p.gpa, data.subarray(p.from, p.from + p.n));
  }

  /** Free every table page and every page mapNew allocated. The process must not be bound any more. */
  async destroy(): Promise<void> {
    for (const t of this.tables) this.alloc.free(t);
    for (const p of this.ownedPages) this.alloc.free(p);
    this.tables.clear();
    this.ownedPages.clear();
  }

  private checkVa(va: bigint): void {
    if (typeof va !== 'bigint' || va < 0n || va >= 1n << 64n || !isCanonical(va, this.addressWidth)) {
      fail('EINVAL', `VA 0x${String(va)} is not canonical for ${this.levels}-level paging`);
    }
  }

  /** The leaf mapping `va`: its entry's GPA, value, page size and the GPA `va` maps to. */
  private async walk(va: bigint): Promise<{ entryGpa: bigint; pte: bigint; size: PageSize; gpa: bigint } | undefined> {
    let table = this.pgd;
    for (let level: number = this.levels; level >= 1; level--) {
      const entryGpa = table + BigInt(levelIndex(va, level) * 8);
      const e = await readU64(this.mem, entryGpa);
      if ((e & FL_PTE_MASK.P) === 0n) return undefined;
      const size = SIZE_AT_LEVEL[level];
      if (level === 1 || (size !== undefined && (e & FL_PTE_MASK.PS) !== 0n)) {
        const s = size!;
        const off = va & ((1n << BigInt(levelShift(level))) - 1n);
        return { entryGpa, pte: e, size: s, gpa: (e & leafAddrMask(s)) + off };
      }
      table = e & ADDR_MASK;
    }
    return undefined;
  }
}

function leafPte(gpa: bigint, level: number, opts: MapOptions): bigint {
  let e = gpa | FL_PTE_MASK.P;
  if (opts.write !== false) e |= FL_PTE_MASK.RW;
  if (opts.user !== false) e |= FL_PTE_MASK.US;
  if (opts.exec !== true) e |= FL_PTE_MASK.XD;
  if (level > 1) e |= FL_PTE_MASK.PS;
  return e;
}
