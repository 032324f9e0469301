/**
 * Model-based test of the IOASID core: random sequences of set / alloc / get / put / free /
 * attach_spid / adjust … run against the core and against a plain reference model written
 * straight from the rules (the header of host/ioasid/ioasid-core.ts). Every call must give the same
 * result or the same errno, and the observable state must agree after every step.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { IoasidCore, type IoasidSet, type IoasidCoreSnapshot } from '../../../../host/ioasid/index.js';
import { isVsvaError, type ErrnoName } from '../../../../src/errors.js';

const BITS = 4; // IDs 1..15: small enough to hit quota and range exhaustion often
const TOTAL = 2 ** BITS - 1;
const USERS = ['iommu', 'kvm', 'vdcm', 'cpu', 'dev'] as const; // five names: one beyond the typed-array slots
const TOKENS = ['mmA', 'mmB'] as const;

// ------------------------------------------------------------------ the reference model

class ModelError extends Error {
  constructor(readonly code: ErrnoName) {
    super(code);
  }
}
const err = (code: ErrnoName): never => {
  throw new ModelError(code);
};

interface MSet { id: number; type: 'NULL' | 'MM'; token: string | null; quota: number; ids: Set<number>; spids: Map<number, number>; holds: number }
interface MId { set: number; pending: boolean; users: Map<string, number>; spid: number | null }

class Model {
  avail = TOTAL;
  nextSet = 1;
  sets = new Map<number, MSet>();
  ids = new Map<number, MId>();

  private live(setId: number): MSet {
    return this.sets.get(setId) ?? err('EINVAL');
  }
  private refs(m: MId): number {
    let n = m.pending ? 0 : 1;
    for (const v of m.users.values()) n += v;
    return n;
  }
  private known(id: number, code: ErrnoName): MId {
    return this.ids.get(id) ?? err(code);
  }
  private owner(setId: number | null, id: number): void {
    if (setId === null) return;
    this.live(setId);
    if (this.ids.get(id)!.set !== setId) err('EACCES');
  }
  private destroy(s: MSet): void {
    this.sets.delete(s.id);
    this.avail += s.quota;
  }
  private reclaim(id: number): void {
    const m = this.ids.get(id)!;
    const s = this.sets.get(m.set)!;
    this.ids.delete(id);
    s.ids.delete(id);
    if (m.spid !== null) s.spids.delete(m.spid);
    if (s.ids.size === 0 && s.holds === 0) this.destroy(s);
  }

  setAlloc(type: 'NULL' | 'MM', token: string | null, quota: number): number {
    if (type === 'MM' && token === null) err('EINVAL');
    if (type === 'NULL' && token !== null) err('EINVAL');
    if (type === 'MM' && [...this.sets.values()].some((s) => s.type === 'MM' && s.token === token)) err('EEXIST');
    if (quota > this.avail) err('ENOSPC');
    if (quota === 0 && this.avail === 0) err('ENOSPC');
    const q = quota === 0 ? this.avail : quota;
    const id = this.nextSet++;
    this.sets.set(id, { id, type, token, quota: q, ids: new Set(), spids: new Map(), holds: 0 });
    this.avail -= q;
    return id;
  }
  setAdjustQuota(setId: number, quota: number): void {
    const s = this.live(setId);
    if (quota <= 0) err('EINVAL');
    if (quota < s.ids.size) err('EINVAL');
    if (quota - s.quota > this.avail) err('ENOSPC');
    this.avail += s.quota - quota;
    s.quota = quota;
  }
  setFree(setId: number): void {
    const s = this.live(setId);
    if (s.ids.size > 0) err('EBUSY');
    this.destroy(s);
  }
  setGet(setId: number): void {
    this.live(setId).holds++;
  }
  setPut(setId: number): boolean {
    const s = this.live(setId);
    if (s.holds === 0) err('EINVAL');
    s.holds--;
    if (s.holds === 0 && s.ids.size === 0) {
      this.destroy(s);
      return true;
    }
    return false;
  }
  alloc(setId: number, min: number, max: number): number {
    const s = this.live(setId);
    if (min > max) err('EINVAL');
    if (s.ids.size >= s.quota) err('ENOSPC');
    for (let id = Math.max(min, 1); id <= Math.min(max, TOTAL); id++) {
      if (this.ids.has(id)) continue;
      this.ids.set(id, { set: setId, pending: false, users: new Map(), spid: null });
      s.ids.add(id);
      return id;
    }
    return err('ENOSPC');
  }
  get(setId: number | null, id: number, user: string): void {
    const m = this.known(id, 'EINVAL');
    this.owner(setId, id);
    if (m.pending) err('EBUSY');
    m.users.set(user, (m.users.get(user) ?? 0) + 1);
  }
  put(setId: number | null, id: number, user: string): boolean {
    const m = this.known(id, 'EINVAL');
    this.owner(setId, id);
    const n = m.users.get(user) ?? 0;
    if (n === 0) err('EINVAL');
    if (n === 1) m.users.delete(user);
    else m.users.set(user, n - 1);
    if (m.pending && this.refs(m) === 0) {
      this.reclaim(id);
      return true;
    }
    return false;
  }
  private freeKnown(id: number): boolean {
    const m = this.ids.get(id)!;
    if (m.pending) return false;
    m.pending = true;
    if (this.refs(m) === 0) {
      this.reclaim(id);
      return true;
    }
    return false;
  }
  free(setId: number | null, id: number): boolean {
    this.known(id, 'EINVAL');
    this.owner(setId, id);
    return this.freeKnown(id);
  }
  attachSpid(setId: number | null, id: number, spid: number): void {
    const m = this.known(id, 'ENOENT');
    this.owner(setId, id);
    if (m.spid !== null) err('EBUSY');
    const s = this.sets.get(m.set)!;
    if (s.spids.has(spid)) err('EINVAL');
    m.spid = spid;
    s.spids.set(spid, id);
  }
  detachSpid(setId: number | null, id: number): number {
    const m = this.known(id, 'ENOENT');
    this.owner(setId, id);
    if (m.spid === null) err('EINVAL');
    const spid = m.spid!;
    this.sets.get(m.set)!.spids.delete(spid);
    m.spid = null;
    return spid;
  }
  findBySpid(setId: number, spid: number, user?: string): number | null {
    const s = this.live(setId);
    const id = s.spids.get(spid);
    if (id === undefined) return null;
    if (user !== undefined) {
      const m = this.ids.get(id)!;
      if (m.pending) return null;
      m.users.set(user, (m.users.get(user) ?? 0) + 1);
    }
    return id;
  }
  freeAllInSet(setId: number): { reclaimed: number; pending: number } {
    const s = this.live(setId);
    let reclaimed = 0;
    for (const id of [...s.ids].sort((a, b) => a - b)) if (this.freeKnown(id)) reclaimed++;
    return { reclaimed, pending: this.sets.has(setId) ? s.ids.size : 0 };
  }

  snapshot(): Pick<IoasidCoreSnapshot, 'capacity' | 'sets' | 'ids'> {
    const sets = [...this.sets.values()].sort((a, b) => a.id - b.id);
    return {
      capacity: { total: TOTAL, available: this.avail },
      sets: sets.map((s) => ({ id: s.id, name: null, type: s.type, token: s.token, quota: s.quota, used: s.ids.size, cgroup: null })),
      ids: sets.flatMap((s) =>
        [...s.ids].sort((a, b) => a - b).map((id) => {
          const m = this.ids.get(id)!;
          const userRefs = [...m.users.values()].reduce((a, b) => a + b, 0);
          return {
            id,
            set: s.id,
            state: m.pending ? ('free-pending' as const) : userRefs > 0 ? ('active' as const) : ('idle' as const),
            refs: this.refs(m),
            users: [...m.users.keys()].sort(),
            spid: m.spid,
          };
        }),
      ),
    };
  }
}

// ------------------------------------------------------------------ operations

/** `set` indexes the list of sets created so far (modulo its length), so dead handles occur too. */
type Op =
  | { op: 'setAlloc'; type: 'NULL' | 'MM'; token: number | null; quota: number }
  | { op: 'setAdjustQuota'; set: number; quota: number }
  | { op: 'setFree' | 'setGet' | 'setPut' | 'freeAllInSet'; set: number }
  | { op: 'alloc'; set: number; min: number; max: number }
  | { op: 'get' | 'put'; set: number | null; id: IdRef; user: UserRef }
  | { op: 'free' | 'detachSpid'; set: number | null; id: IdRef }
  | { op: 'attachSpid'; set: number | null; id: IdRef; spid: number }
  | { op: 'findBySpid'; set: number; spid: number; user: number | null };

const setRef = fc.nat(7);
const optSet = fc.option(setRef, { freq: 2 });
/** An ID: mostly the k-th currently allocated one (resolved at run time), sometimes any raw value. */
type IdRef = { live: number } | { raw: number };
const idArb: fc.Arbitrary<IdRef> = fc.oneof(
  { weight: 6, arbitrary: fc.nat(15).map((live) => ({ live })) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: TOTAL + 1 }).map((raw) => ({ raw })) },
);
/** A user: mostly one that holds a reference on the ID (resolved at run time), else any name. */
type UserRef = { holder: number } | { name: number };
const userArb: fc.Arbitrary<UserRef> = fc.oneof(
  { weight: 3, arbitrary: fc.nat(4).map((holder) => ({ holder })) },
  { weight: 1, arbitrary: fc.nat(USERS.length - 1).map((name) => ({ name })) },
);
const quotaArb = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 6 }) }, { weight: 1, arbitrary: fc.constant(0) });
const spidArb = fc.nat(4);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant('setAlloc' as const), type: fc.constant('NULL' as const), token: fc.constant(null), quota: quotaArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('setAlloc' as const), type: fc.constant('MM' as const), token: fc.nat(TOKENS.length - 1), quota: quotaArb }) },
  // type/token mismatches (EINVAL)
  { weight: 1, arbitrary: fc.record({ op: fc.constant('setAlloc' as const), type: fc.constantFrom('NULL' as const, 'MM' as const), token: fc.option(fc.nat(TOKENS.length - 1)), quota: fc.nat(8) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('setAdjustQuota' as const), set: setRef, quota: fc.nat(10) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constantFrom('setFree' as const, 'setGet' as const, 'setPut' as const, 'freeAllInSet' as const), set: setRef }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('alloc' as const), set: setRef, min: fc.nat(4), max: fc.nat(TOTAL + 2) }).map((o): Op => ({ ...o, max: Math.max(o.max, o.min) })) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('alloc' as const), set: setRef, min: fc.nat(TOTAL + 1), max: fc.nat(TOTAL + 2) }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('get' as const), set: optSet, id: idArb, user: userArb }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('put' as const), set: optSet, id: idArb, user: userArb }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('free' as const), set: optSet, id: idArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('detachSpid' as const), set: optSet, id: idArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('attachSpid' as const), set: optSet, id: idArb, spid: spidArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('findBySpid' as const), set: setRef, spid: spidArb, user: fc.option(fc.nat(USERS.length - 1)) }) },
);

type Outcome = { ok: unknown } | { err: string };

function outcome(fn: () => unknown): Outcome {
  try {
    return { ok: fn() };
  } catch (e) {
    if (isVsvaError(e)) return { err: e.code };
    if (e instanceof ModelError) return { err: e.code };
    throw e;
  }
}

function resolveId(model: Model, ref: IdRef): number {
  if ('raw' in ref) return ref.raw;
  const live = [...model.ids.keys()].sort((a, b) => a - b);
  return live.length === 0 ? 0 : live[ref.live % live.length]!;
}

function resolveUser(model: Model, id: number, ref: UserRef): string {
  const holders = [...(model.ids.get(id)?.users.keys() ?? [])].sort();
  if ('holder' in ref && holders.length > 0) return holders[ref.holder % holders.length]!;
  return USERS['name' in ref ? ref.name : ref.holder % USERS.length]!;
}

/** Apply one op to both; returns [core outcome, model outcome]. Sets are tracked by creation index. */
function step(core: IoasidCore, model: Model, handles: IoasidSet[], modelIds: number[], o: Op): [Outcome, Outcome] {
  const pick = (k: number) => k % handles.length;
  const noSets = handles.length === 0;
  switch (o.op) {
    case 'setAlloc': {
      const token = o.token === null ? null : TOKENS[o.token]!;
      const c = outcome(() => core.setAlloc({ type: o.type, token, quota: o.quota }));
      const m = outcome(() => model.setAlloc(o.type, token, o.quota));
      if ('ok' in c) handles.push(c.ok as IoasidSet);
      if ('ok' in m) modelIds.push(m.ok as number);
      return [('ok' in c ? { ok: (c.ok as IoasidSet).id } : c), m];
    }
    case 'alloc':
      if (noSets) return [{ ok: 0 }, { ok: 0 }];
      return [outcome(() => core.alloc(handles[pick(o.set)]!, o.min, o.max)), outcome(() => model.alloc(modelIds[pick(o.set)]!, o.min, o.max))];
    case 'setAdjustQuota':
      if (noSets) return [{ ok: 0 }, { ok: 0 }];
      return [outcome(() => core.setAdjustQuota(handles[pick(o.set)]!, o.quota)), outcome(() => model.setAdjustQuota(modelIds[pick(o.set)]!, o.quota))];
    case 'setFree':
    case 'setGet':
    case 'setPut':
    case 'freeAllInSet': {
      if (noSets) return [{ ok: 0 }, { ok: 0 }];
      const k = pick(o.set);
      const name = o.op;
      return [outcome(() => core[name](handles[k]!)), outcome(() => model[name](modelIds[k]!))];
    }
    case 'findBySpid': {
      if (noSets) return [{ ok: 0 }, { ok: 0 }];
      const k = pick(o.set);
      const user = o.user === null ? undefined : USERS[o.user]!;
      return [outcome(() => core.findBySpid(handles[k]!, o.spid, user)), outcome(() => model.findBySpid(modelIds[k]!, o.spid, user))];
    }
    default: {
      const cs = o.set === null || noSets ? null : handles[pick(o.set)]!;
      const ms = o.set === null || noSets ? null : modelIds[pick(o.set)]!;
      const id = resolveId(model, o.id);
      switch (o.op) {
        case 'get':
        case 'put': {
          const user = resolveUser(model, id, o.user);
          const name = o.op;
          return [outcome(() => core[name](cs, id, user)), outcome(() => model[name](ms, id, user))];
        }
        case 'free':
          return [outcome(() => core.free(cs, id)), outcome(() => model.free(ms, id))];
        case 'detachSpid':
          return [outcome(() => core.detachSpid(cs, id)), outcome(() => model.detachSpid(ms, id))];
        case 'attachSpid':
          return [outcome(() => core.attachSpid(cs, id, o.spid)), outcome(() => model.attachSpid(ms, id, o.spid))];
      }
    }
  }
}

function coreView(core: IoasidCore): Pick<IoasidCoreSnapshot, 'capacity' | 'sets' | 'ids'> {
  const { capacity, sets, ids } = core.snapshot();
  return { capacity, sets, ids };
}

describe('IOASID core against a reference model', () => {
  it('agrees on every result and on the state after every step', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 20, maxLength: 100, size: 'max' }), (ops) => {
        const core = new IoasidCore({ pasidBits: BITS });
        const model = new Model();
        const handles: IoasidSet[] = [];
        const modelIds: number[] = [];
        for (const [i, o] of ops.entries()) {
          const [c, m] = step(core, model, handles, modelIds, o);
          expect(c, `step ${i}: ${JSON.stringify(o)}`).toEqual(m);
          expect(coreView(core), `state after step ${i}: ${JSON.stringify(o)}`).toEqual(model.snapshot());
        }
        // Invariant: available + Σ quota (+ reserved, 0 here) = total
        const snap = core.snapshot();
        expect(snap.capacity.available + snap.sets.reduce((a, s) => a + s.quota, 0)).toBe(TOTAL);
      }),
      { numRuns: 200 },
    );
  });
});
