/**
 * The dashboard's chart history: the hub keeps the last 60 s of chart samples in a fixed ring and
 * sends them in hello, and every rate is the difference of two real readings of the counters —
 * a page opened on a host whose counters are already large sees no spike.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import { CHART_HISTORY_MS, ChartHistory, type ChartSample } from '../../../../host/monitor/chart-history.js';
import { zeroCounters } from '../../../../host/monitor/summary.js';
import type { CounterSet, MonitorStats } from '../../../../host/monitor/types.js';
import { FakeSource, FakeSourceWithStats } from './fake-source.js';
import { WsClient, wsUrl, sleep } from './ws-client.js';

function counters(values: Partial<CounterSet>): CounterSet {
  return { ...zeroCounters(), ...values };
}

function stats(total: Partial<CounterSet>, vms: Record<string, Partial<CounterSet>> = {}): MonitorStats {
  return { total: counters(total), vms: Object.fromEntries(Object.entries(vms).map(([k, v]) => [k, counters(v)])) };
}

const ALLOCS = 0; // column of 'allocs' in a chart row
const IOTLB_RATIO = 5;

describe('ChartHistory', () => {
  it('gives no sample for the first reading, then rates from two real readings', () => {
    const h = new ChartHistory(1000);
    expect(h.record(stats({ allocs: 5e9, binds: 7e8 }), 10_000, 1_000_000)).toBeNull();
    const s = h.record(stats({ allocs: 5e9 + 40, binds: 7e8 + 10 }), 12_000, 1_002_000)!;
    expect(s).toMatchObject({ t: 1_002_000, dt: 2000 });
    expect(s.total.slice(0, 2)).toEqual([20, 5]); // per second over 2 s, not 5e9
    expect(h.samples()).toEqual([s]);
  });

  it('starts a VM\'s series only once it has two readings, and shows a reset counter as 0', () => {
    const h = new ChartHistory(1000);
    h.record(stats({ allocs: 10 }, { a: { allocs: 10 } }), 0, 0);
    const s1 = h.record(stats({ allocs: 1e6 }, { a: { allocs: 11 }, b: { allocs: 1e6 - 11 } }), 1000, 1000)!;
    expect(Object.keys(s1.vms)).toEqual(['a']); // b appeared: no baseline yet, no point
    const s2 = h.record(stats({ allocs: 3 }, { a: { allocs: 1 }, b: { allocs: 1e6 - 9 } }), 2000, 2000)!;
    expect(s2.vms.a![ALLOCS]).toBe(0); // went backwards: reset, not a negative rate
    expect(s2.vms.b![ALLOCS]).toBe(2);
    expect(s2.total[ALLOCS]).toBe(0);
  });

  it('computes the IOTLB hit ratio over the interval, null without lookups or counts', () => {
    const h = new ChartHistory(1000);
    h.record(stats({ iotlbHits: 1000, iotlbMisses: 1000 }, { a: {} }), 0, 0);
    const s = h.record(stats({ iotlbHits: 1090, iotlbMisses: 1010 }, { a: {} }), 1000, 1000)!;
    expect(s.total[IOTLB_RATIO]).toBe(0.9);
    expect(s.vms.a![IOTLB_RATIO]).toBeNull(); // the source does not count this VM's lookups
    expect(h.record(stats({ iotlbHits: 1090, iotlbMisses: 1010 }), 2000, 2000)!.total[IOTLB_RATIO]).toBeNull();
  });

  it('keeps only the last 60 s in a ring of constant size', () => {
    const h = new ChartHistory(1000);
    const capacity = h.capacity;
    expect(capacity).toBe(CHART_HISTORY_MS / 1000 + 1);
    for (let i = 0; i <= 500; i++) h.record(stats({ allocs: i * 3 }), i * 1000, 5_000_000 + i * 1000);
    const samples = h.samples();
    expect(h.capacity).toBe(capacity);
    expect(samples).toHaveLength(CHART_HISTORY_MS / 1000);
    const newest = samples[samples.length - 1]!.t;
    expect(newest).toBe(5_500_000);
    expect(samples[0]!.t).toBeGreaterThan(newest - CHART_HISTORY_MS);
    expect(samples.map((s) => s.t)).toEqual([...samples.map((s) => s.t)].sort((a, b) => a - b));
    expect(samples.every((s) => s.total[ALLOCS] === 3)).toBe(true);
  });

  it('drops samples older than the window even when ticks came late', () => {
    const h = new ChartHistory(1000);
    // the event loop stalled: readings 5 s apart, so 61 slots would span 5 minutes
    for (let i = 0; i <= 100; i++) h.record(stats({}), i * 5000, i * 5000);
    const samples = h.samples();
    expect(samples.length).toBeLessThanOrEqual(12);
    expect(samples[0]!.t).toBeGreaterThan(100 * 5000 - CHART_HISTORY_MS);
  });

  it('copies the readings, so a source that updates one object in place still gets rates', () => {
    const h = new ChartHistory(1000);
    const live = stats({ binds: 100 });
    h.record(live, 0, 0);
    live.total.binds += 7;
    expect(h.record(live, 1000, 1000)!.total[1]).toBe(7);
  });
});

describe('dashboard hub: chart history', () => {
  let monitor: MonitorHandle | undefined;
  let client: WsClient | undefined;
  let timer: NodeJS.Timeout | undefined;

  afterEach(async () => {
    clearInterval(timer);
    client?.close();
    await monitor?.close();
    monitor = client = timer = undefined;
  });

  it('sends the recent history on connect, with no spike although the counters are huge', async () => {
    const src = new FakeSourceWithStats();
    src.bump('vm-a', 'allocs', 4e9); // a host that has been running for a long time
    src.bump('vm-b', 'invalidations', 9e9);
    timer = setInterval(() => {
      src.bump('vm-a', 'allocs', 1);
      src.bump('vm-b', 'invalidations', 2);
    }, 10);
    monitor = await startMonitor(src, { chartIntervalMs: 40 });
    await sleep(400); // ~10 chart intervals before anyone looks
    client = await WsClient.open(wsUrl(monitor.url));
    const hello = await client.next('hello');
    const { history } = hello;
    expect(history).toMatchObject({ intervalMs: 40, windowMs: CHART_HISTORY_MS });
    expect(history.columns).toEqual(['allocs', 'binds', 'invalidations', 'faults', 'pageRequests', 'iotlbRatio']);
    const samples = history.samples as ChartSample[];
    expect(samples.length).toBeGreaterThanOrEqual(2);
    for (const s of samples) {
      // ~100/s and ~200/s; a rate against an empty baseline would be ~1e11/s
      expect(s.total[ALLOCS]).toBeLessThan(10_000);
      expect(s.total[2]).toBeLessThan(20_000);
      expect(s.vms['vm-a']![ALLOCS]).toBeLessThan(10_000);
    }
    expect(samples.some((s) => (s.total[ALLOCS] as number) > 0)).toBe(true);
    // then live samples, one per interval, newer than the history
    const live = (await client.next('chart')).sample as ChartSample;
    expect(live.t).toBeGreaterThanOrEqual(samples[samples.length - 1]!.t);
    expect(live.total[ALLOCS]).toBeLessThan(10_000);
  });

  it('samples trace-derived counters too, and an idle host has an all-zero history', async () => {
    const src = new FakeSource();
    monitor = await startMonitor(src, { chartIntervalMs: 30 });
    await sleep(200);
    client = await WsClient.open(wsUrl(monitor.url));
    const { history } = await client.next('hello');
    expect(history.samples.length).toBeGreaterThanOrEqual(2);
    for (const s of history.samples as ChartSample[]) expect(s.total.slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    src.events.emit({ kind: 'alloc', side: 'host', vm: 'vm-a', name: 'ALLOC' });
    const s = (await client.next('chart', (m) => (m.sample.total[ALLOCS] as number) > 0)).sample as ChartSample;
    expect(s.total[ALLOCS]).toBeLessThan(1000);
  });

  it('gives a client that connects before the first interval an empty history', async () => {
    monitor = await startMonitor(new FakeSourceWithStats(), { chartIntervalMs: 60_000 });
    client = await WsClient.open(wsUrl(monitor.url));
    expect((await client.next('hello')).history.samples).toEqual([]);
  });
});
