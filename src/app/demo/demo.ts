/**
 * `vsva demo` (docs/design.md §8): a host with its dashboard and pairs of VMs — one VT-d, one
 * virtio-iommu per pair — each running the mixed SVA workload at a watchable pace, until the
 * duration is up or the caller stops it (Ctrl-C). Then every process exits, every guest driver
 * is removed, every VM disconnects and the host closes.
 *
 * The host runs as its own process by default (as `vsva host` does), so the demo exercises the
 * real guest ↔ host socket protocol; `inProcess` keeps it in this process.
 */
import * as net from 'node:net';
import * as path from 'node:path';
import { childLogger } from '../../log.js';
import { startHost, type StartedHost } from '../harness/start-host.js';
import { startGuest, type StartedGuest } from '../harness/start-guest.js';
import { startSvaGuest } from '../../../guest/workload/index.js';
import type { SvaGuest } from '../../../guest/workload/sva-guest.js';
import { MixedWorkload, type WorkloadStats } from './mixed-workload.js';
import { TraceBus } from '../../trace/bus.js';
import { TraceRecorder } from '../../trace/recorder.js';
import type { MemoryBackend } from '../../memory/memory-backend.js';

const log = childLogger('demo');

export interface DemoOptions {
  /** Seconds to run; undefined: until stop() (Ctrl-C). */
  durationS?: number;
  /** Dashboard port; when busy, an ephemeral port is used instead. Default 8080. */
  dashboardPort?: number;
  /** Pairs of VMs (one VT-d + one virtio-iommu each). Default 1. */
  pairs?: number;
  /** Operations per second per VM. Default 4. */
  rate?: number;
  /** Guest RAM per VM, bytes. Default 64 MiB. */
  memory?: number;
  /** Run the host in this process. Default false. */
  inProcess?: boolean;
  /** How both halves reach guest RAM (docs/architecture.md "Memory model"); default: mapped when the native addon loaded. */
  memoryBackend?: MemoryBackend;
  seed?: number;
  /** Progress lines (stderr in the CLI). */
  progress?: (line: string, final: boolean) => void;
  /** Called once the dashboard is up, with its URL. */
  onReady?: (info: { dashboard: string; vms: string[] }) => void;
  /** Record trace events: the guests' to `<traceDir>/guest.jsonl`, the host's to `<traceDir>/host.jsonl`. */
  traceDir?: string;
  /** The host uAPI of every VM (docs/protocol.md §13.12); default 'vfio-sva'. */
  uapi?: 'vfio-sva' | 'iommufd';
}

export interface DemoVmSummary {
  name: string;
  viommu: 'vtd' | 'virtio';
  stats: WorkloadStats;
  pageRequests: number;
  faults: number;
}

export interface DemoSummary {
  seconds: number;
  dashboard: string;
  vms: DemoVmSummary[];
}

interface DemoVm {
  vm: StartedGuest;
  sva: SvaGuest;
  work: MixedWorkload;
  loop: Promise<void>;
}

const BDF = '00:03.0';

/** True when `port` can be bound on 127.0.0.1 right now. */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export class Demo {
  private stopping = false;
  private readonly sleepers = new Set<() => void>();
  private host: StartedHost | null = null;
  private recorder: TraceRecorder | null = null;
  private readonly vms: DemoVm[] = [];
  private readonly t0 = Date.now();

  constructor(private readonly opts: DemoOptions = {}) {}

  /** Ask the demo to wind down (idempotent). */
  stop(): void {
    this.stopping = true;
    for (const wake of [...this.sleepers]) wake();
  }

  get stopped(): boolean {
    return this.stopping;
  }

  /** Run to the end (duration or stop()), release everything, return the totals. */
  async run(): Promise<DemoSummary> {
    const o = this.opts;
    const wanted = o.dashboardPort ?? 8080;
    const port = wanted === 0 || (await portIsFree(wanted)) ? wanted : 0;
    if (port !== wanted) o.progress?.(`port ${wanted} is busy; the dashboard takes a free port`, false);
    try {
      const traceBus = new TraceBus();
      if (o.traceDir !== undefined) this.recorder = new TraceRecorder(path.join(o.traceDir, 'guest.jsonl'), 'vsva demo guests').attach(traceBus);
      this.host = await startHost({ spawn: o.inProcess !== true, dashboard: { port }, ...(o.memoryBackend !== undefined ? { memoryBackend: o.memoryBackend } : {}), ...(o.traceDir !== undefined ? { traceFile: path.join(o.traceDir, 'host.jsonl') } : {}) });
      const dashboard = this.host.dashboard ?? '';
      const pairs = o.pairs ?? 1;
      const memory = o.memory ?? 64 * 1024 * 1024;
      for (let i = 0; i < pairs && !this.stopping; i++) {
        for (const viommu of ['vtd', 'virtio'] as const) {
          const name = `${viommu}-vm${2 * i + (viommu === 'vtd' ? 0 : 1)}`;
          const vm = await startGuest({ socket: this.host.socket, name, viommu, memory, pasidQuota: 64, devices: [{ bdf: BDF, kind: 'pf' }], trace: traceBus, ...(o.memoryBackend !== undefined ? { memoryBackend: o.memoryBackend } : {}), ...(o.uapi !== undefined ? { uapi: o.uapi } : {}) });
          let sva: SvaGuest;
          try {
            sva = await startSvaGuest(vm, { viommu, memory, devices: [{ bdf: BDF }] });
          } catch (e) {
            await vm.close();
            throw e;
          }
          const work = new MixedWorkload(sva, BDF, (o.seed ?? 1) * 1000 + this.vms.length);
          this.vms.push({ vm, sva, work, loop: Promise.resolve() });
        }
      }
      o.onReady?.({ dashboard, vms: this.vms.map((v) => v.vm.name) });
      for (const v of this.vms) v.loop = this.loop(v.work);
      const progress = setInterval(() => o.progress?.(this.progressLine(), false), 1000);
      const deadline = o.durationS === undefined ? Infinity : this.t0 + o.durationS * 1000;
      while (!this.stopping && Date.now() < deadline) await this.sleep(Math.min(200, deadline - Date.now()));
      this.stopping = true;
      clearInterval(progress);
      await Promise.all(this.vms.map((v) => v.loop));
      o.progress?.(this.progressLine(), true);
      return { seconds: (Date.now() - this.t0) / 1000, dashboard, vms: this.summaries() };
    } finally {
      this.stopping = true;
      await this.release();
    }
  }

  private async loop(work: MixedWorkload): Promise<void> {
    const period = 1000 / Math.max(0.1, this.opts.rate ?? 4);
    // Stagger the VMs so their operations interleave on the dashboard.
    await this.sleep(Math.random() * period);
    while (!this.stopping) {
      const t = Date.now();
      await work.tick();
      await this.sleep(Math.max(0, period - (Date.now() - t)));
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopping || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  private summaries(): DemoVmSummary[] {
    return this.vms.map((v) => ({ name: v.vm.name, viommu: v.sva.kind, stats: { ...v.work.stats }, pageRequests: v.sva.pageRequests, faults: v.sva.faults.length }));
  }

  private progressLine(): string {
    const secs = Math.round((Date.now() - this.t0) / 1000);
    const parts = this.vms.map((v) => {
      const s = v.work.stats;
      return `${v.vm.name}: ${v.work.processes} proc, ${s.binds} binds, ${s.dmaJobs} DMA (${(s.dmaBytes / 1048576).toFixed(1)} MiB), ${v.sva.pageRequests} PRQ${s.checkFailures ? `, ${s.checkFailures} BAD` : ''}`;
    });
    return `[${secs}s] ${parts.join(' | ')}`;
  }

  /** Exit processes, remove drivers, disconnect VMs, close the host — each step best effort. */
  private async release(): Promise<void> {
    for (const v of [...this.vms].reverse()) {
      await v.loop.catch(() => undefined);
      await v.work.stop().catch((err: unknown) => log.warn({ err }, 'workload stop failed'));
      await v.sva.close().catch((err: unknown) => log.warn({ err, vm: v.vm.name }, 'guest driver close failed'));
      await v.vm.close().catch((err: unknown) => log.warn({ err, vm: v.vm.name }, 'VM close failed'));
    }
    this.vms.length = 0;
    await this.host?.close();
    this.host = null;
    this.recorder?.close();
    this.recorder = null;
  }
}
