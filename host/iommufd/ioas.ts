/**
 * An IOAS (drivers/iommu/iommufd/ioas.c, io_pagetable.c): an IOVA → memory map, the areas
 * IOAS_MAP / IOAS_COPY create and IOAS_UNMAP removes, mirrored into every paging HWPT built from
 * it (each a host paging domain, kept identical to the IOAS as iopt_table_add_domain does).
 *
 * Memory: what Linux pins from user VA is here guest memory named by its guest-physical address
 * in the VM's memory table (`user_va` on the wire); the context resolves it to host physical
 * (EFAULT outside the table).
 *
 * IOVA rules (io_pagetable.c iopt_check_iova, iopt_alloc_iova, iopt_unmap_iova_range,
 * iopt_set_allow_iova, iopt_reserve_iova):
 * - the IOVA space is [0, 2^48 - 1], the input width of the host's 4-level paging domains;
 *   beyond it is reserved;
 * - length 0, or an IOVA / length / memory address not 4 KiB aligned → EINVAL; a range that
 *   wraps past 2^64 → EOVERFLOW; a fixed IOVA range touching a reserved range → EINVAL, touching
 *   a mapped area → EEXIST; no free IOVA range for an automatic IOVA → ENOSPC;
 * - UNMAP removes whole areas only: nothing mapped in the range, or an area crossing its ends,
 *   → ENOENT; iova 0 with length U64_MAX unmaps everything;
 * - ALLOW_IOVAS: a range with start > last or ranges that overlap → EINVAL; a range touching a
 *   reserved range → EADDRINUSE; automatic IOVAs then come from the allowed ranges only;
 * - a device attached through the IOAS reserves its reserved regions (the VT-d interrupt window
 *   0xFEE00000–0xFEEFFFFF, IOMMU_RESV_MSI): EADDRINUSE when that touches an allowed range or a
 *   mapped area.
 */
import { fail } from '../../src/errors.js';
import { nextSlice, sliceTimer } from '../vfio/slice-budget.js';
import type { IommufdObject } from './object-table.js';

export const IOVA_ALIGNMENT = 4096n;
/** Input width of the host paging domains an IOAS is mirrored into. */
export const IOAS_IOVA_BITS = 48;
const IOVA_LAST = (1n << BigInt(IOAS_IOVA_BITS)) - 1n;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** The VT-d interrupt address range (VT-d spec §3.15, "Handling Requests to Interrupt Address Range"). */
export const MSI_WINDOW: IovaSpan = { start: 0xfee0_0000n, last: 0xfeef_ffffn };

export interface IovaSpan {
  start: bigint;
  /** Inclusive. */
  last: bigint;
}

export interface IoasProt {
  read: boolean;
  write: boolean;
}

/** One mapped area: IOVA → guest memory (its GPA) → host physical. */
export interface IoasArea {
  iova: bigint;
  length: bigint;
  /** Guest-physical address of the memory (the wire's user_va). */
  gpa: bigint;
  hpa: number;
  prot: IoasProt;
}

/**
 * Areas one VM's IOASes may hold together (ENOSPC past it): the bound VFIO type1 puts on a
 * container's DMA mappings (dma_entry_limit, drivers/vfio/vfio_iommu_type1.c), which the VFIO SVA
 * uAPI keeps too (host/vfio/dma-map.ts MAX_MAPPINGS). Linux's iommufd bounds pinned memory by
 * RLIMIT_MEMLOCK instead; here memory is the VM's own RAM, so the count of areas is what grows.
 */
export const MAX_IOAS_AREAS = 65536;

/**
 * An IOAS_UNMAP over more areas than this, or the fill of a paging HWPT from an IOAS of more
 * (iommufd-context.ts newPaging), is cut into slices of at most this many areas that yield to the
 * event loop.
 */
export const IOAS_SLICE_AREAS = 512;
/** A slice checks its time budget after each chunk of this many areas. */
export const IOAS_CHUNK_AREAS = 64;

/** The area count shared by one VM's IOASes, against MAX_IOAS_AREAS. */
export interface IoasAreaBudget {
  areas: number;
  readonly max: number;
}

/** A paging domain kept identical to the IOAS. */
export interface IoasMirror {
  map(iova: bigint, hpa: number, length: bigint, prot: IoasProt): void;
  unmap(iova: bigint, length: bigint): void;
}

function overlaps(a: IovaSpan, b: IovaSpan): boolean {
  return a.start <= b.last && b.start <= a.last;
}

/** Checked [iova, iova + length - 1]: alignment (EINVAL), wrap (EOVERFLOW). */
export function checkedSpan(iova: bigint, length: bigint, what: string): IovaSpan {
  if (length === 0n) fail('EINVAL', `${what}: length is 0`);
  if (iova % IOVA_ALIGNMENT !== 0n || length % IOVA_ALIGNMENT !== 0n) fail('EINVAL', `${what}: IOVA 0x${iova.toString(16)} or length 0x${length.toString(16)} is not 4 KiB aligned`);
  const last = iova + length - 1n;
  if (last > U64_MAX) fail('EOVERFLOW', `${what}: 0x${iova.toString(16)} + 0x${length.toString(16)} wraps past 2^64`);
  return { start: iova, last };
}

export class Ioas implements IommufdObject {
  readonly kind = 'ioas' as const;
  users = 0;
  /** Sorted by IOVA, disjoint. */
  private readonly areaList: IoasArea[] = [];
  private allowed: IovaSpan[] | null = null;
  /** Reserved ranges by owner (a device ID). */
  private readonly reservedBy = new Map<number, IovaSpan[]>();
  readonly mirrors = new Set<IoasMirror>();

  constructor(
    readonly id: number,
    private readonly budget: IoasAreaBudget = { areas: 0, max: MAX_IOAS_AREAS },
  ) {}

  get areas(): readonly IoasArea[] {
    return this.areaList;
  }

  get mappedBytes(): bigint {
    return this.areaList.reduce((n, a) => n + a.length, 0n);
  }

  /** Every reserved range: beyond the IOVA width, and each owner's. */
  reserved(): IovaSpan[] {
    const out: IovaSpan[] = [{ start: IOVA_LAST + 1n, last: U64_MAX }];
    for (const rs of this.reservedBy.values()) out.push(...rs);
    return out;
  }

  /** IOAS_IOVA_RANGES: the IOVA space minus the reserved ranges, sorted. */
  iovaRanges(): IovaSpan[] {
    const cuts = this.reserved().sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const out: IovaSpan[] = [];
    let next = 0n;
    for (const r of cuts) {
      if (r.start > next) out.push({ start: next, last: r.start - 1n });
      if (r.last + 1n > next) next = r.last + 1n;
    }
    if (next <= U64_MAX && next <= IOVA_LAST) out.push({ start: next, last: IOVA_LAST });
    return out;
  }

  /**
   * The IOVA a new area of `length` gets: `fixed`, or the lowest free one. A fixed range costs
   * two binary searches over the areas; the lowest free one walks the areas from the first
   * allowed window up to the first gap that fits (first fit, as iopt_alloc_iova).
   */
  placeArea(fixed: bigint | null, length: bigint, what: string): IovaSpan {
    if (fixed !== null) {
      const span = checkedSpan(fixed, length, what);
      for (const r of this.reserved()) if (overlaps(span, r)) fail('EINVAL', `${what}: IOVA range 0x${span.start.toString(16)}–0x${span.last.toString(16)} touches a reserved range`);
      const [i, j] = this.overlapping(span);
      if (i < j) fail('EEXIST', `${what}: IOVA 0x${this.areaList[i]!.iova.toString(16)} is mapped already`);
      return span;
    }
    checkedSpan(0n, length, what);
    const windows = this.allowed ?? [{ start: 0n, last: U64_MAX }];
    const reserved = this.reserved().sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (const w of [...windows].sort((a, b) => (a.start < b.start ? -1 : 1))) {
      let at = (w.start + IOVA_ALIGNMENT - 1n) & ~(IOVA_ALIGNMENT - 1n);
      // Busy spans in IOVA order: the areas (sorted) merged with the few reserved ranges.
      let ai = this.firstEndingAtOrAfter(at);
      let ri = 0;
      for (;;) {
        const a = this.areaList[ai];
        while (ri < reserved.length && reserved[ri]!.last < at) ri++;
        const r = reserved[ri];
        let b: IovaSpan | undefined;
        if (a !== undefined && (r === undefined || a.iova <= r.start)) {
          b = { start: a.iova, last: a.iova + a.length - 1n };
          ai++;
        } else if (r !== undefined) {
          b = r;
          ri++;
        }
        if (b === undefined) break;
        if (b.last < at) continue;
        if (b.start > at && b.start - at >= length) break;
        if (b.last + 1n > at) at = b.last + 1n;
        if (at > w.last) break;
      }
      if (at + length - 1n <= w.last && at + length - 1n <= U64_MAX) return { start: at, last: at + length - 1n };
    }
    fail('ENOSPC', `${what}: no free IOVA range of 0x${length.toString(16)} bytes`);
  }

  /**
   * Insert checked areas (all-or-nothing, mirrors included): each goes to its place in the
   * sorted list (a binary search). ENOSPC when the VM's IOASes would hold more than
   * MAX_IOAS_AREAS areas.
   */
  insert(areas: IoasArea[]): void {
    if (this.budget.areas + areas.length > this.budget.max) fail('ENOSPC', `IOAS ${this.id}: the VM's IOASes hold ${this.budget.areas} areas; ${areas.length} more exceed the cap of ${this.budget.max}`);
    const done: { m: IoasMirror; a: IoasArea }[] = [];
    try {
      for (const a of areas) {
        for (const m of this.mirrors) {
          m.map(a.iova, a.hpa, a.length, a.prot);
          done.push({ m, a });
        }
      }
    } catch (e) {
      for (const { m, a } of done.reverse()) m.unmap(a.iova, a.length);
      throw e;
    }
    for (const a of areas) this.areaList.splice(this.firstEndingAtOrAfter(a.iova), 0, a);
    this.budget.areas += areas.length;
  }

  /**
   * IOAS_UNMAP: whole areas inside [iova, iova + length); returns the bytes unmapped. The areas
   * hit are one run of the sorted list (two binary searches); only its ends can cross the
   * range (ENOENT, nothing removed). Up to IOAS_SLICE_AREAS areas the unmap completes
   * synchronously; a larger one returns a Promise and removes the run in slices from its end,
   * each ending at IOAS_SLICE_AREAS areas or SLICE_BUDGET_MS (host/vfio/slice-budget.ts),
   * yielding between them so that other VMs' requests are served meanwhile (as DMA_UNMAP,
   * host/vfio/dma-map.ts; Linux's iopt_unmap_iova_range drops the lock and cond_resched()s
   * between areas). A slice unmaps its span from each mirror with one call: a mirror holds
   * exactly the IOAS's areas, so the span's holes are unmapped already. Between slices the IOAS
   * and its mirrors agree. `stillOpen` is asked before each slice: when the VM's context closed
   * meanwhile (VM teardown), the unmap stops with ENOTCONN; what it removed stays removed.
   */
  unmap(iova: bigint, length: bigint, what: string, stillOpen: () => boolean = () => true): bigint | Promise<bigint> {
    let span: IovaSpan;
    if (iova === 0n && length === U64_MAX) span = { start: 0n, last: U64_MAX };
    else span = checkedSpan(iova, length, what);
    const [first, end] = this.overlapping(span);
    for (const a of first < end ? [this.areaList[first]!, this.areaList[end - 1]!] : []) {
      if (a.iova < span.start || a.iova + a.length - 1n > span.last) fail('ENOENT', `${what}: area 0x${a.iova.toString(16)}+0x${a.length.toString(16)} crosses the range's ends`);
    }
    // Unmapping everything of an empty IOAS succeeds (iopt_unmap_all); any other empty range is ENOENT.
    if (first === end && !(iova === 0n && length === U64_MAX)) fail('ENOENT', `${what}: nothing is mapped in 0x${span.start.toString(16)}–0x${span.last.toString(16)}`);
    if (end - first <= IOAS_SLICE_AREAS) return this.unmapRun(first, end);
    return this.unmapSliced(first, end, what, stillOpen);
  }

  private async unmapSliced(first: number, end: number, what: string, stillOpen: () => boolean): Promise<bigint> {
    let bytes = 0n;
    let left = end;
    const slice = sliceTimer();
    while (left > first) {
      if (!stillOpen()) fail('ENOTCONN', `${what}: the VM's iommufd context closed during the unmap (VM teardown)`);
      slice.restart();
      const floor = Math.max(first, left - IOAS_SLICE_AREAS);
      do {
        const from = Math.max(floor, left - IOAS_CHUNK_AREAS);
        bytes += this.unmapRun(from, left);
        left = from;
      } while (left > floor && !slice.spent());
      if (left > first) await nextSlice();
    }
    return bytes;
  }

  /** Remove areas [from, to) (consecutive in the list) from every mirror, one call each, then from the list. */
  private unmapRun(from: number, to: number): bigint {
    if (from === to) return 0n;
    const list = this.areaList;
    const start = list[from]!.iova;
    const last = list[to - 1]!;
    const spanLength = last.iova + last.length - start;
    for (const m of this.mirrors) m.unmap(start, spanLength);
    let bytes = 0n;
    for (let k = from; k < to; k++) bytes += list[k]!.length;
    list.splice(from, to - from);
    this.budget.areas -= to - from;
    return bytes;
  }

  /** The IOAS is destroyed (no HWPT mirrors it any more): its areas leave the VM's count. */
  forgetAreas(): void {
    this.budget.areas -= this.areaList.length;
    this.areaList.length = 0;
  }

  /** Index of the first area whose last byte is at or after `at` (areas are sorted and disjoint); length when none. */
  private firstEndingAtOrAfter(at: bigint): number {
    const list = this.areaList;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const a = list[mid]!;
      if (a.iova + a.length - 1n < at) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The run [i, j) of areas that overlap `span`. */
  private overlapping(span: IovaSpan): [number, number] {
    const list = this.areaList;
    const i = this.firstEndingAtOrAfter(span.start);
    let lo = i;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.iova <= span.last) lo = mid + 1;
      else hi = mid;
    }
    return [i, lo];
  }

  /**
   * The pieces of memory behind [iova, iova + length): ENOENT when any byte of it is unmapped
   * (IOAS_COPY's source, iopt_get_pages).
   */
  slice(iova: bigint, length: bigint, what: string): { offset: bigint; gpa: bigint; hpa: number; length: bigint; prot: IoasProt }[] {
    const span = checkedSpan(iova, length, what);
    const out: { offset: bigint; gpa: bigint; hpa: number; length: bigint; prot: IoasProt }[] = [];
    let at = span.start;
    for (const a of this.areaList) {
      const aLast = a.iova + a.length - 1n;
      if (aLast < at || a.iova > span.last) continue;
      if (a.iova > at) break;
      const end = aLast < span.last ? aLast : span.last;
      const skip = at - a.iova;
      out.push({ offset: at - span.start, gpa: a.gpa + skip, hpa: a.hpa + Number(skip), length: end - at + 1n, prot: a.prot });
      at = end + 1n;
      if (at > span.last) break;
    }
    if (at <= span.last) fail('ENOENT', `${what}: IOVA 0x${at.toString(16)} of the source range is not mapped`);
    return out;
  }

  /** IOAS_ALLOW_IOVAS (an empty list removes the restriction). */
  allowIovas(ranges: IovaSpan[], what: string): void {
    const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      if (r.start > r.last) fail('EINVAL', `${what}: range start 0x${r.start.toString(16)} > last 0x${r.last.toString(16)}`);
      if (i > 0 && sorted[i - 1]!.last >= r.start) fail('EINVAL', `${what}: ranges overlap at 0x${r.start.toString(16)}`);
      for (const res of this.reserved()) if (overlaps(r, res)) fail('EADDRINUSE', `${what}: range 0x${r.start.toString(16)}–0x${r.last.toString(16)} touches a reserved range`);
    }
    this.allowed = sorted.length === 0 ? null : sorted;
  }

  get allowedRanges(): readonly IovaSpan[] | null {
    return this.allowed;
  }

  /** Reserve `ranges` for `owner` (a device attached through this IOAS). EADDRINUSE. */
  reserve(owner: number, ranges: IovaSpan[], what: string): void {
    if (this.reservedBy.has(owner)) return;
    for (const r of ranges) {
      for (const a of this.allowed ?? []) if (overlaps(r, a)) fail('EADDRINUSE', `${what}: reserved range 0x${r.start.toString(16)} is inside an allowed range`);
      const [i, j] = this.overlapping(r);
      if (i < j) fail('EADDRINUSE', `${what}: reserved range 0x${r.start.toString(16)} is mapped`);
    }
    this.reservedBy.set(owner, ranges);
  }

  unreserve(owner: number): void {
    this.reservedBy.delete(owner);
  }
}
