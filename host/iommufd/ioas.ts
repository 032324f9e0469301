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

  constructor(readonly id: number) {}

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

  /** The IOVA a new area of `length` gets: `fixed`, or the lowest free one. */
  placeArea(fixed: bigint | null, length: bigint, what: string): IovaSpan {
    if (fixed !== null) {
      const span = checkedSpan(fixed, length, what);
      for (const r of this.reserved()) if (overlaps(span, r)) fail('EINVAL', `${what}: IOVA range 0x${span.start.toString(16)}–0x${span.last.toString(16)} touches a reserved range`);
      for (const a of this.areaList) if (overlaps(span, { start: a.iova, last: a.iova + a.length - 1n })) fail('EEXIST', `${what}: IOVA 0x${a.iova.toString(16)} is mapped already`);
      return span;
    }
    checkedSpan(0n, length, what);
    const windows = this.allowed ?? [{ start: 0n, last: U64_MAX }];
    const busy = [...this.reserved(), ...this.areaList.map((a) => ({ start: a.iova, last: a.iova + a.length - 1n }))];
    busy.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (const w of [...windows].sort((a, b) => (a.start < b.start ? -1 : 1))) {
      let at = (w.start + IOVA_ALIGNMENT - 1n) & ~(IOVA_ALIGNMENT - 1n);
      for (const b of busy) {
        if (b.last < at) continue;
        if (b.start > at && b.start - at >= length) break;
        if (b.last + 1n > at) at = b.last + 1n;
      }
      if (at + length - 1n <= w.last && at + length - 1n <= U64_MAX) return { start: at, last: at + length - 1n };
    }
    fail('ENOSPC', `${what}: no free IOVA range of 0x${length.toString(16)} bytes`);
  }

  /** Insert checked areas (all-or-nothing, mirrors included). */
  insert(areas: IoasArea[]): void {
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
    this.areaList.push(...areas);
    this.areaList.sort((x, y) => (x.iova < y.iova ? -1 : 1));
  }

  /** IOAS_UNMAP: whole areas inside [iova, iova + length); returns the bytes unmapped. */
  unmap(iova: bigint, length: bigint, what: string): bigint {
    let span: IovaSpan;
    if (iova === 0n && length === U64_MAX) span = { start: 0n, last: U64_MAX };
    else span = checkedSpan(iova, length, what);
    const hit = this.areaList.filter((a) => overlaps(span, { start: a.iova, last: a.iova + a.length - 1n }));
    for (const a of hit) {
      if (a.iova < span.start || a.iova + a.length - 1n > span.last) fail('ENOENT', `${what}: area 0x${a.iova.toString(16)}+0x${a.length.toString(16)} crosses the range's ends`);
    }
    // Unmapping everything of an empty IOAS succeeds (iopt_unmap_all); any other empty range is ENOENT.
    if (hit.length === 0 && !(iova === 0n && length === U64_MAX)) fail('ENOENT', `${what}: nothing is mapped in 0x${span.start.toString(16)}–0x${span.last.toString(16)}`);
    let bytes = 0n;
    const gone = new Set<IoasArea>();
    try {
      for (const a of hit) {
        for (const m of this.mirrors) m.unmap(a.iova, a.length);
        gone.add(a);
        bytes += a.length;
      }
    } finally {
      // The list loses the unmapped areas in one pass (a splice(indexOf) per area was O(areas²)).
      let kept = 0;
      for (const a of this.areaList) if (!gone.has(a)) this.areaList[kept++] = a;
      this.areaList.length = kept;
    }
    return bytes;
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
      for (const a of this.areaList) if (overlaps(r, { start: a.iova, last: a.iova + a.length - 1n })) fail('EADDRINUSE', `${what}: reserved range 0x${r.start.toString(16)} is mapped`);
    }
    this.reservedBy.set(owner, ranges);
  }

  unreserve(owner: number): void {
    this.reservedBy.delete(owner);
  }
}
