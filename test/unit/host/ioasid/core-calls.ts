/**
 * One call (or a short run of the same call) per public IoasidCore member, on a fixture whose
 * IDs are in every state, each saying whether it changes an ID's record (what idInfo shows:
 * allocation, state, refs, users, SPID). Used by the change-listener tests of the core and by
 * the snapshot-row tests of the host service (host/server/pasid-rows.ts). The `satisfies`
 * below does not compile while a public member of IoasidCore has no entry, so a new method
 * cannot skip these tests.
 */
import { IoasidCore, type IoasidNotifier } from '../../../../host/ioasid/index.js';
import { isVsvaError } from '../../../../src/errors.js';

/** A small core (8-bit) with two held sets, A (MM) and B (NULL), and IDs in every state. */
export function callFixture() {
  const core = new IoasidCore({ pasidBits: 8 });
  const a = core.setAlloc({ type: 'MM', token: 'vmA', quota: 16, name: 'A' });
  const b = core.setAlloc({ quota: 16, name: 'B' });
  core.setGet(a);
  core.setGet(b);
  const idle = core.alloc(a, 1, 255);
  const active = core.alloc(a, 1, 255);
  core.get(a, active, 'kvm');
  core.get(a, active, 'iommu');
  const withSpid = core.alloc(a, 1, 255);
  core.attachSpid(a, withSpid, 7);
  core.get(a, withSpid, 'kvm');
  const pending = core.alloc(a, 1, 255);
  core.get(a, pending, 'vdcm');
  core.free(a, pending);
  const other = core.alloc(b, 1, 255);
  core.attachData(b, other, { tag: 'b' });
  return { core, a, b, idle, active, withSpid, pending, other };
}

export type CallFixture = ReturnType<typeof callFixture>;

export interface CoreCall {
  /** True when the call changes the record of at least one ID of the fixture. */
  readonly changes: boolean;
  readonly run: (f: CallFixture) => unknown;
}

const block = (): IoasidNotifier => ({ call() {} });

/** Run `fn`, which the core must refuse (a call that cannot succeed on the fixture). */
function refused(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (isVsvaError(e)) return;
    throw e;
  }
  throw new Error('expected the core to refuse the call');
}

export const CORE_CALLS = {
  pasidBits: { changes: false, run: (f) => f.core.pasidBits },
  cgroups: {
    changes: false,
    run: (f) => {
      const n = f.core.cgroups.create(f.core.cgroups.root, 'x');
      f.core.cgroups.setMax(n, 4);
    },
  },
  tableBytes: { changes: false, run: (f) => f.core.tableBytes },
  capacity: { changes: false, run: (f) => f.core.capacity },
  installCapacity: { changes: false, run: (f) => refused(() => f.core.installCapacity(100)) },
  reserveCapacity: { changes: false, run: (f) => f.core.reserveCapacity(3) },
  cancelCapacity: {
    changes: false,
    run: (f) => {
      f.core.reserveCapacity(3);
      f.core.cancelCapacity(2);
    },
  },
  setAlloc: { changes: false, run: (f) => f.core.setAlloc({ quota: 2 }) },
  setAdjustQuota: { changes: false, run: (f) => f.core.setAdjustQuota(f.b, 20) },
  setFree: { changes: false, run: (f) => f.core.setFree(f.core.setAlloc({ quota: 1 })) },
  setGet: { changes: false, run: (f) => f.core.setGet(f.b) },
  setPut: { changes: false, run: (f) => f.core.setPut(f.b) },
  isSetValid: { changes: false, run: (f) => f.core.isSetValid(f.a) },
  findMmSet: { changes: false, run: (f) => f.core.findMmSet('vmA') },
  findSet: { changes: false, run: (f) => f.core.findSet(f.idle) },
  alloc: { changes: true, run: (f) => f.core.alloc(f.a, 1, 255) },
  get: { changes: true, run: (f) => f.core.get(f.a, f.idle, 'vdcm') },
  put: {
    changes: true,
    run: (f) => {
      f.core.put(f.a, f.active, 'kvm');
      f.core.put(f.a, f.pending, 'vdcm'); // the last reference: reclaim
    },
  },
  free: {
    changes: true,
    run: (f) => {
      f.core.free(f.a, f.idle); // reclaimed at once
      f.core.free(f.a, f.active); // FREE_PENDING
      f.core.free(f.a, f.pending); // already pending: nothing
    },
  },
  find: { changes: false, run: (f) => f.core.find(f.b, f.other) },
  attachData: { changes: false, run: (f) => f.core.attachData(f.a, f.idle, 'x') },
  detachData: { changes: false, run: (f) => f.core.detachData(f.b, f.other) },
  attachSpid: { changes: true, run: (f) => f.core.attachSpid(f.a, f.idle, 9) },
  detachSpid: { changes: true, run: (f) => f.core.detachSpid(f.a, f.withSpid) },
  findBySpid: {
    changes: true,
    run: (f) => {
      f.core.findBySpid(f.a, 7); // no reference taken
      f.core.findBySpid(f.a, 7, 'vdcm');
    },
  },
  forEach: { changes: false, run: (f) => f.core.forEach(f.a, () => {}) },
  freeAllInSet: { changes: true, run: (f) => f.core.freeAllInSet(f.a) },
  freeAllInSetSteps: {
    changes: true,
    run: (f) => {
      const steps = f.core.freeAllInSetSteps(f.a, 1);
      while (!steps.next().done);
    },
  },
  registerNotifier: { changes: false, run: (f) => f.core.registerNotifier(f.b, block()) },
  unregisterNotifier: {
    changes: false,
    run: (f) => {
      const nb = block();
      f.core.registerNotifier(null, nb);
      f.core.unregisterNotifier(null, nb);
    },
  },
  registerMmNotifier: { changes: false, run: (f) => f.core.registerMmNotifier('vmZ', block()) },
  unregisterMmNotifier: {
    changes: false,
    run: (f) => {
      const nb = block();
      f.core.registerMmNotifier('vmZ', nb);
      f.core.unregisterMmNotifier('vmZ', nb);
    },
  },
  isMmNotifierPending: { changes: false, run: (f) => f.core.isMmNotifierPending('vmZ', block()) },
  notify: { changes: false, run: (f) => f.core.notify(f.active, 'BIND', { bound: true }) },
  registerChangeListener: { changes: false, run: (f) => f.core.registerChangeListener(f.b, () => {}) },
  unregisterChangeListener: {
    changes: false,
    run: (f) => {
      const listener = (): void => {};
      f.core.registerChangeListener(f.b, listener);
      f.core.unregisterChangeListener(f.b, listener);
    },
  },
  idInfo: { changes: false, run: (f) => f.core.idInfo(f.active) },
  spidOf: { changes: false, run: (f) => [f.core.spidOf(f.withSpid), f.core.spidOf(f.active), f.core.spidOf(0)] },
  isFreePending: { changes: false, run: (f) => [f.core.isFreePending(f.pending), f.core.isFreePending(f.idle), f.core.isFreePending(0)] },
  setInfo: { changes: false, run: (f) => f.core.setInfo(f.a) },
  snapshotSet: { changes: false, run: (f) => f.core.snapshotSet(f.a) },
  snapshot: { changes: false, run: (f) => f.core.snapshot() },
  userRefCount: { changes: false, run: (f) => f.core.userRefCount(f.active, 'kvm') },
} satisfies Record<keyof IoasidCore, CoreCall>;

/** Every allocated ID's record as JSON text, by ID. */
export function idRecords(core: IoasidCore): Map<number, string> {
  return new Map(core.snapshot().ids.map((r) => [r.id, JSON.stringify(r)]));
}

/** IDs whose record differs between two idRecords results (allocated, changed or reclaimed). */
export function changedIds(before: Map<number, string>, after: Map<number, string>): Set<number> {
  const out = new Set<number>();
  for (const [id, text] of before) if (after.get(id) !== text) out.add(id);
  for (const id of after.keys()) if (!before.has(id)) out.add(id);
  return out;
}
