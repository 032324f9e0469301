/**
 * The ID allocator: a hierarchical bitmap over [0, size) that finds the lowest clear bit at or
 * above a bound in O(levels) word operations (levels = ⌈log32 size⌉, 4 for 2^20 IDs), so
 * allocating every ID of a 20-bit space one by one stays linear overall. Lowest-free is what
 * the kernel's `xa_alloc(XA_LIMIT(min, max))` hands out, so a freed ID is the next one reused.
 *
 * Level 0 holds one bit per ID (1 = in use). Bit j of level k (k ≥ 1) is 1 exactly when word j
 * of level k−1 is full. Padding bits past the end of every level are permanently 1, so searches
 * never return them.
 */
const FULL = 0xffff_ffff;

/** Index of the lowest set bit of a non-zero 32-bit value. */
function ctz(v: number): number {
  return 31 - Math.clz32(v & -v);
}

export class IdBitmap {
  private readonly levels: Uint32Array[] = [];

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`bitmap size ${size} is not a positive integer`);
    let n = size;
    for (;;) {
      const words = Math.ceil(n / 32);
      const lv = new Uint32Array(words);
      // Padding past the n real bits of this level is permanently "in use".
      for (let j = n; j < words * 32; j++) lv[j >>> 5] = (lv[j >>> 5]! | (1 << (j & 31))) >>> 0;
      this.levels.push(lv);
      if (words === 1) break;
      n = words;
    }
  }

  /** Bytes held by the bitmap (all levels). */
  get byteLength(): number {
    return this.levels.reduce((a, lv) => a + lv.byteLength, 0);
  }

  has(i: number): boolean {
    return ((this.levels[0]![i >>> 5]! >>> (i & 31)) & 1) === 1;
  }

  /** Mark `i` in use (it must be clear). */
  set(i: number): void {
    let idx = i;
    for (const lv of this.levels) {
      const w = idx >>> 5;
      const v = (lv[w]! | (1 << (idx & 31))) >>> 0;
      lv[w] = v;
      if (v !== FULL) return;
      idx = w;
    }
  }

  /** Mark `i` free (it must be set). */
  clear(i: number): void {
    let idx = i;
    for (const lv of this.levels) {
      const w = idx >>> 5;
      const was = lv[w]!;
      lv[w] = (was & ~(1 << (idx & 31))) >>> 0;
      if (was !== FULL) return;
      idx = w;
    }
  }

  /** Lowest clear index in [from, to] (inclusive), or -1. Requires 0 ≤ from. */
  findClear(from: number, to: number): number {
    const levels = this.levels;
    const top = levels.length - 1;
    let k = 0;
    let idx = from;
    let pos = -1;
    // Ascend: look in the word holding idx at this level; if it has no clear bit at or after
    // idx, the next candidate is the next word, found one level up.
    for (;;) {
      const lv = levels[k]!;
      const w = idx >>> 5;
      if (w >= lv.length) return -1;
      const m = ~lv[w]! & (-1 << (idx & 31));
      if (m !== 0) {
        pos = (w << 5) + ctz(m);
        break;
      }
      if (k === top) return -1;
      idx = w + 1;
      k++;
    }
    // Descend: every word below a clear summary bit has a clear bit; take the lowest.
    while (k > 0) {
      k--;
      pos = (pos << 5) + ctz(~levels[k]![pos]!);
    }
    return pos <= to ? pos : -1;
  }
}
