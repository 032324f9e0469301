/**
 * An open-addressing hash table from page number to one number (or a few), on one Float64Array:
 * the storage of an IOTLB / device-TLB bucket's 4 KiB entries (tlb-bucket.ts packs an entry's
 * page frame and permitted access classes into the value) and, with three numbers per key, of its
 * paging-structure-cache entries. A lookup is a hash and a few typed-array reads,
 * usually within one cache line, and allocates nothing — unlike a Map of entry objects, where a
 * hit at a million entries costs the Map's bucket array, its entry chain and the entry object,
 * three cache misses (docs/performance.md, "Cache invalidation scaling").
 *
 * Layout: slot i occupies data[i·stride] (page number, EMPTY_KEY when free) and the stride − 1
 * numbers after it (its value(s)); with the default stride of 2, four slots share a 64-byte cache
 * line. Collisions are resolved by linear probing; deletion
 * shifts the following entries of the probe run back (Knuth, TAOCP vol. 3, §6.4, Algorithm R),
 * so there are no tombstones and a lookup stops at the first free slot. The table doubles when
 * it would be more than 3/4 full and shrinks only by `reset`.
 *
 * Page numbers are integers in [0, 2^52) (exact as doubles); the hash mixes both 32-bit halves.
 */
import { fail } from '../../src/errors.js';

/**
 * Key of a free slot (no page number is negative). Not exported: TurboFan folds a module-local
 * constant into the probe loop, while an exported binding is loaded (and checked) on every use.
 */
const FREE_KEY = -1;
/** FREE_KEY for other modules. */
export const EMPTY_KEY = FREE_KEY;
/** Doubles per slot of a table of one value per key: key, value (the default stride). */
export const SLOT_STRIDE = 2;

/**
 * Slots of a new (or reset) table: a power of two. Four slots are 64 bytes, which V8 keeps inside
 * the typed array object on its heap (no separate ArrayBuffer backing store), so the many buckets
 * that cache a page or two cost one small object each.
 */
const MIN_SLOTS = 4;
/**
 * Up to this many slots (16 KiB) `clear` empties the table in place, keeping its size for the
 * refill (no regrowth); a larger table is replaced by a minimal one, which frees it.
 */
const SMALL_SLOTS = 1024;
/** 2^−32 (a power of two: multiplying by it is exact, like dividing by 2^32). */
const TWO_MINUS_32 = 1 / 4294967296;

export class PageHash {
  /** The slots (see the file comment); replaced when the table grows or resets. */
  data: Float64Array;
  /** Doubles per slot: the key and stride − 1 values (at least 2). */
  readonly stride: number;
  /** Keys held. */
  size = 0;
  /** Slots − 1 (a power of two minus one). */
  private mask: number;
  /** 32 − log2(slots): the hash's top bits select the home slot. */
  private shift: number;

  constructor(slots = MIN_SLOTS, stride = SLOT_STRIDE) {
    if (!(Number.isInteger(stride) && stride >= 2 && stride <= 16)) fail('EINVAL', `PageHash stride ${stride} not in 2..16`);
    const n = slotsFor(slots);
    this.stride = stride;
    this.data = emptySlots(n, stride);
    this.mask = n - 1;
    this.shift = 32 - Math.log2(n);
  }

  /** Slots allocated (tests and memory figures). */
  get capacity(): number {
    return this.mask + 1;
  }

  /**
   * Home slot of `vpn` (Fibonacci hashing of the XOR of its 32-bit halves). Below 2^31 the high
   * half is 0 and the XOR is `vpn` itself: that branch skips the floating-point split.
   */
  home(vpn: number): number {
    const x = vpn < 0x7fffffff ? vpn : (vpn | 0) ^ ((vpn * TWO_MINUS_32) | 0);
    return Math.imul(x, 0x9e3779b1) >>> this.shift;
  }

  /** Index in `data` of the key of `vpn`'s slot (its value(s) at index + 1 ..), or −1. */
  find(vpn: number): number {
    const d = this.data;
    const mask = this.mask;
    const stride = this.stride;
    let i = this.home(vpn);
    for (;;) {
      const at = i * stride;
      const k = d[at]!;
      if (k === vpn) return at;
      if (k === FREE_KEY) return -1;
      i = (i + 1) & mask;
    }
  }

  /**
   * Index in `data` of the key of `vpn`'s slot: its slot if present, else a new slot whose key is
   * set (the caller writes the value; `size` counts it). Never returns −1.
   */
  claim(vpn: number): number {
    if ((this.size + 1) * 4 > (this.mask + 1) * 3) this.grow();
    const d = this.data;
    const mask = this.mask;
    const stride = this.stride;
    let i = this.home(vpn);
    for (;;) {
      const at = i * stride;
      const k = d[at]!;
      if (k === vpn) return at;
      if (k === FREE_KEY) {
        d[at] = vpn;
        this.size++;
        return at;
      }
      i = (i + 1) & mask;
    }
  }

  /** Delete `vpn`; returns whether it was present. Later entries of its probe run shift back. */
  remove(vpn: number): boolean {
    const at = this.find(vpn);
    if (at < 0) return false;
    this.removeAt(at / this.stride);
    return true;
  }

  /** Whether the table is small enough that visiting every slot costs less than a new table. */
  get small(): boolean {
    return this.mask + 1 <= SMALL_SLOTS;
  }

  /** Drop every key: in place when the table is small, else back to the minimum size (freeing the slots). */
  clear(): void {
    if (this.size === 0) return;
    if (!this.small) return this.reset();
    const d = this.data;
    for (let at = 0; at < d.length; at += this.stride) d[at] = FREE_KEY;
    this.size = 0;
  }

  /** Drop every key and return to the minimum size (frees the slots of a large table). */
  reset(): void {
    this.data = emptySlots(MIN_SLOTS, this.stride);
    this.mask = MIN_SLOTS - 1;
    this.shift = 32 - Math.log2(MIN_SLOTS);
    this.size = 0;
  }

  /** Index in `data` of every occupied slot (a snapshot: safe to remove keys while iterating it). */
  occupied(): number[] {
    const out: number[] = [];
    const d = this.data;
    for (let at = 0; at < d.length; at += this.stride) if (d[at] !== FREE_KEY) out.push(at);
    return out;
  }

  /** Backward-shift deletion of slot `i` (Algorithm R). */
  private removeAt(i: number): void {
    const d = this.data;
    const mask = this.mask;
    const stride = this.stride;
    let hole = i;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const at = j * stride;
      const k = d[at]!;
      if (k === FREE_KEY) break;
      const h = this.home(k);
      // The entry at j may move to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < h && h <= j : hole < h || h <= j;
      if (stays) continue;
      const to = hole * stride;
      for (let v = 0; v < stride; v++) d[to + v] = d[at + v]!;
      hole = j;
    }
    d[hole * stride] = FREE_KEY;
    this.size--;
  }

  private grow(): void {
    const old = this.data;
    const stride = this.stride;
    const n = (this.mask + 1) * 2;
    const d = emptySlots(n, stride);
    this.data = d;
    this.mask = n - 1;
    this.shift = 32 - Math.log2(n);
    const mask = this.mask;
    for (let from = 0; from < old.length; from += stride) {
      const k = old[from]!;
      if (k === FREE_KEY) continue;
      let i = this.home(k);
      while (d[i * stride] !== FREE_KEY) i = (i + 1) & mask;
      const to = i * stride;
      for (let v = 0; v < stride; v++) d[to + v] = old[from + v]!;
    }
  }
}

/** The power of two ≥ max(n, MIN_SLOTS). */
function slotsFor(n: number): number {
  let s = MIN_SLOTS;
  while (s < n) s *= 2;
  return s;
}

function emptySlots(n: number, stride: number): Float64Array {
  const d = new Float64Array(n * stride);
  for (let at = 0; at < d.length; at += stride) d[at] = FREE_KEY;
  return d;
}
