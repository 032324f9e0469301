import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { IdBitmap } from '../../../../host/ioasid/index.js';

describe('IdBitmap', () => {
  it('finds the lowest clear bit in range across level boundaries', () => {
    const bm = new IdBitmap(1 << 12);
    for (let i = 0; i < 2048; i++) bm.set(i);
    expect(bm.findClear(0, 4095)).toBe(2048);
    expect(bm.findClear(100, 2047)).toBe(-1);
    bm.clear(1023);
    expect(bm.findClear(0, 4095)).toBe(1023);
    expect(bm.findClear(1024, 4095)).toBe(2048);
    expect(bm.findClear(4095, 4095)).toBe(4095);
    expect(bm.findClear(4096, 5000)).toBe(-1);
  });

  it('never returns padding past the size', () => {
    const bm = new IdBitmap(33);
    for (let i = 0; i < 33; i++) bm.set(i);
    expect(bm.findClear(0, 1000)).toBe(-1);
    bm.clear(32);
    expect(bm.findClear(0, 1000)).toBe(32);
  });

  it('agrees with a plain boolean array on random set/clear/find sequences', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2200 }),
        fc.array(fc.tuple(fc.constantFrom('set', 'clear', 'find'), fc.nat(), fc.nat()), { maxLength: 300 }),
        (size, ops) => {
          const bm = new IdBitmap(size);
          const ref = new Array<boolean>(size).fill(false);
          for (const [op, x, y] of ops) {
            const i = x % size;
            if (op === 'set' && !ref[i]) { ref[i] = true; bm.set(i); }
            if (op === 'clear' && ref[i]) { ref[i] = false; bm.clear(i); }
            if (op === 'find') {
              const to = i + (y % (size + 5));
              let want = -1;
              for (let j = i; j <= Math.min(to, size - 1); j++) if (!ref[j]) { want = j; break; }
              expect(bm.findClear(i, to)).toBe(want);
            }
          }
          const mismatches = ref.filter((v, j) => bm.has(j) !== v).length;
          expect(mismatches).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });
});
