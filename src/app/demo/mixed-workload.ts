/**
 * The demo's mixed SVA workload for one VM: guest processes come and go, bind to the VM's
 * device and unbind, map and unmap buffers, submit DMA jobs (copy / fill / compare) through
 * their PASIDs and check the results in their own memory, and touch pages they never mapped so
 * the device's page requests are served by the guest driver. On a VT-d VM it also allocates and
 * frees spare PASIDs through the virtual command interface.
 *
 * One `tick()` performs one operation, chosen at random (seeded, so a run can be repeated) among
 * those the current state allows. Every DMA result is checked; a mismatch is counted in
 * `stats.checkFailures` and logged, never thrown, so the demo keeps going.
 */
import { childLogger } from '../../log.js';
import type { GuestProcess } from '../../../guest/driver/guest-process.js';
import { PAGE_SIZE } from '../../../guest/driver/guest-memory.js';
import { checkDmaJob, runDmaJob, type DmaJob } from '../../../guest/workload/dma-jobs.js';
import { seededBytes } from '../../../guest/workload/data.js';
import type { SvaGuest } from '../../../guest/workload/sva-guest.js';

/** Buffer layout of a demo process: 8 mapped pages (source 0-3, destination 4-7), then a window for faults. */
const BUF_VA = 0x7f12_3400_0000n;
const BUF_PAGES = 8;
const HALF = (BUF_PAGES / 2) * PAGE_SIZE;
const FAULT_VA = BUF_VA + 0x10_0000n;
const FAULT_PAGES = 64;
const MAX_PROCESSES = 4;

export interface WorkloadStats {
  ops: number;
  processesStarted: number;
  processesExited: number;
  binds: number;
  unbinds: number;
  dmaJobs: number;
  dmaBytes: number;
  faultsIn: number;
  unmaps: number;
  vcmdAllocs: number;
  checkFailures: number;
  errors: number;
}

interface DemoProcess {
  proc: GuestProcess;
  pasid: number;
  /** Fault-window pages currently mapped (by page requests). */
  faulted: Set<number>;
  age: number;
}

/** mulberry32: a small seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class MixedWorkload {
  readonly stats: WorkloadStats = { ops: 0, processesStarted: 0, processesExited: 0, binds: 0, unbinds: 0, dmaJobs: 0, dmaBytes: 0, faultsIn: 0, unmaps: 0, vcmdAllocs: 0, checkFailures: 0, errors: 0 };
  private readonly procs: DemoProcess[] = [];
  private readonly spare: number[] = [];
  private readonly rnd: () => number;
  private serial = 0;
  private readonly log;

  constructor(
    readonly sva: SvaGuest,
    readonly bdf: string,
    seed: number,
  ) {
    this.rnd = prng(seed);
    this.log = childLogger('demo', { vm: sva.name });
  }

  get processes(): number {
    return this.procs.length;
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)]!;
  }

  /** One operation. Never throws: failures are counted and logged. */
  async tick(): Promise<void> {
    this.stats.ops++;
    const actions: [number, () => Promise<void>][] = [];
    if (this.procs.length < MAX_PROCESSES) actions.push([this.procs.length === 0 ? 100 : 2, () => this.spawn()]);
    if (this.procs.length > 0) {
      actions.push([6, () => this.dmaJob()], [3, () => this.faultIn()]);
      if (this.procs.some((p) => p.faulted.size > 0)) actions.push([2, () => this.unmapOne()]);
      if (this.procs.some((p) => p.age > 12)) actions.push([1, () => this.exitOne()]);
    }
    if (this.sva.kind === 'vtd') actions.push([1, () => this.vcmdChurn()]);
    let r = this.rnd() * actions.reduce((s, [w]) => s + w, 0);
    const [, act] = actions.find(([w]) => (r -= w) < 0) ?? actions[0]!;
    for (const p of this.procs) p.age++;
    try {
      await act();
    } catch (e) {
      this.stats.errors++;
      this.log.warn({ err: e }, 'demo operation failed');
    }
  }

  private async spawn(): Promise<void> {
    const name = `${this.sva.name}-p${++this.serial}`;
    const proc = await this.sva.createProcess(name, this.rnd() < 0.25 ? 5 : 4);
    try {
      await this.sva.mapPages(proc, BUF_VA, BUF_PAGES);
      await proc.write(BUF_VA, seededBytes(this.serial, HALF));
      const pasid = await this.sva.bind(proc, this.bdf);
      this.stats.processesStarted++;
      this.stats.binds++;
      this.procs.push({ proc, pasid, faulted: new Set(), age: 0 });
    } catch (e) {
      await this.sva.exit(proc).catch(() => undefined);
      throw e;
    }
  }

  private async dmaJob(): Promise<void> {
    const p = this.pick(this.procs);
    const kind = this.pick(['copy', 'fill', 'compare'] as const);
    const len = PAGE_SIZE * (1 + Math.floor(this.rnd() * 4));
    const job: DmaJob =
      kind === 'copy'
        ? { op: 'copy', src: BUF_VA, dst: BUF_VA + BigInt(HALF), length: len }
        : kind === 'fill'
          ? { op: 'fill', addr: BUF_VA + BigInt(HALF), length: len, value: Math.floor(this.rnd() * 256) }
          : { op: 'compare', a: BUF_VA, b: BUF_VA + BigInt(HALF), length: len };
    await this.run(p, job);
  }

  /** DMA into a page of the fault window the process never mapped: a page request maps it. */
  private async faultIn(): Promise<void> {
    const p = this.pick(this.procs);
    const free = [...Array(FAULT_PAGES).keys()].filter((i) => !p.faulted.has(i));
    if (free.length === 0) return this.unmapOne();
    const i = this.pick(free);
    await this.run(p, { op: 'fill', addr: FAULT_VA + BigInt(i * PAGE_SIZE), length: PAGE_SIZE, value: i });
    p.faulted.add(i);
    this.stats.faultsIn++;
  }

  private async unmapOne(): Promise<void> {
    const p = this.pick(this.procs.filter((x) => x.faulted.size > 0));
    const i = this.pick([...p.faulted]);
    await this.sva.unmapPages(p.proc, FAULT_VA + BigInt(i * PAGE_SIZE), 1);
    p.faulted.delete(i);
    this.stats.unmaps++;
  }

  private async exitOne(): Promise<void> {
    const p = this.pick(this.procs.filter((x) => x.age > 12));
    this.procs.splice(this.procs.indexOf(p), 1);
    await this.sva.exit(p.proc);
    this.stats.unbinds++;
    this.stats.processesExited++;
  }

  private async vcmdChurn(): Promise<void> {
    if (this.spare.length > 0 && this.rnd() < 0.6) {
      await this.sva.freePasid(this.spare.pop()!);
      return;
    }
    if (this.spare.length < 3) {
      this.spare.push(await this.sva.allocPasid());
      this.stats.vcmdAllocs++;
    }
  }

  private async run(p: DemoProcess, job: DmaJob): Promise<void> {
    const r = await runDmaJob({ dma: (bdf, req) => this.sva.handle.dma(bdf, req), bdf: this.bdf, pasid: p.pasid }, job);
    this.stats.dmaJobs++;
    if (r.ok) this.stats.dmaBytes += r.bytes;
    const bad = await checkDmaJob(p.proc, job, r);
    if (bad) {
      this.stats.checkFailures++;
      this.log.warn({ process: p.proc.name, job: job.op, problem: bad }, 'DMA result check failed');
    }
  }

  /** Give back the spare PASIDs; processes exit with the SvaGuest's close. */
  async stop(): Promise<void> {
    for (const pasid of this.spare.splice(0)) await this.sva.freePasid(pasid).catch(() => undefined);
  }
}
