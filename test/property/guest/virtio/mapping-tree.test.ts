/**
 * MappingTree against a naive model: per-unit ownership. MAP succeeds iff no unit of the range
 * is owned; UNMAP removes the mappings inside the range unless one sticks out (then nothing).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MappingTree } from '../../../../guest/virtio/mapping-tree.js';

type Op = { kind: 'map' | 'unmap' | 'lookup'; a: number; b: number };

const op = fc.record({
  kind: fc.constantFrom<'map' | 'unmap' | 'lookup'>('map', 'map', 'unmap', 'lookup'),
  a: fc.integer({ min: 0, max: 63 }),
  len: fc.integer({ min: 1, max: 16 }),
}).map(({ kind, a, len }): Op => ({ kind, a, b: Math.min(63, a + len - 1) }));

describe('MappingTree', () => {
  it('decides overlap and split exactly as a per-unit model', () => {
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const tree = new MappingTree();
      // unit → id of the mapping that covers it; mappings by id → [a, b]
      const owner = new Array<number>(64).fill(-1);
      const ranges = new Map<number, [number, number]>();
      let next = 0;
      for (const o of ops) {
        if (o.kind === 'map') {
          const free = owner.slice(o.a, o.b + 1).every((x) => x < 0);
          const hit = tree.intersecting(BigInt(o.a), BigInt(o.b));
          expect(hit.length === 0).toBe(free);
          if (free) {
            tree.insert({ start: BigInt(o.a), end: BigInt(o.b), phys: 0n, flags: next });
            for (let i = o.a; i <= o.b; i++) owner[i] = next;
            ranges.set(next++, [o.a, o.b]);
          }
        } else if (o.kind === 'unmap') {
          const ids = new Set(owner.slice(o.a, o.b + 1).filter((x) => x >= 0));
          const split = [...ids].some((id) => ranges.get(id)![0] < o.a || ranges.get(id)![1] > o.b);
          const plan = tree.planUnmap(BigInt(o.a), BigInt(o.b));
          expect(plan.kind).toBe(split ? 'split' : 'remove');
          if (plan.kind === 'remove') {
            expect(plan.mappings.map((m) => m.flags).sort()).toEqual([...ids].sort());
            for (const m of plan.mappings) tree.remove(m);
            for (const id of ids) {
              const [a, b] = ranges.get(id)!;
              for (let i = a; i <= b; i++) owner[i] = -1;
              ranges.delete(id);
            }
          }
        } else {
          expect(tree.lookup(BigInt(o.a))?.flags ?? -1).toBe(owner[o.a]);
        }
        expect(tree.size).toBe(ranges.size);
      }
    }), { numRuns: 300 });
  });
});
