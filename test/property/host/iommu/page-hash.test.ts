/**
 * Property: the open-addressing table of 4 KiB translations (host/iommu/page-hash.ts: linear
 * probing, backward-shift deletion, growth at 3/4, clear and reset) holds exactly what a Map
 * holds after any sequence of inserts, lookups, deletions and clears — every key present is found
 * with its value, every absent key is not, `size` and the set of occupied slots agree, so no
 * deletion ever breaks another key's probe run. Keys cluster in a few runs (neighbouring pages,
 * pages 2^32 apart whose 32-bit halves XOR alike, and the top of the 52-bit page space) so probe
 * runs collide and wrap around the table's end. Run with one value per key (the IOTLB's 4 KiB
 * entries) and with three (the paging-structure cache): every value of a slot moves with its key.
 */
import { describe, expect, it } from 'vitest';
import { VsvaError } from '../../../../src/errors.js';
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

/** The values stored for a key of value `v` in a table of `stride`: v, v + 1, … (one per value slot). */
function valuesOf(v: number, stride: number): number[] {
  return Array.from({ length: stride - 1 }, (_, i) => v + i);
}

/** The values of the slot whose key is at `at`. */
function slotValues(t: PageHash, at: number): number[] {
  return Array.from(t.data.subarray(at + 1, at + t.stride));
}

/** The table's contents as a Map (every occupied slot), checking each key is stored once. */
function contents(t: PageHash): Map<number, number> {
  const m = new Map<number, number>();
  for (const at of t.occupied()) {
    const k = t.data[at]!;
    expect(k).not.toBe(EMPTY_KEY);
    expect(m.has(k)).toBe(false);
    const vs = slotValues(t, at);
    expect(vs).toEqual(valuesOf(vs[0]!, t.stride));
    m.set(k, vs[0]!);
  }
  return m;
}

describe('PageHash vs a Map', () => {
  it.each([2, 4])('agrees on every lookup, the size and the stored values after random insert / remove / clear sequences (stride %i)', (stride) => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 300 }), (ops) => {
        const t = new PageHash(undefined, stride);
        expect(t.stride).toBe(stride);
        const ref = new Map<number, number>();
        for (const o of ops) {
          switch (o.op) {
            case 'set': {
              const before = t.size;
              const at = t.claim(o.key);
              expect(t.size).toBe(before + (ref.has(o.key) ? 0 : 1));
              t.data.set(valuesOf(o.value, stride), at + 1);
              ref.set(o.key, o.value);
              break;
            }
            case 'find': {
              const at = t.find(o.key);
              if (ref.has(o.key)) expect(slotValues(t, at)).toEqual(valuesOf(ref.get(o.key)!, stride));
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
        for (const [k, v] of ref) expect(slotValues(t, t.find(k))).toEqual(valuesOf(v, stride));
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a stride outside 2..16 (EINVAL)', () => {
    for (const stride of [0, 1, 17, 2.5]) {
      let err: unknown;
      try {
        new PageHash(undefined, stride);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VsvaError);
      expect((err as VsvaError).code).toBe('EINVAL');
    }
  });
});
