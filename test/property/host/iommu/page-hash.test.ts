/**
 * Property: the open-addressing table of 4 KiB translations (host/iommu/page-hash.ts: linear
 * probing, backward-shift deletion, growth at 3/4, clear and reset) holds exactly what a Map
 * holds after any sequence of inserts, lookups, deletions and clears — every key present is found
 * with its value, every absent key is not, `size` and the set of occupied slots agree, so no
 * deletion ever breaks another key's probe run. Keys cluster in a few runs (neighbouring pages,
 * pages 2^32 apart whose 32-bit halves XOR alike, and the top of the 52-bit page space) so probe
 * runs collide and wrap around the table's end.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { EMPTY_KEY, PageHash } from '../../../../host/iommu/page-hash.js';

type Op =
  | { op: 'set'; key: number; value: number }
  | { op: 'find'; key: number }
  | { op: 'remove'; key: number }
  | { op: 'clear' }
  | { op: 'reset' };

const keyArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 40 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 7 }).map((i) => i * 2 ** 32 + i) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }).map((i) => 2 ** 52 - 1 - i) },
  { weight: 1, arbitrary: fc.nat(2 ** 30) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ key: keyArb, value: fc.double({ min: 1, max: 2 ** 46, noNaN: true }) }).map((r) => ({ op: 'set' as const, ...r })) },
  { weight: 4, arbitrary: keyArb.map((key) => ({ op: 'find' as const, key })) },
  { weight: 5, arbitrary: keyArb.map((key) => ({ op: 'remove' as const, key })) },
  { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reset' as const }) },
);

/** The table's contents as a Map (every occupied slot), checking each key is stored once. */
function contents(t: PageHash): Map<number, number> {
  const m = new Map<number, number>();
  for (const at of t.occupied()) {
    const k = t.data[at]!;
    expect(k).not.toBe(EMPTY_KEY);
    expect(m.has(k)).toBe(false);
    m.set(k, t.data[at + 1]!);
  }
  return m;
}

describe('PageHash vs a Map', () => {
  it('agrees on every lookup, the size and the stored pairs after random insert / remove / clear sequences', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 300 }), (ops) => {
        const t = new PageHash();
        const ref = new Map<number, number>();
        for (const o of ops) {
          switch (o.op) {
            case 'set': {
              const before = t.size;
              const at = t.claim(o.key);
              expect(t.size).toBe(before + (ref.has(o.key) ? 0 : 1));
              t.data[at + 1] = o.value;
              ref.set(o.key, o.value);
              break;
            }
            case 'find': {
              const at = t.find(o.key);
              if (ref.has(o.key)) expect(t.data[at + 1]).toBe(ref.get(o.key));
              else expect(at).toBe(-1);
              break;
            }
            case 'remove':
              expect(t.remove(o.key)).toBe(ref.delete(o.key));
              break;
            case 'clear':
              t.clear();
              ref.clear();
              break;
            case 'reset':
              t.reset();
              ref.clear();
              break;
          }
          expect(t.size).toBe(ref.size);
          // Never more than 3/4 full, so every probe run ends at a free slot.
          expect(t.size * 4).toBeLessThanOrEqual(t.capacity * 3);
        }
        expect(contents(t)).toEqual(ref);
        for (const [k, v] of ref) expect(t.data[t.find(k) + 1]).toBe(v);
      }),
      { numRuns: 300 },
    );
  });
});
