/**
 * Load run (docs/reliability.md §6; not a unit test): one spawned host, `--vms` in-process VT-d
 * guests with small RAM, each holding `--pasids` VCMD PASIDs bound to a first-level table, then
 * a mixed workload for `--seconds`, each VM in its own loop:
 *   50 % DMA read through a random bound PASID, data checked;
 *   15 % DMA write + read back through a random PASID, data checked;
 *   15 % batch of 16 page-selective PASID-based IOTLB invalidations + wait;
 *   20 % churn: unbind + VCMD free one PASID, VCMD alloc + bind a new one.
 * The harness takes a host snapshot every 2 s (latency reported).
 *
 * Reports throughput and latency (p50 / p99) per operation, host RSS (idle, loaded, after
 * teardown), snapshot latency and size, and every error. At the end it compares the host's
 * snapshot with each guest's own record of its PASIDs (lost: the guest holds it, the host does
 * not; leaked: the other way, or not bound as the guest bound it), tears every VM down and checks
 * the capacity is back where it started. Exit status 1 on any lost or leaked PASID, any error,
 * or capacity not restored.
 *
 *   VSVA_LOG=silent node --import tsx scripts/load.ts --vms 64 --pasids 1024 --seconds 30 [--memory-mib 16] [--json out.json]
 */
import * as fs from 'node:fs';
import { startHost, type StartedHost } from '../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../src/app/harness/start-guest.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../src/app/bench/vtd-bench-driver.js';
import { rssOf } from '../src/app/bench/scale.js';
import type { HostSnapshot } from '../src/api/types.js';
import type { VtdModel } from '../guest/vtd/index.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
function intArg(name: string, def: number): number {
  const v = Number(arg(name, String(def)));
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} must be a positive integer`);
  return v;
}

const VMS = intArg('vms', 64);
const PASIDS = intArg('pasids', 1024);
const SECONDS = Number(arg('seconds', '30'));
const MEMORY = intArg('memory-mib', 16) << 20;
const JSON_OUT = process.argv.includes('--json') ? arg('json', '') : '';
const BUF = 4096;

type Op = 'dma-read' | 'dma-write' | 'invalidate' | 'churn';
const OPS: Op[] = ['dma-read', 'dma-write', 'invalidate', 'churn'];

interface Vm {
  g: StartedGuest;
  drv: VtdBenchDriver;
  /** The guest's own record of its bound PASIDs. */
  bound: Set<number>;
  pattern: Uint8Array;
}

const lat: Record<Op, number[]> = { 'dma-read': [], 'dma-write': [], invalidate: [], churn: [] };
const errors: string[] = [];

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

function pick<T>(xs: T[]): T {
  return xs[Math.floor(Math.random() * xs.length)]!;
}

async function setupVm(host: StartedHost, i: number): Promise<Vm> {
  const g = await startGuest({ socket: host.socket, name: `load-${i}`, viommu: 'vtd', memory: MEMORY, pasidQuota: PASIDS + 1 });
  const drv = await VtdBenchDriver.create(g, { bufferBytes: BUF });
  const pattern = new Uint8Array(BUF).map((_, k) => (k * 7 + i) & 0xff);
  await drv.process.write(BENCH_BUFFER_VA, pattern);
  const bound = new Set<number>();
  for (let k = 0; k < PASIDS; k++) {
    const p = await drv.allocPasid();
    await drv.bindPasid(p);
    bound.add(p);
  }
  return { g, drv, bound, pattern };
}

async function step(vm: Vm, op: Op): Promise<void> {
  const pasids = [...vm.bound];
  const p = pick(pasids);
  switch (op) {
    case 'dma-read': {
      const off = Math.floor(Math.random() * (BUF - 64));
      const r = await vm.g.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA + BigInt(off), length: 64 });
      if (!r.ok) throw new Error(`read fault ${r.fault.reason} on PASID ${p}`);
      if (Buffer.compare(Buffer.from(r.data!), Buffer.from(vm.pattern.subarray(off, off + 64))) !== 0) throw new Error(`wrong data read through PASID ${p}`);
      return;
    }
    case 'dma-write': {
      const off = Math.floor(Math.random() * (BUF / 64)) * 64;
      const data = new Uint8Array(64).map(() => (Math.random() * 256) | 0);
      const w = await vm.g.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA + BigInt(off), data });
      if (!w.ok) throw new Error(`write fault ${w.fault.reason} on PASID ${p}`);
      vm.pattern.set(data, off);
      const r = await vm.g.dma('00:03.0', { pasid: pick(pasids), addr: BENCH_BUFFER_VA + BigInt(off), length: 64 });
      if (!r.ok || Buffer.compare(Buffer.from(r.data!), Buffer.from(data)) !== 0) throw new Error('written data not read back');
      return;
    }
    case 'invalidate':
      await vm.drv.piotlbBatch(p, 16);
      return;
    case 'churn': {
      await vm.drv.unbindPasid(p);
      await vm.drv.freePasid(p);
      vm.bound.delete(p);
      const q = await vm.drv.allocPasid();
      await vm.drv.bindPasid(q);
      vm.bound.add(q);
      return;
    }
  }
}

function chooseOp(): Op {
  const x = Math.random();
  return x < 0.5 ? 'dma-read' : x < 0.65 ? 'dma-write' : x < 0.8 ? 'invalidate' : 'churn';
}

/** Lost / leaked PASIDs: the host snapshot against each guest's own record. */
function compare(s: HostSnapshot, vms: Vm[]): { lost: string[]; leaked: string[] } {
  const lost: string[] = [];
  const leaked: string[] = [];
  for (const vm of vms) {
    const h = s.vms.find((x) => x.name === vm.g.name);
    const host = new Map((h?.pasids ?? []).map((p) => [p.hpasid, p]));
    const owned = (vm.g.viommu as VtdModel).vcmd?.owned ?? new Set<number>();
    for (const p of vm.bound) {
      const e = host.get(p);
      if (!e) lost.push(`${vm.g.name}: PASID ${p}`);
      else if (e.gpasid !== p || e.bindings.length !== 1 || e.bindings[0]!.pgtt !== 'nested' || e.bindings[0]!.flptr !== `0x${vm.drv.process.pgd.toString(16)}`) leaked.push(`${vm.g.name}: PASID ${p} bound as ${JSON.stringify(e.bindings)}`);
      if (!owned.has(p)) lost.push(`${vm.g.name}: PASID ${p} missing from the VCMD record`);
    }
    for (const p of host.keys()) if (!vm.bound.has(p)) leaked.push(`${vm.g.name}: host PASID ${p} the guest does not hold`);
  }
  return { lost, leaked };
}

async function main(): Promise<number> {
  log(`[load] ${VMS} VMs × ${PASIDS} PASIDs, ${SECONDS} s mixed workload, ${MEMORY >> 20} MiB guest RAM`);
  const host = await startHost({ graceMs: 0 });
  const vms: Vm[] = [];
  try {
    await new Promise((r) => setTimeout(r, 300));
    const start = await host.snapshot();
    const rssIdle = rssOf(host.pid);
    const t0 = performance.now();
    let done = 0;
    await Promise.all(
      Array.from({ length: VMS }, async (_, i) => {
        vms.push(await setupVm(host, i));
        done++;
        if (done % Math.max(1, Math.floor(VMS / 8)) === 0) log(`[load] ${done}/${VMS} VMs up and bound`);
      }),
    );
    const setupS = (performance.now() - t0) / 1000;
    const rssLoaded = rssOf(host.pid);
    log(`[load] set-up ${setupS.toFixed(1)} s; running the workload`);

    const counts: Record<Op, number> = { 'dma-read': 0, 'dma-write': 0, invalidate: 0, churn: 0 };
    const snapMs: number[] = [];
    let snapBytes = 0;
    let stop = false;
    const w0 = performance.now();
    const snapper = (async () => {
      while (!stop) {
        await new Promise((r) => setTimeout(r, 2000));
        if (stop) break;
        const a = performance.now();
        const s = await host.snapshot();
        snapMs.push(performance.now() - a);
        snapBytes = JSON.stringify(s).length;
      }
    })();
    const deadline = w0 + SECONDS * 1000;
    await Promise.all(
      vms.map(async (vm) => {
        while (performance.now() < deadline) {
          const op = chooseOp();
          const a = performance.now();
          try {
            await step(vm, op);
            lat[op].push(performance.now() - a);
            counts[op]++;
          } catch (e) {
            errors.push(`${vm.g.name} ${op}: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
      }),
    );
    stop = true;
    await snapper;
    const wallS = (performance.now() - w0) / 1000;
    const rssEnd = rssOf(host.pid);

    const endSnap = await host.snapshot();
    const { lost, leaked } = compare(endSnap, vms);
    const boundTotal = endSnap.vms.reduce((n, v) => n + v.pasids.filter((p) => p.bindings.length > 0).length, 0);

    log('[load] tearing down');
    await Promise.all(vms.map((vm) => vm.g.close()));
    let after = await host.snapshot();
    for (let i = 0; i < 100 && (after.vms.length > 0 || after.capacity.available !== start.capacity.available); i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = await host.snapshot();
    }
    const capacityOk = after.vms.length === 0 && after.capacity.available === start.capacity.available;
    await new Promise((r) => setTimeout(r, 300));
    const rssAfter = rssOf(host.pid);

    const mib = (x: number | null): string => (x === null ? 'n/a' : `${(x / 2 ** 20).toFixed(0)} MiB`);
    const total = OPS.reduce((n, o) => n + counts[o], 0);
    const report = {
      vms: VMS,
      pasidsPerVm: PASIDS,
      seconds: SECONDS,
      setupSeconds: Number(setupS.toFixed(1)),
      boundAtEnd: boundTotal,
      ops: Object.fromEntries(OPS.map((o) => [o, { count: counts[o], perSecond: Math.round(counts[o] / wallS), p50ms: Number(pct(lat[o], 50).toFixed(2)), p99ms: Number(pct(lat[o], 99).toFixed(2)) }])),
      totalOpsPerSecond: Math.round(total / wallS),
      snapshot: { count: snapMs.length, p50ms: Number(pct(snapMs, 50).toFixed(1)), maxMs: Number(Math.max(...snapMs, 0).toFixed(1)), kib: Math.round(snapBytes / 1024) },
      hostRss: { idle: mib(rssIdle), loaded: mib(rssLoaded), endOfWorkload: mib(rssEnd), afterTeardown: mib(rssAfter) },
      errors: errors.length,
      lost: lost.length,
      leaked: leaked.length,
      capacityRestored: capacityOk,
      capacity: { start: start.capacity.available, end: after.capacity.available, total: start.capacity.total },
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify(report, null, 2));
    for (const e of errors.slice(0, 20)) log(`[load] error: ${e}`);
    for (const e of lost.slice(0, 20)) log(`[load] lost: ${e}`);
    for (const e of leaked.slice(0, 20)) log(`[load] leaked: ${e}`);
    return lost.length + leaked.length + errors.length === 0 && capacityOk && boundTotal === VMS * PASIDS ? 0 : 1;
  } finally {
    await Promise.all(vms.map((vm) => vm.g.close().catch(() => undefined)));
    await host.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`load: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(2);
  },
);
