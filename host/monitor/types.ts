/**
 * Contract between the dashboard server and whatever feeds it (docs/design.md §6). The host service
 * implements `MonitorSource`; tests implement it with synthetic snapshots. Nothing here
 * depends on host internals.
 */
import type { HostSnapshot } from '../../src/api/types.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { PageTablePoolStats } from '../iommu/pt-pool.js';

/** The counters that count events (what a VM's requests did), always known. */
export const EVENT_COUNTER_NAMES = ['allocs', 'frees', 'binds', 'unbinds', 'invalidations', 'faults', 'pageRequests'] as const;

export type EventCounterName = (typeof EVENT_COUNTER_NAMES)[number];

/**
 * Cumulative event counters for one VM (or the whole host). Values only grow; the page turns
 * them into rates by differencing over time. `iotlbHits`/`iotlbMisses` are null when the
 * source cannot count them (e.g. counters derived from trace events only).
 */
export interface CounterSet extends Record<EventCounterName, number> {
  iotlbHits: number | null;
  iotlbMisses: number | null;
}

export const COUNTER_NAMES = [...EVENT_COUNTER_NAMES, 'iotlbHits', 'iotlbMisses'] as const satisfies readonly (keyof CounterSet)[];

export type CounterName = (typeof COUNTER_NAMES)[number];

/** Counters per VM (keyed by VM name) and for the whole host. */
export interface MonitorStats {
  total: CounterSet;
  vms: Record<string, CounterSet>;
}

/**
 * Control actions a dashboard client may ask for. Every one needs the access token; a monitor
 * started without a token is read-only and refuses them all.
 *   disconnect-vm — drop the VM's connection (`vm` names it), as if its process had died.
 */
export const CONTROL_ACTIONS = ['disconnect-vm'] as const;
export type MonitorControlAction = (typeof CONTROL_ACTIONS)[number];

/** Page-table pool counters of the host IOMMU (host/iommu/pt-pool.ts). */
export type PoolFigures = PageTablePoolStats;

/**
 * The host process's own resource figures, answered in the dashboard's pong (for soak runs and
 * leak tests; Node's process.memoryUsage()). `heapUsedAfterGcBytes` is measured right after a
 * full collection when the process runs with --expose-gc (at most one collection per second;
 * `gcAgeMs` says how old the figure is), else null.
 */
export interface HostFigures {
  rssBytes: number;
  heapUsedBytes: number;
  heapUsedAfterGcBytes: number | null;
  /** Of that, V8's code spaces (compiled functions; grows while the JIT warms up). */
  codeSpaceAfterGcBytes: number | null;
  gcAgeMs: number | null;
  externalBytes: number;
  arrayBuffersBytes: number;
  /** Open file descriptors of the process (/proc/self/fd), null where that is not readable. */
  openFds: number | null;
  pageTablePool: PoolFigures | null;
  /** What the host IOMMU holds (host/iommu/host-iommu.ts stats), null when not reported. */
  iommu: IommuFigures | null;
}

/** Sizes of the host IOMMU's state: domains, devices and translation-cache occupancy. */
export interface IommuFigures {
  domains: number;
  devices: number;
  iotlbEntries: number;
  iotlbBuckets: number;
  pasidCacheEntries: number;
}

export interface MonitorSource {
  /** The current host state (the snapshot shape of docs/design.md §7). Called at most once per summary interval. */
  snapshot(): HostSnapshot | Promise<HostSnapshot>;
  /** Cumulative counters. When absent the monitor counts trace events itself (no IOTLB figures). */
  stats?(): MonitorStats;
  /** Live trace events, batched to clients. */
  events: TraceBus;
  /** Perform a control action; reject with a VsvaError to report a precise errno to the client. */
  control?(action: MonitorControlAction, vm?: string): Promise<unknown>;
  /** The process's resource figures (answered in pong); absent: pong carries none. */
  figures?(): HostFigures;
}

export interface MonitorOptions {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Address to bind; default 127.0.0.1. Anything but loopback requires `token`. */
  host?: string;
  /** Access token: required for control actions and for non-loopback binds (≥ 16 characters). */
  token?: string;
  /** Summary cadence in ms (default 500, i.e. ≤ 2 summaries per second; min 50). */
  summaryIntervalMs?: number;
  /** Event batch cadence in ms (default 200). */
  eventIntervalMs?: number;
  /** Most events sent per batch (default 200); the rest are counted as dropped. */
  maxEventsPerBatch?: number;
  /**
   * Chart sample cadence in ms (default 1000, min 20). The hub reads `stats()` this often even
   * with no client connected and keeps the last 60 s of rates (chart-history.ts).
   */
  chartIntervalMs?: number;
}

export interface MonitorHandle {
  /** Base URL of the page, e.g. http://127.0.0.1:41234/ (no token in it). */
  url: string;
  port: number;
  /** Stop serving: closes every client (1001 going away) and the listening socket. */
  close(): Promise<void>;
}
