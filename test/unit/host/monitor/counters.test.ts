import { describe, it, expect } from 'vitest';
import { TraceBus } from '../../../../src/trace/bus.js';
import { TraceCounters } from '../../../../host/monitor/trace-counters.js';
import { EventBatcher } from '../../../../host/monitor/event-batcher.js';
import type { TraceEvent } from '../../../../src/trace/events.js';

const ev = (i: number): TraceEvent => ({ ts: i, kind: 'alloc', side: 'host', name: `e${i}` });

describe('event batcher', () => {
  it('keeps the first `cap` events of a burst and counts the rest as dropped', () => {
    const b = new EventBatcher(3);
    for (let i = 0; i < 10; i++) b.push(ev(i));
    const batch = b.take();
    expect(batch?.events.map((e) => e.name)).toEqual(['e0', 'e1', 'e2']);
    expect(batch?.dropped).toBe(7);
  });

  it('starts a fresh batch after each take, and has nothing when idle', () => {
    const b = new EventBatcher(3);
    expect(b.take()).toBeNull();
    b.push(ev(1));
    b.take();
    expect(b.take()).toBeNull();
    b.push(ev(2));
    expect(b.take()).toEqual({ events: [ev(2)], dropped: 0 });
  });
});

describe('trace counters', () => {
  it('counts host-side events by kind, per VM and in total', () => {
    const bus = new TraceBus();
    const c = new TraceCounters(bus);
    bus.emit({ kind: 'alloc', side: 'host', vm: 'a', name: 'PASID_ALLOC' });
    bus.emit({ kind: 'alloc', side: 'host', vm: 'b', name: 'PASID_ALLOC' });
    bus.emit({ kind: 'bind', side: 'host', vm: 'a', name: 'BIND' });
    bus.emit({ kind: 'invalidate', side: 'host', name: 'global flush' });
    bus.emit({ kind: 'page-request', side: 'host', vm: 'a', name: 'PRQ' });
    bus.emit({ kind: 'alloc', side: 'guest', vm: 'a', name: 'VCMD ALLOC' }); // guest side: not counted
    bus.emit({ kind: 'mmio', side: 'host', vm: 'a', name: 'write' }); // not a counter
    const s = c.stats();
    expect(s.total).toMatchObject({ allocs: 2, binds: 1, invalidations: 1, pageRequests: 1, iotlbHits: null });
    expect(s.vms.a).toMatchObject({ allocs: 1, binds: 1, pageRequests: 1, invalidations: 0 });
    expect(s.vms.b).toMatchObject({ allocs: 1 });
    c.addIotlb('a', 9, 1);
    expect(c.stats().vms.a).toMatchObject({ iotlbHits: 9, iotlbMisses: 1 });
    expect(c.stats().total).toMatchObject({ iotlbHits: 9, iotlbMisses: 1 });
    c.dispose();
    bus.emit({ kind: 'alloc', side: 'host', vm: 'a', name: 'PASID_ALLOC' });
    expect(c.stats().total.allocs).toBe(2);
    expect(bus.active).toBe(false);
  });

  it('hands out copies, not its live counters', () => {
    const bus = new TraceBus();
    const c = new TraceCounters(bus);
    const before = c.stats();
    bus.emit({ kind: 'fault', side: 'host', vm: 'a', name: 'fault' });
    expect(before.total.faults).toBe(0);
    expect(c.stats().total.faults).toBe(1);
  });
});
