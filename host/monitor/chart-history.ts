/**
 * The dashboard charts' recent history, kept by the host so a page opened mid-run draws the last
 * minute at once. Every chart interval the hub reads the cumulative counters (MonitorStats) and
 * records one sample: per-second rates over the interval since the previous reading, for the
 * host and for each VM. A rate is only ever the difference of two real readings of the same
 * counters — the first reading (hub start) and a VM's first appearance give no point, so a page
 * never sees a jump from an empty baseline. Samples live in a fixed ring covering
 * CHART_HISTORY_MS; memory is constant for a given number of VMs.
 */
import type { CounterSet, MonitorStats } from './types.js';

/** The rate series a chart sample carries, in the order of a `ChartRow`. */
export const CHART_COUNTERS = ['allocs', 'binds', 'invalidations', 'faults', 'pageRequests'] as const;
export type ChartCounter = (typeof CHART_COUNTERS)[number];

/** How far back the host keeps chart samples. */
export const CHART_HISTORY_MS = 60_000;
/** Default time between chart samples. */
export const DEFAULT_CHART_INTERVAL_MS = 1000;

/**
 * One interval of one counter set: the rates (per second) of CHART_COUNTERS in that order, then
 * the IOTLB hit ratio over the interval (null when there were no lookups or the source does
 * not count them). Rates are rounded to 0.01/s to keep the history message small.
 */
export type ChartRow = (number | null)[];

export interface ChartSample {
  /** Wall-clock time (ms since the epoch) of the reading that closed the interval. */
  t: number;
  /** Length of the interval, ms. */
  dt: number;
  total: ChartRow;
  /** Per VM present in both readings. */
  vms: Record<string, ChartRow>;
}

/** What a client gets on connect (hello.history). */
export interface ChartHistorySnapshot {
  intervalMs: number;
  windowMs: number;
  /** Names of the row's columns: CHART_COUNTERS, then 'iotlbRatio'. */
  columns: string[];
  /** Oldest first. */
  samples: ChartSample[];
}

function rate(delta: number, seconds: number): number {
  // A counter that went backwards was reset (its VM or the host restarted): no rate to show.
  return delta > 0 ? Math.round((delta / seconds) * 100) / 100 : 0;
}

function row(prev: CounterSet, cur: CounterSet, seconds: number): ChartRow {
  const r: ChartRow = CHART_COUNTERS.map((c) => rate(cur[c] - prev[c], seconds));
  let ratio: number | null = null;
  if (cur.iotlbHits !== null && cur.iotlbMisses !== null && prev.iotlbHits !== null && prev.iotlbMisses !== null) {
    const dh = cur.iotlbHits - prev.iotlbHits;
    const dm = cur.iotlbMisses - prev.iotlbMisses;
    if (dh >= 0 && dm >= 0 && dh + dm > 0) ratio = Math.round((dh / (dh + dm)) * 10_000) / 10_000;
  }
  r.push(ratio);
  return r;
}

function copyStats(s: MonitorStats): MonitorStats {
  const vms: Record<string, CounterSet> = {};
  for (const [name, c] of Object.entries(s.vms)) vms[name] = { ...c };
  return { total: { ...s.total }, vms };
}

export class ChartHistory {
  private readonly ring: (ChartSample | undefined)[];
  /** Index the next sample goes to; `count` samples end just before it. */
  private next = 0;
  private count = 0;
  private last: { mono: number; stats: MonitorStats } | null = null;

  constructor(readonly intervalMs: number = DEFAULT_CHART_INTERVAL_MS) {
    // One slot more than the window needs, so a full window survives a slightly early tick.
    this.ring = new Array<ChartSample | undefined>(Math.ceil(CHART_HISTORY_MS / intervalMs) + 1);
  }

  get capacity(): number {
    return this.ring.length;
  }

  /**
   * Take a reading of the counters at monotonic time `monoMs` (wall clock `wallMs`). Returns
   * the sample it closes, or null for the first reading (nothing to difference against yet).
   */
  record(stats: MonitorStats, monoMs: number, wallMs: number): ChartSample | null {
    const prev = this.last;
    // A copy: a source may hand out the same object every time and update it in place.
    this.last = { mono: monoMs, stats: copyStats(stats) };
    if (prev === null || monoMs <= prev.mono) return null;
    const seconds = (monoMs - prev.mono) / 1000;
    const vms: Record<string, ChartRow> = {};
    for (const [name, cur] of Object.entries(stats.vms)) {
      const before = prev.stats.vms[name];
      if (before !== undefined) vms[name] = row(before, cur, seconds);
    }
    const sample: ChartSample = { t: wallMs, dt: Math.round(monoMs - prev.mono), total: row(prev.stats.total, stats.total, seconds), vms };
    this.ring[this.next] = sample;
    this.next = (this.next + 1) % this.ring.length;
    this.count = Math.min(this.count + 1, this.ring.length);
    return sample;
  }

  /** The samples of the last CHART_HISTORY_MS (by their wall-clock time), oldest first. */
  samples(): ChartSample[] {
    const out: ChartSample[] = [];
    const n = this.ring.length;
    for (let i = 0; i < this.count; i++) out.push(this.ring[(this.next - this.count + i + n) % n]!);
    const newest = out[out.length - 1];
    return newest === undefined ? out : out.filter((s) => s.t > newest.t - CHART_HISTORY_MS);
  }

  snapshot(): ChartHistorySnapshot {
    return { intervalMs: this.intervalMs, windowMs: CHART_HISTORY_MS, columns: [...CHART_COUNTERS, 'iotlbRatio'], samples: this.samples() };
  }
}
