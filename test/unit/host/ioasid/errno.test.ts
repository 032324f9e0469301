/**
 * One case per errno rule of the IOASID core (the header of host/ioasid/ioasid-core.ts):
 * each asserts the exact code and that nothing a caller can observe changed.
 */
import { describe, it, expect } from 'vitest';
import { IoasidCore, INVALID_IOASID, type IoasidSet } from '../../../../host/ioasid/index.js';
import { expectErrno, observe } from './helpers.js';
import type { ErrnoName } from '../../../../src/errors.js';

/** A small core (5-bit: IDs 1..31) with two sets, an active ID, a pending ID and an SPID. */
function fixture() {
  const core = new IoasidCore({ pasidBits: 5 });
  const a = core.setAlloc({ type: 'MM', token: 'vmA', quota: 8, name: 'A' });
  const b = core.setAlloc({ quota: 8, name: 'B' });
  core.setGet(a);
  core.setGet(b);
  const idle = core.alloc(a, 1, 31); // 1
  const active = core.alloc(a, 1, 31); // 2
  core.get(a, active, 'iommu');
  core.attachSpid(a, active, 101);
  const pending = core.alloc(a, 1, 31); // 3
  core.get(a, pending, 'kvm');
  core.free(a, pending);
  const other = core.alloc(b, 1, 31); // 4
  core.attachData(b, other, { tag: 'b' });
  const dead = core.setAlloc({ quota: 1 });
  core.setFree(dead);
  return { core, a, b, dead, idle, active, pending, other };
}

type Fx = ReturnType<typeof fixture>;
const cases: [string, ErrnoName, (f: Fx) => unknown][] = [
  // capacity
  ['reserveCapacity above available', 'ENOSPC', (f) => f.core.reserveCapacity(f.core.capacity.available + 1)],
  ['reserveCapacity of a negative count', 'EINVAL', (f) => f.core.reserveCapacity(-1)],
  ['cancelCapacity beyond what is reserved', 'EINVAL', (f) => f.core.cancelCapacity(1)],
  ['installCapacity out of the ID space', 'EINVAL', (f) => f.core.installCapacity(32)],
  ['installCapacity once sets exist', 'EBUSY', (f) => f.core.installCapacity(16)],
  // sets
  ['setAlloc quota above available', 'ENOSPC', (f) => f.core.setAlloc({ quota: f.core.capacity.available + 1 })],
  ['setAlloc quota 0 with nothing available', 'ENOSPC', (f) => { f.core.reserveCapacity(0); try { f.core.setAlloc({}); } finally { f.core.cancelCapacity(f.core.capacity.reserved); } }],
  ['setAlloc MM with a duplicate token', 'EEXIST', (f) => f.core.setAlloc({ type: 'MM', token: 'vmA', quota: 1 })],
  ['setAlloc MM without token', 'EINVAL', (f) => f.core.setAlloc({ type: 'MM', quota: 1 })],
  ['setAlloc NULL with a token', 'EINVAL', (f) => f.core.setAlloc({ type: 'NULL', token: 'x', quota: 1 })],
  ['setAlloc unknown type', 'EINVAL', (f) => f.core.setAlloc({ type: 'PID' as never, quota: 1 })],
  ['setAlloc negative quota', 'EINVAL', (f) => f.core.setAlloc({ quota: -1 })],
  ['setAdjustQuota below current use', 'EINVAL', (f) => f.core.setAdjustQuota(f.a, 2)],
  ['setAdjustQuota to 0', 'EINVAL', (f) => f.core.setAdjustQuota(f.b, 0)],
  ['setAdjustQuota increase above available', 'ENOSPC', (f) => f.core.setAdjustQuota(f.b, 8 + f.core.capacity.available + 1)],
  ['setAdjustQuota on a freed set', 'EINVAL', (f) => f.core.setAdjustQuota(f.dead, 1)],
  ['setFree with IDs outstanding', 'EBUSY', (f) => f.core.setFree(f.a)],
  ['setFree of a freed set', 'EINVAL', (f) => f.core.setFree(f.dead)],
  ['setPut without a hold', 'EINVAL', (f) => { const s = f.core.setAlloc({ quota: 1 }); try { f.core.setPut(s); } finally { f.core.setFree(s); } }],
  ['set handle of another core', 'EINVAL', (f) => f.core.alloc(new IoasidCore({ pasidBits: 5 }).setAlloc({ quota: 1 }), 1, 31)],
  // alloc
  ['alloc in a freed set', 'EINVAL', (f) => f.core.alloc(f.dead, 1, 31)],
  ['alloc with min > max', 'EINVAL', (f) => f.core.alloc(f.b, 9, 8)],
  ['alloc with a fractional bound', 'EINVAL', (f) => f.core.alloc(f.b, 1.5, 8)],
  ['alloc past the set quota', 'ENOSPC', (f) => { f.core.setAdjustQuota(f.b, 1); try { f.core.alloc(f.b, 1, 31); } finally { f.core.setAdjustQuota(f.b, 8); } }],
  ['alloc with the range exhausted', 'ENOSPC', (f) => f.core.alloc(f.b, 1, 4)],
  ['alloc with a range above the capacity', 'ENOSPC', (f) => f.core.alloc(f.b, 32, 1000)],
  // get / put / free
  ['get of an unknown ID', 'EINVAL', (f) => f.core.get(f.a, 20, 'kvm')],
  ['get of a FREE_PENDING ID', 'EBUSY', (f) => f.core.get(f.a, f.pending, 'vdcm')],
  ['get of another set’s ID', 'EACCES', (f) => f.core.get(f.b, f.idle, 'kvm')],
  ['get with an empty user name', 'EINVAL', (f) => f.core.get(f.a, f.idle, '')],
  ['put by a user holding nothing', 'EINVAL', (f) => f.core.put(f.a, f.active, 'kvm')],
  ['put of an unknown ID', 'EINVAL', (f) => f.core.put(null, 20, 'iommu')],
  ['put of another set’s ID', 'EACCES', (f) => f.core.put(f.b, f.active, 'iommu')],
  ['free of an unknown ID', 'EINVAL', (f) => f.core.free(f.a, 20)],
  ['free of ID 0 (reserved)', 'EINVAL', (f) => f.core.free(null, 0)],
  ['free of another set’s ID', 'EACCES', (f) => f.core.free(f.b, f.idle)],
  // private data
  ['find of an unknown ID', 'ENOENT', (f) => f.core.find(null, 20)],
  ['find of another set’s ID', 'EACCES', (f) => f.core.find(f.a, f.other)],
  ['attachData when data is already set', 'EBUSY', (f) => f.core.attachData(f.b, f.other, 'again')],
  ['attachData on an unknown ID', 'ENOENT', (f) => f.core.attachData(null, 20, 'x')],
  ['attachData of undefined', 'EINVAL', (f) => f.core.attachData(f.a, f.idle, undefined)],
  ['detachData of another set’s ID', 'EACCES', (f) => f.core.detachData(f.a, f.other)],
  // SPID
  ['attachSpid with an SPID already used in the set', 'EINVAL', (f) => f.core.attachSpid(f.a, f.idle, 101)],
  ['attachSpid of INVALID_IOASID', 'EINVAL', (f) => f.core.attachSpid(f.a, f.idle, INVALID_IOASID)],
  ['attachSpid on an unknown ID', 'ENOENT', (f) => f.core.attachSpid(f.a, 20, 7)],
  ['attachSpid on an ID that has one', 'EBUSY', (f) => f.core.attachSpid(f.a, f.active, 7)],
  ['attachSpid on another set’s ID', 'EACCES', (f) => f.core.attachSpid(f.b, f.idle, 7)],
  ['detachSpid of an ID without SPID', 'EINVAL', (f) => f.core.detachSpid(f.a, f.idle)],
  ['detachSpid of an unknown ID', 'ENOENT', (f) => f.core.detachSpid(f.a, 20)],
  ['findBySpid in a freed set', 'EINVAL', (f) => f.core.findBySpid(f.dead, 101)],
  ['findBySpid with get by an empty user', 'EINVAL', (f) => f.core.findBySpid(f.a, 101, '')],
  ['forEach over a freed set', 'EINVAL', (f) => f.core.forEach(f.dead, () => {})],
  ['freeAllInSet of a freed set', 'EINVAL', (f) => f.core.freeAllInSet(f.dead)],
  // notifiers
  ['registerNotifier twice on a chain', 'EEXIST', (f) => { const nb = { call() {} }; f.core.registerNotifier(f.b, nb); try { f.core.registerNotifier(f.b, nb); } finally { f.core.unregisterNotifier(f.b, nb); } }],
  ['registerNotifier on a non-empty MM set', 'EBUSY', (f) => f.core.registerNotifier(f.a, { call() {} })],
  ['registerMmNotifier on a non-empty MM set', 'EBUSY', (f) => f.core.registerMmNotifier('vmA', { call() {} })],
  ['registerNotifier with an unknown priority', 'EINVAL', (f) => f.core.registerNotifier(null, { priority: 'KVM' as never, call() {} })],
  ['unregisterNotifier of an unknown block', 'ENOENT', (f) => f.core.unregisterNotifier(null, { call() {} })],
  ['unregisterMmNotifier of an unknown block', 'ENOENT', (f) => f.core.unregisterMmNotifier('vmZ', { call() {} })],
  ['notify of an unknown event', 'EINVAL', (f) => f.core.notify(f.idle, 'SET_FREE' as never)],
  ['notify with unknown flags', 'EINVAL', (f) => f.core.notify(f.idle, 'BIND', undefined, 4)],
  ['notify of an unknown ID', 'ENOENT', (f) => f.core.notify(20, 'BIND')],
  // change listeners
  ['registerChangeListener on a freed set', 'EINVAL', (f) => f.core.registerChangeListener(f.dead, () => {})],
  ['registerChangeListener of a non-function', 'EINVAL', (f) => f.core.registerChangeListener(f.a, { call() {} } as never)],
  ['registerChangeListener twice on a set', 'EEXIST', (f) => { const l = () => {}; f.core.registerChangeListener(f.b, l); try { f.core.registerChangeListener(f.b, l); } finally { f.core.unregisterChangeListener(f.b, l); } }],
  ['unregisterChangeListener of an unknown listener', 'ENOENT', (f) => f.core.unregisterChangeListener(f.a, () => {})],
  ['unregisterChangeListener on a freed set', 'EINVAL', (f) => f.core.unregisterChangeListener(f.dead, () => {})],
  // cgroups
  ['cgroup max above capacity', 'ENOSPC', (f) => { const n = f.core.cgroups.create(f.core.cgroups.root, 'x'); try { f.core.cgroups.setMax(n, 32); } finally { f.core.cgroups.remove(n); } }],
  ['cgroup max negative', 'EINVAL', (f) => { const n = f.core.cgroups.create(f.core.cgroups.root, 'x'); try { f.core.cgroups.setMax(n, -1); } finally { f.core.cgroups.remove(n); } }],
  ['cgroup max on the root', 'EINVAL', (f) => f.core.cgroups.setMax(f.core.cgroups.root, 5)],
  ['cgroup child name taken', 'EEXIST', (f) => { const n = f.core.cgroups.create(f.core.cgroups.root, 'x'); try { f.core.cgroups.create(f.core.cgroups.root, 'x'); } finally { f.core.cgroups.remove(n); } }],
  ['alloc past a cgroup limit', 'EAGAIN', (f) => {
    const n = f.core.cgroups.create(f.core.cgroups.root, 'vm');
    const s = f.core.setAlloc({ quota: 2, cgroup: n });
    try { f.core.alloc(s, 1, 31); } finally { f.core.setFree(s); f.core.cgroups.remove(n); }
  }],
];

describe('IOASID core errno rules', () => {
  it.each(cases)('%s → %s, state unchanged', (_name, code, action) => {
    const f = fixture();
    expectErrno(f.core, code, () => action(f));
  });

  it('a user past 65535 references on one ID → EOVERFLOW, state unchanged', () => {
    const { core, a, idle } = fixture();
    for (let i = 0; i < 0xffff; i++) core.get(a, idle, 'kvm');
    expect(core.userRefCount(idle, 'kvm')).toBe(0xffff);
    expectErrno(core, 'EOVERFLOW', () => core.get(a, idle, 'kvm'));
    // another user may still take one
    core.get(a, idle, 'iommu');
    expect(core.idInfo(idle)!.refs).toBe(1 + 0xffff + 1);
  });

  it('a second installCapacity is ignored (false) and changes nothing', () => {
    const core = new IoasidCore({ pasidBits: 5 });
    expect(core.installCapacity(16)).toBe(true);
    const before = observe(core);
    expect(core.installCapacity(8)).toBe(false);
    expect(observe(core)).toEqual(before);
  });

  it('a failed call leaves private data and SPID maps intact', () => {
    const { core, a, b, active, other } = fixture();
    expectErrno(core, 'EBUSY', () => core.attachData(b, other, 'x'));
    expect(core.find(b, other)).toEqual({ tag: 'b' });
    expectErrno(core, 'EINVAL', () => core.attachSpid(a, 1, 101));
    expect(core.findBySpid(a, 101)).toBe(active);
  });
});

describe('set handles', () => {
  it('a set handle stays invalid once freed, even if a new set reuses its token', () => {
    const core = new IoasidCore({ pasidBits: 5 });
    const s1: IoasidSet = core.setAlloc({ type: 'MM', token: 'vm', quota: 2 });
    core.setFree(s1);
    const s2 = core.setAlloc({ type: 'MM', token: 'vm', quota: 2 });
    expect(s2.id).not.toBe(s1.id);
    expectErrno(core, 'EINVAL', () => core.alloc(s1, 1, 31));
    expect(core.findMmSet('vm')).toBe(s2);
  });
});
