import { describe, it, expect } from 'vitest';
import { IoasidCore, IOASID_NOTIFY_FLAG_ALL, IOASID_NOTIFY_FLAG_SET, type IoasidNotifier, type IoasidPriority } from '../../../../host/ioasid/index.js';

function recorder(log: string[], name: string, priority?: IoasidPriority): IoasidNotifier {
  return { priority, call: (a) => log.push(`${name}:${a.event}:${a.id}`) };
}

describe('IOASID notifier chains', () => {
  it('call CPU → IOMMU → DEVICE → LAST whatever the registration order, across set and global chains', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const set = core.setAlloc({ quota: 4 });
    const log: string[] = [];
    core.registerNotifier(set, recorder(log, 'last', 'LAST'));
    core.registerNotifier(set, recorder(log, 'vdcm', 'DEVICE'));
    core.registerNotifier(null, recorder(log, 'iommu', 'IOMMU'));
    core.registerNotifier(null, recorder(log, 'kvm', 'CPU'));
    core.registerNotifier(set, recorder(log, 'vdcm2', 'DEVICE'));
    const id = core.alloc(set, 1, 255);
    // ALLOC goes to the set chain only
    expect(log).toEqual([`vdcm:ALLOC:${id}`, `vdcm2:ALLOC:${id}`, `last:ALLOC:${id}`]);
    log.length = 0;
    core.notify(id, 'BIND');
    expect(log).toEqual([`kvm:BIND:${id}`, `iommu:BIND:${id}`, `vdcm:BIND:${id}`, `vdcm2:BIND:${id}`, `last:BIND:${id}`]);
    log.length = 0;
    core.notify(id, 'UNBIND', undefined, IOASID_NOTIFY_FLAG_ALL);
    expect(log).toEqual([`kvm:UNBIND:${id}`, `iommu:UNBIND:${id}`]);
    log.length = 0;
    core.notify(id, 'UNBIND', undefined, IOASID_NOTIFY_FLAG_SET);
    expect(log).toEqual([`vdcm:UNBIND:${id}`, `vdcm2:UNBIND:${id}`, `last:UNBIND:${id}`]);
  });

  it('a block (un)registered while an event is being called takes effect from the next event', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const set = core.setAlloc({ quota: 4 });
    const log: string[] = [];
    const late = recorder(log, 'late', 'LAST');
    const gone = recorder(log, 'gone', 'LAST');
    const globalLate = recorder(log, 'globalLate', 'LAST');
    core.registerNotifier(set, {
      priority: 'CPU',
      call: (a) => {
        log.push(`first:${a.event}`);
        if (a.event !== 'BIND') return;
        core.registerNotifier(set, late);
        core.registerNotifier(null, globalLate);
        core.unregisterNotifier(set, gone);
      },
    });
    core.registerNotifier(set, gone);
    const id = core.alloc(set, 1, 255);
    log.length = 0;
    core.notify(id, 'BIND');
    expect(log).toEqual(['first:BIND', `gone:BIND:${id}`]);
    log.length = 0;
    core.notify(id, 'UNBIND');
    expect(log).toEqual(['first:UNBIND', `late:UNBIND:${id}`, `globalLate:UNBIND:${id}`]);
  });

  it('pass the SPID, set, private data and caller data', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const set = core.setAlloc({ quota: 4 });
    const seen: unknown[] = [];
    core.registerNotifier(null, { call: (a) => seen.push({ ...a }) });
    const id = core.alloc(set, 1, 255, 'priv');
    core.attachSpid(set, id, 7);
    core.notify(id, 'BIND', { flptr: 0x1000 });
    expect(seen).toEqual([{ event: 'BIND', id, spid: 7, set, pdata: 'priv', data: { flptr: 0x1000 } }]);
  });

  it('a throwing notifier does not stop the chain', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const set = core.setAlloc({ quota: 4 });
    const log: string[] = [];
    core.registerNotifier(null, { priority: 'CPU', call: () => { throw new Error('boom'); } });
    core.registerNotifier(null, recorder(log, 'after', 'DEVICE'));
    const id = core.alloc(set, 1, 255);
    core.notify(id, 'BIND');
    expect(log).toEqual([`after:BIND:${id}`]);
  });

  it('unregistered blocks are no longer called', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const set = core.setAlloc({ quota: 4 });
    const log: string[] = [];
    const nb = recorder(log, 'x');
    core.registerNotifier(set, nb);
    core.unregisterNotifier(set, nb);
    core.alloc(set, 1, 255);
    expect(log).toEqual([]);
  });

  it('FREE is sent once per free, only when someone besides the allocation holds a reference', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const set = core.setAlloc({ quota: 4 });
    core.setGet(set);
    const log: string[] = [];
    core.registerNotifier(null, recorder(log, 'g'));
    const a = core.alloc(set, 1, 255);
    core.free(set, a); // no holder: reclaimed silently
    const b = core.alloc(set, 1, 255);
    core.get(set, b, 'iommu');
    core.free(set, b);
    core.free(set, b);
    core.free(null, b);
    expect(log).toEqual([`g:FREE:${b}`]);
  });
});

describe('per-MM notifier registration', () => {
  it('waits until the MM set is created, then receives its events (no replay of the past)', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const mm = { name: 'mm1' };
    const log: string[] = [];
    const kvm = recorder(log, 'kvm', 'CPU');
    core.registerMmNotifier(mm, kvm);
    expect(core.isMmNotifierPending(mm, kvm)).toBe(true);
    // events of other sets do not reach it
    const other = core.setAlloc({ type: 'MM', token: { name: 'mm2' }, quota: 4 });
    core.alloc(other, 1, 255);
    expect(log).toEqual([]);
    const set = core.setAlloc({ type: 'MM', token: mm, quota: 4 });
    expect(core.isMmNotifierPending(mm, kvm)).toBe(false);
    const id = core.alloc(set, 1, 255);
    core.notify(id, 'BIND');
    expect(log).toEqual([`kvm:ALLOC:${id}`, `kvm:BIND:${id}`]);
  });

  it('goes back to waiting when the MM set is destroyed and joins the next set of the same MM', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const mm = { name: 'mm1' };
    const log: string[] = [];
    const kvm = recorder(log, 'kvm');
    core.registerMmNotifier(mm, kvm);
    const s1 = core.setAlloc({ type: 'MM', token: mm, quota: 4 });
    core.setFree(s1);
    expect(core.isMmNotifierPending(mm, kvm)).toBe(true);
    const s2 = core.setAlloc({ type: 'MM', token: mm, quota: 4 });
    const id = core.alloc(s2, 1, 255);
    expect(log).toEqual([`kvm:ALLOC:${id}`]);
    core.unregisterMmNotifier(mm, kvm);
    core.notify(id, 'BIND');
    expect(log).toEqual([`kvm:ALLOC:${id}`]);
  });

  it('registers directly on an existing empty MM set, and a waiting block can be withdrawn', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const log: string[] = [];
    const set = core.setAlloc({ type: 'MM', token: 'mmA', quota: 4 });
    core.registerMmNotifier('mmA', recorder(log, 'kvm'));
    const id = core.alloc(set, 1, 255);
    expect(log).toEqual([`kvm:ALLOC:${id}`]);
    const late = recorder(log, 'late');
    core.registerMmNotifier('mmB', late);
    core.unregisterMmNotifier('mmB', late);
    expect(core.isMmNotifierPending('mmB', late)).toBe(false);
    const setB = core.setAlloc({ type: 'MM', token: 'mmB', quota: 4 });
    core.alloc(setB, 1, 255);
    expect(log).toEqual([`kvm:ALLOC:${id}`]);
  });
});
