/**
 * Counters derived from trace events, for sources that do not keep their own (`stats()`
 * absent). Only host-side events count, so an in-process bus that carries both halves' events
 * does not count an allocation twice. IOTLB hits and misses are not trace events: they stay
 * null unless the owner adds them with `addIotlb`.
 */
import type { TraceBus } from '../../src/trace/bus.js';
import type { TraceEvent, TraceKind } from '../../src/trace/events.js';
import type { CounterSet, MonitorStats } from './types.js';
import { zeroCounters } from './summary.js';

const COUNTER_OF_KIND: Partial<Record<TraceKind, keyof CounterSet>> = {
  alloc: 'allocs',
  free: 'frees',
  bind: 'binds',
  unbind: 'unbinds',
  invalidate: 'invalidations',
  fault: 'faults',
  'page-request': 'pageRequests',
};

/** Events without a `vm` are counted in the total only. */
export class TraceCounters {
  private readonly total = zeroCounters();
  private readonly vms = new Map<string, CounterSet>();
  private readonly unsubscribe: () => void;

  constructor(bus: TraceBus) {
    this.unsubscribe = bus.on((ev) => this.count(ev));
  }

  count(ev: TraceEvent): void {
    if (ev.side !== 'host') return;
    const key = COUNTER_OF_KIND[ev.kind];
    if (key === undefined) return;
    bump(this.total, key, 1);
    if (ev.vm !== undefined) bump(this.forVm(ev.vm), key, 1);
  }

  /** Add IOTLB lookups observed by the owner (turns the null IOTLB figures into numbers). */
  addIotlb(vm: string | undefined, hits: number, misses: number): void {
    bump(this.total, 'iotlbHits', hits);
    bump(this.total, 'iotlbMisses', misses);
    if (vm !== undefined) {
      const c = this.forVm(vm);
      bump(c, 'iotlbHits', hits);
      bump(c, 'iotlbMisses', misses);
    }
  }

  stats(): MonitorStats {
    const vms: Record<string, CounterSet> = {};
    for (const [name, c] of this.vms) vms[name] = { ...c };
    return { total: { ...this.total }, vms };
  }

  dispose(): void {
    this.unsubscribe();
  }

  private forVm(vm: string): CounterSet {
    let c = this.vms.get(vm);
    if (c === undefined) {
      c = zeroCounters();
      this.vms.set(vm, c);
    }
    return c;
  }
}

function bump(c: CounterSet, key: keyof CounterSet, n: number): void {
  c[key] = (c[key] ?? 0) + n;
}
