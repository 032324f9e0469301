import { describe, it, expect } from 'vitest';
import { IoasidCore } from '../../../../host/ioasid/index.js';
import { expectErrno } from './helpers.js';

/** A refused charge changes nothing but the `events.max` counter, which the tests check by value. */
const NO_EVENTS = { cgroupEvents: false };

describe('IOASID cgroup-like limits', () => {
  it('a new child starts at max 0: nothing can be charged until the limit is raised', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const vm = core.cgroups.create(core.cgroups.root, 'vm0');
    expect(vm.max).toBe(0);
    const set = core.setAlloc({ quota: 10, cgroup: vm });
    expectErrno(core, 'EAGAIN', () => core.alloc(set, 1, 255), NO_EVENTS);
    expect(vm.events.max).toBe(1);
    core.cgroups.setMax(vm, 2);
    core.alloc(set, 1, 255);
    core.alloc(set, 1, 255);
    expect(vm.current).toBe(2);
    expectErrno(core, 'EAGAIN', () => core.alloc(set, 1, 255), NO_EVENTS);
    expect(vm.events.max).toBe(2);
  });

  it('limits are hierarchical: a parent limit caps all its children together', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const tenant = core.cgroups.create(core.cgroups.root, 'tenant');
    const vm1 = core.cgroups.create(tenant, 'vm1');
    const vm2 = core.cgroups.create(tenant, 'vm2');
    core.cgroups.setMax(tenant, 3);
    core.cgroups.setMax(vm1, 'max');
    core.cgroups.setMax(vm2, 2);
    const s1 = core.setAlloc({ quota: 10, cgroup: vm1 });
    const s2 = core.setAlloc({ quota: 10, cgroup: vm2 });
    core.setGet(s2); // keep it when its only ID is freed below
    core.alloc(s1, 1, 255);
    core.alloc(s1, 1, 255);
    const last = core.alloc(s2, 1, 255);
    expect([vm1.current, vm2.current, tenant.current, core.cgroups.root.current]).toEqual([2, 1, 3, 3]);
    expectErrno(core, 'EAGAIN', () => core.alloc(s2, 1, 255), NO_EVENTS);
    expect(tenant.events.max).toBe(1);
    expect(vm2.events.max).toBe(0);
    // a reclaim uncharges the whole path
    core.free(s2, last);
    expect([vm2.current, tenant.current, core.cgroups.root.current]).toEqual([0, 2, 2]);
    core.alloc(s2, 1, 255);
    expect(core.snapshot().cgroups).toEqual([
      { path: '/', max: 'max', current: 3, events: { max: 0 } },
      { path: '/tenant', max: 3, current: 3, events: { max: 1 } },
      { path: '/tenant/vm1', max: 'max', current: 2, events: { max: 0 } },
      { path: '/tenant/vm2', max: 2, current: 1, events: { max: 0 } },
    ]);
    expect(core.setInfo(s2).cgroup).toBe('/tenant/vm2');
  });

  it('limits are checked against capacity; lowering below current only refuses new charges', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const vm = core.cgroups.create(core.cgroups.root, 'vm');
    expectErrno(core, 'ENOSPC', () => core.cgroups.setMax(vm, 256));
    core.cgroups.setMax(vm, 255);
    const set = core.setAlloc({ quota: 10, cgroup: vm });
    core.alloc(set, 1, 255);
    core.alloc(set, 1, 255);
    core.cgroups.setMax(vm, 1);
    expect(vm.current).toBe(2);
    expectErrno(core, 'EAGAIN', () => core.alloc(set, 1, 255), NO_EVENTS);
  });

  it('a node with sets or children cannot be removed; an empty leaf can, and is then dead', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const parent = core.cgroups.create(core.cgroups.root, 'p');
    const leaf = core.cgroups.create(parent, 'leaf');
    expectErrno(core, 'EBUSY', () => core.cgroups.remove(parent));
    const set = core.setAlloc({ quota: 1, cgroup: leaf });
    expectErrno(core, 'EBUSY', () => core.cgroups.remove(leaf));
    core.setFree(set);
    core.cgroups.remove(leaf);
    expectErrno(core, 'EINVAL', () => core.setAlloc({ quota: 1, cgroup: leaf }));
    expectErrno(core, 'EINVAL', () => core.cgroups.create(leaf, 'x'));
  });
});
