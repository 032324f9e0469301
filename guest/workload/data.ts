/**
 * Deterministic test data for DMA jobs: repeated bytes and seeded pseudo-random sequences
 * (xorshift32), so a scenario or the demo can name its data by a seed and check it later.
 */

/** `length` copies of one byte. */
export function patternBytes(value: number, length: number): Uint8Array {
  return new Uint8Array(length).fill(value & 0xff);
}

/** `length` pseudo-random bytes from `seed` (same seed, same bytes). */
export function seededBytes(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  // xorshift32 needs a non-zero state; mix the seed so small seeds differ in every byte.
  let x = (Math.imul(seed >>> 0, 0x9e3779b1) ^ 0x6d2b79f5) >>> 0 || 1;
  let i = 0;
  while (i < length) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    for (let k = 0; k < 4 && i < length; k++, i++) out[i] = (x >>> (k * 8)) & 0xff;
  }
  return out;
}

/** Index of the first byte where `a` and `b` differ, or -1 when equal (lengths must match). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Up to `max` bytes at `at` as hex, for messages. */
export function hexAround(b: Uint8Array, at: number, max = 16): string {
  const start = Math.max(0, at);
  const s = Buffer.from(b.subarray(start, start + max)).toString('hex').replace(/(..)/g, '$1 ').trim();
  return start + max < b.length ? `${s} …` : s;
}
