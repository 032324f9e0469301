/**
 * Change listeners of the IOASID core (IoasidCore.registerChangeListener): a set's listener is
 * told every ID whose record (what idInfo shows) a call changed — no more, no fewer — and
 * nothing about other sets' IDs.
 */
import { describe, it, expect, expectTypeOf, vi } from 'vitest';
import { IoasidCore } from '../../../../host/ioasid/index.js';
import { CORE_CALLS, callFixture, changedIds, idRecords, type CallFixture } from './core-calls.js';

/** Listen on both sets of the fixture; returns what each listener was told, by set id. */
function listen(f: CallFixture): Map<number, number[]> {
  const told = new Map<number, number[]>([[f.a.id, []], [f.b.id, []]]);
  for (const set of [f.a, f.b]) f.core.registerChangeListener(set, (id) => told.get(set.id)!.push(id));
  return told;
}

describe('IOASID change listeners', () => {
  it('have a call for every public IoasidCore member', () => {
    expectTypeOf<Exclude<keyof IoasidCore, keyof typeof CORE_CALLS>>().toBeNever();
    const methods = Object.getOwnPropertyNames(IoasidCore.prototype);
    for (const name of Object.keys(CORE_CALLS)) if (name !== 'pasidBits' && name !== 'cgroups') expect(methods).toContain(name);
  });

  it.each(Object.entries(CORE_CALLS))('%s: tells exactly the IDs whose record it changed, to their own set', (_name, call) => {
    const f = callFixture();
    const told = listen(f);
    const before = idRecords(f.core);
    call.run(f);
    const after = idRecords(f.core);
    const changed = changedIds(before, after);
    expect(changed.size > 0).toBe(call.changes);
    expect(new Set([...told.values()].flat())).toEqual(changed);
    for (const [setId, ids] of told) {
      for (const id of ids) {
        const record = JSON.parse(before.get(id) ?? after.get(id)!) as { set: number };
        expect(record.set).toBe(setId);
      }
    }
  });

  it('tells nothing for a call the core refuses', () => {
    const f = callFixture();
    const told = listen(f);
    const refusals = [
      () => f.core.get(f.a, f.pending, 'kvm'), // EBUSY
      () => f.core.get(f.b, f.idle, 'kvm'), // EACCES
      () => f.core.put(f.a, f.idle, 'kvm'), // EINVAL: holds nothing
      () => f.core.attachSpid(f.a, f.idle, 7), // EINVAL: SPID taken
      () => f.core.detachSpid(f.a, f.idle), // EINVAL: no SPID
      () => f.core.free(f.a, 200), // EINVAL: unknown
      () => f.core.alloc(f.a, 9, 8), // EINVAL: empty range
    ];
    for (const r of refusals) expect(r).toThrow();
    expect([...told.values()].flat()).toEqual([]);
  });

  it('tells what notifier blocks change inside the call (a FREE handler dropping its reference)', () => {
    const f = callFixture();
    f.core.registerNotifier(null, { call: (args) => { if (args.event === 'FREE') f.core.put(null, args.id, 'kvm'); } });
    const told = listen(f);
    f.core.free(f.a, f.withSpid); // FREE_PENDING, then the handler's put reclaims it
    expect(f.core.idInfo(f.withSpid)).toBeNull();
    expect(told.get(f.a.id)).toEqual([f.withSpid, f.withSpid]);
  });

  it('stop after unregister, go with their set, and survive a listener that throws', () => {
    const core = new IoasidCore({ pasidBits: 6 });
    const s = core.setAlloc({ quota: 4 });
    const seen: number[] = [];
    const listener = (id: number): void => void seen.push(id);
    const thrower = vi.fn(() => {
      throw new Error('listener bug');
    });
    core.registerChangeListener(s, thrower);
    core.registerChangeListener(s, listener);
    const id = core.alloc(s, 1, 63);
    expect(thrower).toHaveBeenCalledWith(id);
    expect(seen).toEqual([id]); // the throw did not stop the others, nor the call
    expect(core.idInfo(id)).toMatchObject({ state: 'idle', refs: 1 });
    core.unregisterChangeListener(s, listener);
    core.get(s, id, 'kvm');
    expect(seen).toEqual([id]);
    core.put(s, id, 'kvm');
    core.free(s, id); // the last ID of an unheld set: the set goes, and its listeners with it
    expect(core.isSetValid(s)).toBe(false);
    expect(() => core.unregisterChangeListener(s, thrower)).toThrow(/EINVAL/);
    const s2 = core.setAlloc({ quota: 4 });
    core.alloc(s2, 1, 63);
    expect(thrower).toHaveBeenCalledTimes(4); // alloc, get, put, reclaim of `id`; nothing for s2
  });
});
