/**
 * The guest-SVA life cycle of an IOASID (the life-cycle table of Documentation/driver-api/
 * ioasid.rst in Jacob Pan's IOASID series for Linux) as a test: the VFIO / IOMMU / KVM / VDCM
 * steps and the reference count after each, then the misbehaving order (free before unbind).
 */
import { describe, it, expect } from 'vitest';
import { IoasidCore, type IoasidNotifyArgs, type IoasidSet } from '../../../../host/ioasid/index.js';

const GPASID = 101;

/** The actors of the life-cycle table, wired to one VM's MM set. */
function setupVm(core: IoasidCore) {
  const mm = { name: 'vm0-mm' };
  const log: string[] = [];
  const kvmMap = new Map<number, number>(); // gPASID → hPASID (ENQCMD translation)
  let set!: IoasidSet;
  // KVM registers per MM before the VM's set exists (step 1, ioasid_register_notifier_mm).
  const kvm = {
    priority: 'CPU' as const,
    putOnFree: true,
    call(a: IoasidNotifyArgs) {
      log.push(`kvm:${a.event}`);
      if (a.event === 'BIND') {
        core.get(a.set, a.id, 'kvm');
        kvmMap.set(a.spid!, a.id);
      } else if (a.event === 'UNBIND' || (a.event === 'FREE' && this.putOnFree)) {
        kvmMap.delete(a.spid!);
        core.put(a.set, a.id, 'kvm');
      }
    },
  };
  core.registerMmNotifier(mm, kvm);
  return { mm, log, kvmMap, kvm, get set() { return set; }, createSet() { set = core.setAlloc({ type: 'MM', token: mm, quota: 16, name: 'vm0' }); core.setGet(set); return set; } };
}

describe('IOASID life cycle in guest SVA', () => {
  it('follows the reference counts of the table and the ID is reclaimed and reusable', () => {
    const core = new IoasidCore();
    const vm = setupVm(core);
    const set = vm.createSet();
    const refs = (id: number) => core.idInfo(id)?.refs ?? 0;

    // 2 ioasid_alloc() → 1
    const hpasid = core.alloc(set, 1, 1000);
    expect(refs(hpasid)).toBe(1);
    expect(core.idInfo(hpasid)).toMatchObject({ state: 'idle', users: [] });

    // 3-4 bind_gpasid → iommu_bind → ioasid_get() → 2
    core.attachSpid(set, hpasid, GPASID);
    core.get(null, hpasid, 'iommu');
    expect(refs(hpasid)).toBe(2);
    expect(core.idInfo(hpasid)!.state).toBe('active');

    // 5-7 ioasid_notify(BIND) → KVM ioasid_get() → 3, vmcs update
    core.notify(hpasid, 'BIND');
    expect(vm.log).toEqual(['kvm:ALLOC', 'kvm:BIND']);
    expect(refs(hpasid)).toBe(3);
    expect(vm.kvmMap.get(GPASID)).toBe(hpasid);

    // 8-10 VDCM: hpasid = find_by_spid(gpasid) with get → 4
    expect(core.findBySpid(set, GPASID, 'vdcm')).toBe(hpasid);
    expect(refs(hpasid)).toBe(4);
    expect(core.idInfo(hpasid)).toMatchObject({ refs: 4, users: ['iommu', 'kvm', 'vdcm'], spid: GPASID, state: 'active' });

    // 14-16 mdev_clear / vdev_clear → ioasid_put() → 3
    expect(core.put(set, hpasid, 'vdcm')).toBe(false);
    expect(refs(hpasid)).toBe(3);
    // 17-21 unbind_gpasid → iommu_unbind → ioasid_notify(UNBIND) → KVM put → 2
    core.notify(hpasid, 'UNBIND');
    expect(refs(hpasid)).toBe(2);
    expect(vm.kvmMap.size).toBe(0);
    core.detachSpid(set, hpasid);
    // 22 ioasid_put() → 1
    expect(core.put(null, hpasid, 'iommu')).toBe(false);
    expect(core.idInfo(hpasid)).toMatchObject({ refs: 1, users: [], state: 'idle', spid: null });

    // 23 ioasid_free() → 0, reclaimed
    expect(core.free(set, hpasid)).toBe(true);
    expect(core.idInfo(hpasid)).toBeNull();
    expect(core.setInfo(set).used).toBe(0);
    // no FREE notification: nobody but the allocation held a reference
    expect(vm.log).toEqual(['kvm:ALLOC', 'kvm:BIND', 'kvm:UNBIND']);

    // New life cycle: the same ID comes back
    expect(core.alloc(set, 1, 1000)).toBe(hpasid);
    expect(refs(hpasid)).toBe(1);
  });

  it('free before unbind: FREE_PENDING, one FREE per holder in priority order, reclaim at the last put, a later unbind finds nothing', () => {
    const core = new IoasidCore();
    const vm = setupVm(core);
    const events: string[] = [];
    // The IOMMU driver listens globally for FREE (as in the life-cycle table) and puts later.
    let iommuFreeSeen = 0;
    core.registerNotifier(null, { priority: 'IOMMU', call: (a) => { if (a.event === 'FREE') { iommuFreeSeen++; events.push('iommu:FREE'); } } });
    const set = vm.createSet();
    // VDCM listens on the set and drops its reference on FREE.
    core.registerNotifier(set, {
      priority: 'DEVICE',
      call: (a) => {
        if (a.event !== 'FREE') return;
        events.push('vdcm:FREE');
        core.put(a.set, a.id, 'vdcm');
      },
    });
    core.registerNotifier(set, { priority: 'LAST', call: (a) => events.push(`last:${a.event}`) });

    const hpasid = core.alloc(set, 1, 1000);
    core.attachSpid(set, hpasid, GPASID);
    core.get(null, hpasid, 'iommu');
    core.notify(hpasid, 'BIND');
    expect(core.findBySpid(set, GPASID, 'vdcm')).toBe(hpasid);
    expect(core.idInfo(hpasid)!.refs).toBe(4);
    events.length = 0;
    vm.log.length = 0;

    // The guest frees the PASID while it is still bound.
    expect(core.free(set, hpasid)).toBe(false);
    // KVM (CPU) then IOMMU then VDCM (DEVICE) then LAST, each exactly once.
    expect(vm.log).toEqual(['kvm:FREE']);
    expect(events).toEqual(['iommu:FREE', 'vdcm:FREE', 'last:FREE']);
    // KVM and VDCM dropped theirs; the IOMMU still holds one.
    expect(core.idInfo(hpasid)).toMatchObject({ state: 'free-pending', refs: 1, users: ['iommu'] });
    // No new references to a dying ID, but find still works until the last put.
    expect(core.findBySpid(set, GPASID, 'vdcm')).toBeNull();
    expect(core.findBySpid(set, GPASID)).toBe(hpasid);
    // Free again: nothing happens, no second FREE.
    expect(core.free(set, hpasid)).toBe(false);
    expect(iommuFreeSeen).toBe(1);
    expect(vm.log).toEqual(['kvm:FREE']);

    // The IOMMU's put is the last one: reclaimed.
    expect(core.put(null, hpasid, 'iommu')).toBe(true);
    expect(core.idInfo(hpasid)).toBeNull();

    // The late unbind finds nothing.
    expect(core.findBySpid(set, GPASID)).toBeNull();
    expect(() => core.notify(hpasid, 'UNBIND')).toThrow(/ENOENT/);
    expect(() => core.detachSpid(set, hpasid)).toThrow(/ENOENT/);
    expect(() => core.put(null, hpasid, 'iommu')).toThrow(/EINVAL/);
  });

  it('free_all_in_set on VM teardown reclaims idle IDs and leaves held ones pending until their last put; the released set goes with its last ID', () => {
    const core = new IoasidCore();
    const set = core.setAlloc({ quota: 8, name: 'vm1' });
    core.setGet(set);
    const a = core.alloc(set, 1, 100);
    const b = core.alloc(set, 1, 100);
    const c = core.alloc(set, 1, 100);
    core.get(set, b, 'iommu');
    expect(core.freeAllInSet(set)).toEqual({ reclaimed: 2, pending: 1 });
    expect(core.idInfo(a)).toBeNull();
    expect(core.idInfo(c)).toBeNull();
    expect(core.idInfo(b)).toMatchObject({ state: 'free-pending', refs: 1 });
    expect(core.setPut(set)).toBe(false); // still has b
    expect(core.isSetValid(set)).toBe(true);
    const availBefore = core.capacity.available;
    expect(core.put(null, b, 'iommu')).toBe(true);
    expect(core.isSetValid(set)).toBe(false);
    expect(core.capacity.available).toBe(availBefore + 8);
  });
});

describe('two VMs with the same guest PASID', () => {
  it('map gPASID 101 to different host PASIDs, and neither set can see, get or free the other’s IDs', () => {
    const core = new IoasidCore();
    const vmA = core.setAlloc({ type: 'MM', token: 'vmA', quota: 4, name: 'A' });
    const vmB = core.setAlloc({ type: 'MM', token: 'vmB', quota: 4, name: 'B' });
    const hA = core.alloc(vmA, 1, 1 << 20);
    const hB = core.alloc(vmB, 1, 1 << 20);
    core.attachSpid(vmA, hA, GPASID);
    core.attachSpid(vmB, hB, GPASID);
    expect(hA).not.toBe(hB);
    expect(core.findBySpid(vmA, GPASID)).toBe(hA);
    expect(core.findBySpid(vmB, GPASID)).toBe(hB);

    for (const [own, other] of [[vmA, hB], [vmB, hA]] as const) {
      expect(() => core.get(own, other, 'kvm')).toThrow(/EACCES/);
      expect(() => core.free(own, other)).toThrow(/EACCES/);
      expect(() => core.put(own, other, 'kvm')).toThrow(/EACCES/);
      expect(() => core.find(own, other)).toThrow(/EACCES/);
      expect(() => core.detachSpid(own, other)).toThrow(/EACCES/);
      expect(() => core.attachData(own, other, 'x')).toThrow(/EACCES/);
    }
    const seenA: number[] = [];
    core.forEach(vmA, (id) => seenA.push(id));
    expect(seenA).toEqual([hA]);
    expect(core.snapshotSet(vmB).ids.map((i) => i.id)).toEqual([hB]);
    // both IDs untouched
    expect(core.idInfo(hA)).toMatchObject({ refs: 1, spid: GPASID, state: 'idle' });
    expect(core.idInfo(hB)).toMatchObject({ refs: 1, spid: GPASID, state: 'idle' });
    // freeing A's PASID leaves B's mapping alone; A's set (not held) goes with its last ID
    expect(core.free(vmA, hA)).toBe(true);
    expect(core.isSetValid(vmA)).toBe(false);
    expect(core.findMmSet('vmA')).toBeNull();
    expect(core.findBySpid(vmB, GPASID)).toBe(hB);
    expect(core.idInfo(hB)).toMatchObject({ refs: 1, spid: GPASID });
  });
});

describe('spidOf and isFreePending', () => {
  it('say what idInfo says, for IDs in every state and for unallocated ones', async () => {
    const { callFixture } = await import('./core-calls.js');
    const f = callFixture();
    for (const id of [f.idle, f.active, f.withSpid, f.pending, f.other, 0, 200, 255]) {
      const info = f.core.idInfo(id);
      expect(f.core.spidOf(id)).toBe(info?.spid ?? null);
      expect(f.core.isFreePending(id)).toBe(info?.state === 'free-pending');
    }
    expect(f.core.spidOf(f.withSpid)).toBe(7);
    expect(f.core.isFreePending(f.pending)).toBe(true);
  });
});
