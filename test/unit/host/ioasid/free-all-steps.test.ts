/**
 * free_all_in_set in bounded steps (IoasidCore.freeAllInSetSteps, the VM release of
 * docs/protocol.md "Disconnect"): the end state equals one freeAllInSet call's, each step frees
 * at most its share, other calls between steps are tolerated, and bad arguments are EINVAL at
 * the call.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { IoasidCore, type IoasidSet } from '../../../../host/ioasid/index.js';

/** A core with one held set of `n` IDs; every `heldEvery`-th ID also has an 'iommu' reference. */
function populated(n: number, heldEvery: number): { core: IoasidCore; set: IoasidSet; ids: number[]; freeEvents: number[] } {
  const core = new IoasidCore({ pasidBits: 12 });
  const set = core.setAlloc({ quota: n + 1, name: 'vm' });
  core.setGet(set);
  const freeEvents: number[] = [];
  core.registerNotifier(set, { priority: 'IOMMU', call: (a) => void (a.event === 'FREE' && freeEvents.push(a.id)) });
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = core.alloc(set, 1, 4095);
    if (heldEvery > 0 && i % heldEvery === 0) core.get(set, id, 'iommu');
    ids.push(id);
  }
  return { core, set, ids, freeEvents };
}

/** What a test can compare between two cores: every ID record, the set's figures, the capacity. */
function state(core: IoasidCore, set: IoasidSet) {
  const s = core.snapshot();
  return { ids: s.ids, capacity: s.capacity, set: core.isSetValid(set) ? core.setInfo(set) : null };
}

describe('freeAllInSetSteps', () => {
  it('ends where one freeAllInSet call ends, with the same result and one FREE per held ID', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 1, max: 64 }), (n, heldEvery, perStep) => {
        const whole = populated(n, heldEvery);
        const stepped = populated(n, heldEvery);
        const expected = whole.core.freeAllInSet(whole.set);
        const steps = stepped.core.freeAllInSetSteps(stepped.set, perStep);
        let yields = 0;
        let r = steps.next();
        while (!r.done) {
          yields++;
          expect(r.value).toBeGreaterThan(0);
          r = steps.next();
        }
        expect(r.value).toEqual(expected);
        expect(yields).toBe(Math.max(0, Math.ceil(n / perStep) - 1));
        expect(state(stepped.core, stepped.set)).toEqual(state(whole.core, whole.set));
        expect([...stepped.freeEvents].sort((a, b) => a - b)).toEqual([...whole.freeEvents].sort((a, b) => a - b));
      }),
      { numRuns: 60 },
    );
  });

  it('frees at most perStep IDs per step', () => {
    const { core, set } = populated(100, 0);
    const steps = core.freeAllInSetSteps(set, 16);
    let used = core.setInfo(set).used;
    for (let r = steps.next(); !r.done; r = steps.next()) {
      const now = core.setInfo(set).used;
      expect(used - now).toBeLessThanOrEqual(16);
      used = now;
    }
    expect(core.setInfo(set).used).toBe(0);
  });

  it('skips IDs freed or reclaimed between steps, leaves IDs allocated meanwhile, and stops when the set goes', () => {
    const { core, set, ids } = populated(40, 0);
    const steps = core.freeAllInSetSteps(set, 10);
    expect(steps.next().done).toBe(false); // 10 freed (most recent first)
    const early = ids[0]!; // the oldest: visited last
    expect(core.free(set, early)).toBe(true);
    const late = core.alloc(set, 4000, 4095); // a number not listed
    let r = steps.next();
    while (!r.done) r = steps.next();
    // 10 + 29 reclaimed by the steps (early went by the test's own free); late is left in the set.
    expect(r.value).toEqual({ reclaimed: 39, pending: 1 });
    expect(core.idInfo(late)).toMatchObject({ state: 'idle' });
    core.free(set, late);

    // The set goes away between steps (its last ID reclaimed, no hold): the steps end.
    const other = populated(30, 0);
    const s2 = other.core.freeAllInSetSteps(other.set, 10);
    expect(s2.next().done).toBe(false);
    other.core.setPut(other.set);
    for (const id of other.ids) if (other.core.idInfo(id) !== null) other.core.free(other.set, id);
    expect(other.core.isSetValid(other.set)).toBe(false);
    expect(s2.next()).toEqual({ done: true, value: { reclaimed: 10, pending: 0 } });
  });

  it('EINVAL at the call: a dead set, a step size that is not a positive integer', () => {
    const { core, set } = populated(3, 0);
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => core.freeAllInSetSteps(set, bad)).toThrow(/EINVAL/);
    const dead = core.setAlloc({ quota: 1 });
    core.setFree(dead);
    expect(() => core.freeAllInSetSteps(dead, 4)).toThrow(/EINVAL/);
    expect(core.setInfo(set).used).toBe(3); // nothing was freed
  });
});
