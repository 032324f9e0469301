/**
 * The soak's checked load: VT-d VMs in this process (guest/vm.ts over the host's socket, RAM
 * passed as a descriptor), each with PASIDs bound to one process address space, each running
 * in its own loop
 *   50 % DMA read of a 64-byte slot through a random bound PASID, data checked;
 *   20 % DMA write of a slot + read back through another PASID, data checked;
 *   15 % batch of 8 page-selective PASID-based IOTLB invalidations + wait;
 *   15 % churn: unbind + VCMD free one PASID, VCMD alloc + bind a new one.
 * Host restarts happen underneath: the links reconnect and replay, requests caught by the
 * outage fail with ENOTCONN / ECONNRESET / EAGAIN (counted, allowed). A DMA that returns other
 * data than the slot holds, or faults on a PASID the guest holds bound, is a wrong DMA.
 *
 * A write whose result is unknown (connection lost in flight) leaves its slot uncertain until
 * a later write succeeds; reads of an uncertain slot are not checked. A churn step that fails
 * part way makes the VM re-read what it holds from its vIOMMU model (the VCMD record and the
 * bound PASID entries) and free what it holds but has not bound.
 */
import { startGuest, type StartedGuest } from '../../src/app/harness/start-guest.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../src/app/bench/vtd-bench-driver.js';
import type { VtdModel } from '../../guest/vtd/index.js';
import type { HostSnapshot } from '../../src/api/types.js';

const BUF = 4096;
const SLOT = 64;
const SLOTS = BUF / SLOT;
/** How long a request waits for the host during an outage (a restart and replay fit in it). */
const OUTAGE_WAIT_MS = 30_000;

export interface LoadCounters {
  ops: number;
  /**
   * PASIDs a replay could not restore (VT-d identity PASIDs another VM took on the new host
   * before this VM's replay; docs/reliability.md §2.2): lost PASIDs.
   */
  lostInReplay: number;
  /** DMAs that faulted on such a PASID before the loop noticed (not wrong results). */
  faultsOnLostPasids: number;
  dmaChecked: number;
  wrongDma: number;
  outageErrors: number;
  otherErrors: number;
  resyncs: number;
}

function isOutage(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'ENOTCONN' || code === 'ECONNRESET' || code === 'EAGAIN' || code === 'ETIMEDOUT';
}

function pick<T>(xs: readonly T[]): T {
  return xs[Math.floor(Math.random() * xs.length)]!;
}

class LoadVm {
  readonly bound = new Set<number>();
  readonly uncertain = new Set<number>();
  needsResync = false;
  diagnosed = false;

  constructor(
    readonly g: StartedGuest,
    readonly drv: VtdBenchDriver,
    readonly pattern: Uint8Array,
  ) {}

  get model(): VtdModel {
    return this.g.viommu as VtdModel;
  }

  /** The PASIDs the guest holds bound, by its own vIOMMU model. */
  modelBound(): Set<number> {
    return new Set(this.model.shadow().filter((e) => e.pasid !== null && e.binding.kind === 'nested').map((e) => e.pasid!));
  }

  modelOwned(): Set<number> {
    return new Set(this.model.vcmd?.owned ?? []);
  }
}

export class DmaLoad {
  readonly counters: LoadCounters = { ops: 0, lostInReplay: 0, faultsOnLostPasids: 0, dmaChecked: 0, wrongDma: 0, outageErrors: 0, otherErrors: 0, resyncs: 0 };
  readonly samples: string[] = [];
  private readonly vms: LoadVm[] = [];
  private loops: Promise<void>[] = [];
  private paused = false;
  private stopping = false;
  private busy = 0;

  constructor(
    private readonly socket: string,
    private readonly count: number,
    private readonly pasids: number,
  ) {}

  async start(): Promise<void> {
    for (let i = 0; i < this.count; i++) {
      const g = await startGuest({ socket: this.socket, name: `soak-load-${process.pid}-${i}`, viommu: 'vtd', memory: 8 << 20, pasidQuota: this.pasids * 2 + 8, reconnect: { outageWaitMs: OUTAGE_WAIT_MS } });
      const drv = await VtdBenchDriver.create(g, { bufferBytes: BUF });
      const pattern = new Uint8Array(BUF).map((_, k) => (k * 13 + i) & 0xff);
      await drv.process.write(BENCH_BUFFER_VA, pattern);
      const vm = new LoadVm(g, drv, pattern);
      g.link.onReconnect(() => {
        const failures = g.lastReconnect?.replay?.failures ?? [];
        const lost = new Set(failures.flatMap((f) => [...f.matchAll(/PASID (\d+)/g)].map((m) => Number(m[1]))));
        if (lost.size === 0) return;
        this.counters.lostInReplay += lost.size;
        this.note(`${g.name}: replay lost PASID(s) ${[...lost].join(', ')}: ${failures.slice(0, 2).join('; ')}`);
        vm.needsResync = true;
      });
      for (let k = 0; k < this.pasids; k++) {
        const p = await drv.allocPasid();
        await drv.bindPasid(p);
        vm.bound.add(p);
      }
      this.vms.push(vm);
    }
    this.loops = this.vms.map((vm) => this.loop(vm));
  }

  /** Let every loop finish its current operation and hold (for a quiet measurement). */
  async pause(): Promise<void> {
    this.paused = true;
    for (let i = 0; i < 3000 && this.busy > 0; i++) await sleep(10);
  }

  resume(): void {
    this.paused = false;
  }

  /**
   * Lost / leaked PASIDs of a paused load: each VM's own record (VCMD-owned PASIDs, bound PASID
   * entries of its vIOMMU model) against the host's snapshot of that VM.
   */
  async compare(s: HostSnapshot): Promise<{ lost: string[]; leaked: string[] }> {
    const lost: string[] = [];
    const leaked: string[] = [];
    for (const vm of this.vms) {
      if (vm.needsResync) await this.resync(vm);
      const h = s.vms.find((x) => x.name === vm.g.name);
      const host = new Map((h?.pasids ?? []).map((p) => [p.hpasid, p]));
      const owned = vm.modelOwned();
      const bound = vm.modelBound();
      for (const p of owned) {
        const e = host.get(p);
        if (!e) lost.push(`${vm.g.name}: PASID ${p} (held by the guest, unknown to the host)`);
        else if (bound.has(p) && (e.bindings.length !== 1 || e.bindings[0]!.pgtt !== 'nested')) lost.push(`${vm.g.name}: PASID ${p} bound by the guest, host bindings ${JSON.stringify(e.bindings)}`);
        else if (!bound.has(p) && e.bindings.length !== 0) leaked.push(`${vm.g.name}: PASID ${p} unbound by the guest, still bound on the host`);
      }
      for (const p of host.keys()) if (!owned.has(p)) leaked.push(`${vm.g.name}: host PASID ${p} the guest does not hold`);
    }
    return { lost, leaked };
  }

  /** PASIDs the load's VMs hold by their own records. */
  heldPasids(): number {
    let n = 0;
    for (const vm of this.vms) n += vm.modelOwned().size;
    return n;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.paused = false;
    await Promise.all(this.loops);
    await Promise.all(this.vms.map((vm) => vm.g.close().catch(() => undefined)));
  }

  private note(what: string): void {
    if (this.samples.length < 20) this.samples.push(what);
  }

  private async loop(vm: LoadVm): Promise<void> {
    while (!this.stopping) {
      if (this.paused) {
        await sleep(20);
        continue;
      }
      this.busy++;
      try {
        if (vm.needsResync) await this.resync(vm);
        await this.step(vm);
        this.counters.ops++;
      } catch (e) {
        if (isOutage(e)) this.counters.outageErrors++;
        else {
          this.counters.otherErrors++;
          this.note(`${vm.g.name}: ${e instanceof Error ? e.message : String(e)}`);
        }
      } finally {
        this.busy--;
      }
      // A timer between operations: failing operations never make this a busy loop.
      await sleep(1);
    }
  }

  private async step(vm: LoadVm): Promise<void> {
    const x = Math.random();
    const pasids = [...vm.bound];
    if (pasids.length === 0) {
      vm.needsResync = true;
      return;
    }
    const p = pick(pasids);
    if (x < 0.5) return this.read(vm, p, Math.floor(Math.random() * SLOTS));
    if (x < 0.7) {
      const slot = Math.floor(Math.random() * SLOTS);
      const data = new Uint8Array(SLOT).map(() => (Math.random() * 256) | 0);
      vm.uncertain.add(slot);
      const w = await vm.g.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA + BigInt(slot * SLOT), data });
      if (!w.ok) return this.fault(vm, p, `${vm.g.name}: write fault ${w.fault.reason} on bound PASID ${p}`);
      vm.pattern.set(data, slot * SLOT);
      vm.uncertain.delete(slot);
      return this.read(vm, pick(pasids), slot);
    }
    if (x < 0.85) return vm.drv.piotlbBatch(p, 8);
    // Churn. Any failure part way: re-read the state from the model before the next step.
    vm.needsResync = true;
    await vm.drv.unbindPasid(p);
    vm.bound.delete(p);
    await vm.drv.freePasid(p);
    const q = await vm.drv.allocPasid();
    await vm.drv.bindPasid(q);
    vm.bound.add(q);
    vm.needsResync = false;
  }

  private async read(vm: LoadVm, p: number, slot: number): Promise<void> {
    const r = await vm.g.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA + BigInt(slot * SLOT), length: SLOT });
    if (!r.ok) return this.fault(vm, p, `${vm.g.name}: read fault ${r.fault.reason} on bound PASID ${p}`);
    if (vm.uncertain.has(slot)) return;
    this.counters.dmaChecked++;
    if (Buffer.compare(Buffer.from(r.data!), Buffer.from(vm.pattern.subarray(slot * SLOT, (slot + 1) * SLOT))) !== 0) this.wrong(`${vm.g.name}: wrong data in slot ${slot} through PASID ${p}`, vm);
  }

  /** A fault on PASID `p`: wrong when the guest still holds `p` bound, else a lost PASID's consequence. */
  private fault(vm: LoadVm, p: number, what: string): void {
    if (!vm.modelBound().has(p)) {
      this.counters.faultsOnLostPasids++;
      vm.needsResync = true;
      return;
    }
    this.wrong(what, vm);
  }

  private wrong(what: string, vm?: LoadVm): void {
    this.counters.wrongDma++;
    if (vm !== undefined && !vm.diagnosed) {
      // The first wrong result of a VM comes with how its link last came back.
      vm.diagnosed = true;
      const r = vm.g.lastReconnect;
      what += ` [link ${vm.g.link.state}, ${vm.g.link.counters.reconnects} reconnects; last: ${r === null ? 'none' : r.resumed ? `resumed, reconciled ${JSON.stringify(r.reconciled)}` : `replayed ${JSON.stringify({ pasids: r.replay?.pasids, bindings: r.replay?.bindings, failures: r.replay?.failures.slice(0, 3) })}`}]`;
    }
    this.note(what);
  }

  /** Adopt the model's view after a partial churn: bound = model-bound ∩ owned; free the rest. */
  private async resync(vm: LoadVm): Promise<void> {
    this.counters.resyncs++;
    const owned = vm.modelOwned();
    const bound = vm.modelBound();
    vm.bound.clear();
    for (const p of bound) if (owned.has(p)) vm.bound.add(p);
    for (const p of owned) {
      if (vm.bound.has(p)) continue;
      if (bound.has(p)) await vm.drv.unbindPasid(p);
      await vm.drv.freePasid(p);
    }
    while (vm.bound.size < this.pasids) {
      const q = await vm.drv.allocPasid();
      await vm.drv.bindPasid(q);
      vm.bound.add(q);
    }
    vm.needsResync = false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
