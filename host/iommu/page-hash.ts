/**
 * An open-addressing hash table from page number to one number, on one Float64Array: the storage
 * of an IOTLB / device-TLB bucket's 4 KiB entries (tlb-bucket.ts packs an entry's page frame and
 * permitted access classes into the value). A lookup is a hash and a few typed-array reads,
 * usually within one cache line, and allocates nothing — unlike a Map of entry objects, where a
 * hit at a million entries costs the Map's bucket array, its entry chain and the entry object,
 * three cache misses (docs/performance.md, "Cache invalidation scaling").
 *
 * Layout: slot i occupies data[2i] (page number, EMPTY_KEY when free) and data[2i + 1] (value);
 * four slots share a 64-byte cache line. Collisions are resolved by linear probing; deletion
 * shifts the following entries of the probe run back (Knuth, TAOCP vol. 3, §6.4, Algorithm R),
 * so there are no tombstones and a lookup stops at the first free slot. The table doubles when
 * it would be more than 3/4 full and shrinks only by `reset`.
 *
 * Page numbers are integers in [0, 2^52) (exact as doubles); the hash mixes both 32-bit halves.
 */

/** Key of a free slot (no page number is negative). */
export const EMPTY_KEY = -1;
/** Doubles per slot: key, value. */
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
const TWO_32 = 4294967296;

export class PageHash {
  /** The slots (see the file comment); replaced when the table grows or resets. */
  data: Float64Array;
  /** Keys held. */
  size = 0;
  /** Slots − 1 (a power of two minus one). */
  private mask: number;
  /** 32 − log2(slots): the hash's top bits select the home slot. */
  private shift: number;

  constructor(slots = MIN_SLOTS) {
    const n = slotsFor(slots);
    this.data = emptySlots(n);
    this.mask = n - 1;
    this.shift = 32 - Math.log2(n);
  }

  /** Slots allocated (tests and memory figures). */
  get capacity(): number {
    return this.mask + 1;
  }

  /** Home slot of `vpn` (Fibonacci hashing of the XOR of its 32-bit halves). */
  home(vpn: number): number {
    return Math.imul((vpn | 0) ^ ((vpn / TWO_32) | 0), 0x9e3779b1) >>> this.shift;
  }

  /** Index in `data` of the key of `vpn`'s slot (its value is at index + 1), or −1. */
  find(vpn: number): number {
    const d = this.data;
    const mask = this.mask;
    let i = this.home(vpn);
    for (;;) {
      const at = i * SLOT_STRIDE;
      const k = d[at]!;
      if (k === vpn) return at;
      if (k === EMPTY_KEY) return -1;
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
    let i = this.home(vpn);
    for (;;) {
      const at = i * SLOT_STRIDE;
      const k = d[at]!;
      if (k === vpn) return at;
      if (k === EMPTY_KEY) {
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
    this.removeAt(at / SLOT_STRIDE);
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
    for (let at = 0; at < d.length; at += SLOT_STRIDE) d[at] = EMPTY_KEY;
    this.size = 0;
  }

  /** Drop every key and return to the minimum size (frees the slots of a large table). */
  reset(): void {
    this.data = emptySlots(MIN_SLOTS);
    this.mask = MIN_SLOTS - 1;
    this.shift = 32 - Math.log2(MIN_SLOTS);
    this.size = 0;
  }

  /** Index in `data` of every occupied slot (a snapshot: safe to remove keys while iterating it). */
  occupied(): number[] {
    const out: number[] = [];
    const d = this.data;
    for (let at = 0; at < d.length; at += SLOT_STRIDE) if (d[at] !== EMPTY_KEY) out.push(at);
    return out;
  }

  /** Backward-shift deletion of slot `i` (Algorithm R). */
  private removeAt(i: number): void {
    const d = this.data;
    const mask = this.mask;
    let hole = i;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const at = j * SLOT_STRIDE;
      const k = d[at]!;
      if (k === EMPTY_KEY) break;
      const h = this.home(k);
      // The entry at j may move to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < h && h <= j : hole < h || h <= j;
      if (stays) continue;
      const to = hole * SLOT_STRIDE;
      d[to] = k;
      d[to + 1] = d[at + 1]!;
      hole = j;
    }
    d[hole * SLOT_STRIDE] = EMPTY_KEY;
    this.size--;
  }

  private grow(): void {
    const old = this.data;
    const n = (this.mask + 1) * 2;
    const d = emptySlots(n);
    this.data = d;
    this.mask = n - 1;
    this.shift = 32 - Math.log2(n);
    const mask = this.mask;
    for (let from = 0; from < old.length; from += SLOT_STRIDE) {
      const k = old[from]!;
      if (k === EMPTY_KEY) continue;
      let i = this.home(k);
      while (d[i * SLOT_STRIDE] !== EMPTY_KEY) i = (i + 1) & mask;
      const to = i * SLOT_STRIDE;
      d[to] = k;
      d[to + 1] = old[from + 1]!;
    }
  }
}

/** The power of two ≥ max(n, MIN_SLOTS). */
function slotsFor(n: number): number {
  let s = MIN_SLOTS;
  while (s < n) s *= 2;
  return s;
}

function emptySlots(n: number): Float64Array {
  const d = new Float64Array(n * SLOT_STRIDE);
  for (let at = 0; at < d.length; at += SLOT_STRIDE) d[at] = EMPTY_KEY;
  return d;
}
