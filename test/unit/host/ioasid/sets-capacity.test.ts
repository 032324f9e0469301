import { describe, it, expect } from 'vitest';
import { IoasidCore } from '../../../../host/ioasid/index.js';
import { expectErrno } from './helpers.js';

describe('IOASID capacity', () => {
  it('holds 2^pasidBits − 1 IDs (ID 0 is never allocated)', () => {
    const core = new IoasidCore({ pasidBits: 4 });
    expect(core.capacity).toEqual({ total: 15, available: 15, reserved: 0 });
    const set = core.setAlloc({});
    const ids = Array.from({ length: 15 }, () => core.alloc(set, 0, 15));
    expect(ids).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    expectErrno(core, 'ENOSPC', () => core.alloc(set, 0, 1000));
  });

  it('reserve and cancel move IDs between available and reserved; reserve(0) takes all that remain', () => {
    const core = new IoasidCore({ pasidBits: 6 });
    expect(core.reserveCapacity(10)).toBe(10);
    const set = core.setAlloc({ quota: 20 });
    expect(core.capacity).toEqual({ total: 63, available: 33, reserved: 10 });
    expect(core.reserveCapacity(0)).toBe(33);
    expectErrno(core, 'ENOSPC', () => core.setAlloc({ quota: 1 }));
    expect(core.cancelCapacity(5)).toBe(5);
    expect(core.capacity).toEqual({ total: 63, available: 5, reserved: 38 });
    core.setAdjustQuota(set, 25);
    expect(core.capacity.available).toBe(0);
  });

  it('installCapacity lowers the total and the highest ID handed out', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    expect(core.installCapacity(3)).toBe(true);
    const set = core.setAlloc({});
    expect(core.setInfo(set).quota).toBe(3);
    expect([core.alloc(set, 0, 255), core.alloc(set, 0, 255), core.alloc(set, 0, 255)]).toEqual([1, 2, 3]);
  });
});

describe('IOASID sets', () => {
  it('quota 0 takes all available capacity, and the quota returns when the set is destroyed', () => {
    const core = new IoasidCore({ pasidBits: 6 });
    const a = core.setAlloc({ quota: 10 });
    const b = core.setAlloc({});
    expect(core.setInfo(b).quota).toBe(53);
    expect(core.capacity.available).toBe(0);
    core.setFree(b);
    core.setFree(a);
    expect(core.capacity.available).toBe(63);
  });

  it('adjusting the quota moves the difference to or from available capacity and limits allocation', () => {
    const core = new IoasidCore({ pasidBits: 6 });
    const s = core.setAlloc({ quota: 2 });
    core.setGet(s);
    core.alloc(s, 1, 63);
    core.alloc(s, 1, 63);
    expectErrno(core, 'ENOSPC', () => core.alloc(s, 1, 63));
    core.setAdjustQuota(s, 5);
    expect(core.capacity.available).toBe(58);
    core.alloc(s, 1, 63);
    core.setAdjustQuota(s, 3);
    expect(core.capacity.available).toBe(60);
    expect(core.setInfo(s)).toMatchObject({ quota: 3, used: 3 });
  });

  it('a set is destroyed when its last ID is reclaimed unless held; a held set survives until setPut', () => {
    const core = new IoasidCore({ pasidBits: 6 });
    const loose = core.setAlloc({ quota: 4 });
    core.free(loose, core.alloc(loose, 1, 63));
    expect(core.isSetValid(loose)).toBe(false);
    const held = core.setAlloc({ quota: 4 });
    core.setGet(held);
    core.free(held, core.alloc(held, 1, 63));
    expect(core.isSetValid(held)).toBe(true);
    expect(core.setPut(held)).toBe(true);
    expect(core.isSetValid(held)).toBe(false);
    // a set that never had IDs lives until freed
    const empty = core.setAlloc({ quota: 1 });
    expect(core.isSetValid(empty)).toBe(true);
  });

  it('allocates the lowest free ID in the inclusive range, and a freed ID is reused', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const s = core.setAlloc({ quota: 10 });
    core.setGet(s);
    expect(core.alloc(s, 5, 7)).toBe(5);
    expect(core.alloc(s, 5, 7)).toBe(6);
    expect(core.alloc(s, 5, 7)).toBe(7);
    expectErrno(core, 'ENOSPC', () => core.alloc(s, 5, 7));
    core.free(s, 6);
    expect(core.alloc(s, 0, 255)).toBe(1);
    expect(core.alloc(s, 5, 7)).toBe(6);
    expect(core.alloc(s, 200, 200)).toBe(200);
  });

  it('find returns private data through an optional getter and works while FREE_PENDING', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const s = core.setAlloc({ quota: 10 });
    const obj = { live: true };
    const id = core.alloc(s, 1, 255, obj);
    expect(core.find(s, id)).toBe(obj);
    expect(core.find(null, id, (d) => (d as { live: boolean }).live)).toBe(obj);
    expect(core.find(s, id, () => false)).toBeUndefined();
    core.get(s, id, 'iommu');
    core.free(s, id);
    expect(core.find(s, id)).toBe(obj);
    expect(core.detachData(s, id)).toBe(obj);
    expect(core.find(s, id)).toBeUndefined();
    core.attachData(s, id, 'new');
    expect(core.find(s, id)).toBe('new');
  });

  it('forEach visits the set’s IDs ascending with their data; snapshot lists sets and IDs', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const a = core.setAlloc({ type: 'MM', token: { name: 'mmA' }, quota: 10, name: 'A' });
    const b = core.setAlloc({ quota: 10 });
    core.alloc(a, 9, 9, 'nine');
    core.alloc(b, 1, 255);
    core.alloc(a, 3, 3, 'three');
    const seen: [number, unknown][] = [];
    expect(core.forEach(a, (id, d) => seen.push([id, d]))).toBe(2);
    expect(seen).toEqual([[3, 'three'], [9, 'nine']]);
    core.get(a, 3, 'vdcm');
    core.get(a, 3, 'iommu');
    core.attachSpid(a, 3, 42);
    const snap = core.snapshot();
    expect(snap.capacity).toEqual({ total: 255, available: 235 });
    expect(snap.sets).toEqual([
      { id: a.id, name: 'A', type: 'MM', token: 'mmA', quota: 10, used: 2, cgroup: null },
      { id: b.id, name: null, type: 'NULL', token: null, quota: 10, used: 1, cgroup: null },
    ]);
    expect(snap.ids).toEqual([
      { id: 3, set: a.id, state: 'active', refs: 3, users: ['iommu', 'vdcm'], spid: 42 },
      { id: 9, set: a.id, state: 'idle', refs: 1, users: [], spid: null },
      { id: 1, set: b.id, state: 'idle', refs: 1, users: [], spid: null },
    ]);
    expect(core.snapshotSet(b).ids.map((i) => i.id)).toEqual([1]);
    expect(core.snapshot({ ids: false }).ids).toEqual([]);
  });

  it('keeps per-user counts beyond the four typed-array user slots', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const s = core.setAlloc({ quota: 10 });
    const id = core.alloc(s, 1, 255);
    const users = ['iommu', 'kvm', 'vdcm', 'cpu', 'dev-a', 'dev-b'];
    for (const u of users) core.get(s, id, u);
    core.get(s, id, 'dev-b');
    expect(core.idInfo(id)).toMatchObject({ refs: 8, users: [...users].sort() });
    expect(core.userRefCount(id, 'dev-b')).toBe(2);
    expectErrno(core, 'EINVAL', () => core.put(s, id, 'dev-c'));
    for (const u of users) core.put(s, id, u);
    expect(core.idInfo(id)).toMatchObject({ refs: 2, users: ['dev-b'], state: 'active' });
    core.put(s, id, 'dev-b');
    expect(core.idInfo(id)).toMatchObject({ refs: 1, users: [], state: 'idle' });
  });
});
