/**
 * Runs the allocation experiment's grid (grid.ts) against an ExperimentEnv and collects the
 * records of results.ts. Timing is wall-clock around each guest-visible operation
 * (performance.now, µs); the VMs of a point run concurrently, each issuing its operations
 * one after another, as guest kernels on separate vCPUs would.
 *
 * A point that cannot run (a scheme the system does not support yet, a host that will not
 * start) is recorded in `skipped` with the reason, and the run goes on.
 */
import os from 'node:os';
import { childLogger } from '../../../log.js';
import { distribution, jainIndex } from '../stats.js';
import { fairnessPlan, pointLabel, SCHEME_LABEL, type AllocGrid, type AllocPoint, type DmaPoint, type FairnessPoint } from '../grid.js';
import { failureStatus, OpFailure, type ExperimentEnv, type ExperimentHost, type SchemeVm } from './types.js';
import type { AllocResults, AllocRow, DmaRow, FairnessRow, FairnessVmRow, LatencySample } from './results.js';

const log = childLogger('experiment');

export interface RunProgress {
  tick(label: string): void;
  status(label: string): void;
}

export interface RunOptions {
  quick: boolean;
  /** PASID width of the host for the alloc and DMA experiments (default 20). */
  pasidBits?: number;
  progress?: RunProgress;
}

/** Steps a progress bar should expect for a grid. */
export function gridSteps(grid: AllocGrid): number {
  return grid.alloc.length + grid.fairness.length + grid.dma.length + 1;
}

function now(): number {
  return performance.now();
}

async function closeAll(vms: SchemeVm[]): Promise<void> {
  await Promise.all(vms.map((v) => v.close().catch((e: unknown) => log.warn({ vm: v.name, err: String(e) }, 'close failed'))));
}

let runSeq = 0;

async function runAllocPoint(env: ExperimentEnv, host: ExperimentHost, p: AllocPoint, res: AllocResults): Promise<void> {
  const vms: SchemeVm[] = [];
  const tag = `a${++runSeq}`;
  try {
    for (let i = 0; i < p.vms; i++) vms.push(await env.startVm(host, p.scheme, { name: `${tag}-vm${i}`, quota: p.quota }));
    const allocT: number[] = [];
    const bindT: number[] = [];
    const errors = new Set<string>();
    let ok = 0;
    let failed = 0;
    const t0 = now();
    await Promise.all(
      vms.map(async (vm, vi) => {
        for (let k = 0; k < p.pasidsPerVm; k++) {
          let pasid: number;
          const a = now();
          try {
            pasid = await vm.alloc();
          } catch (e) {
            failed++;
            errors.add(`alloc:${failureStatus(e)}`);
            continue;
          }
          const b = now();
          allocT.push((b - a) * 1000);
          res.samples.push({ scheme: p.scheme, vms: p.vms, pasids_per_vm: p.pasidsPerVm, quota: p.quota, vm: vi, op: 'alloc', latency_us: (b - a) * 1000 });
          try {
            await vm.bind(pasid);
          } catch (e) {
            failed++;
            errors.add(`bind:${failureStatus(e)}`);
            continue;
          }
          const c = now();
          bindT.push((c - b) * 1000);
          res.samples.push({ scheme: p.scheme, vms: p.vms, pasids_per_vm: p.pasidsPerVm, quota: p.quota, vm: vi, op: 'bind', latency_us: (c - b) * 1000 });
          ok++;
        }
      }),
    );
    const wall = now() - t0;
    const da = distribution(allocT);
    const db = distribution(bindT);
    const row: AllocRow = {
      scheme: p.scheme,
      vms: p.vms,
      pasids_per_vm: p.pasidsPerVm,
      quota: p.quota,
      attempted: p.vms * p.pasidsPerVm,
      succeeded: ok,
      failed,
      errors: [...errors].sort().join(' '),
      alloc_p50_us: da.p50,
      alloc_p99_us: da.p99,
      bind_p50_us: db.p50,
      bind_p99_us: db.p99,
      throughput_per_s: ok / (wall / 1000),
      wall_ms: wall,
    };
    res.alloc.push(row);
  } finally {
    await closeAll(vms);
  }
}

async function runFairnessPoint(env: ExperimentEnv, p: FairnessPoint, res: AllocResults): Promise<void> {
  const host = await env.startHost(p.pasidBits);
  const vms: (SchemeVm | null)[] = [];
  try {
    const capacity = (await host.capacity()).available;
    const plan = fairnessPlan(p, capacity);
    const rows: FairnessVmRow[] = [];
    // VMs come up one after another: with quotas reserved at set-up, arrival order matters.
    for (let i = 0; i < p.vms; i++) {
      const row: FairnessVmRow = { scheme: p.scheme, vms: p.vms, policy: p.policy, capacity, quota: plan.quota, demand: plan.demand, vm: i, setup_ok: false, succeeded: 0, status: 'ok' };
      rows.push(row);
      try {
        vms.push(await env.startVm(host, p.scheme, { name: `f${++runSeq}-vm${i}`, quota: plan.quota }));
        row.setup_ok = true;
      } catch (e) {
        // A refused set-up (OpFailure) is a result; anything else means the scheme cannot run.
        if (!(e instanceof OpFailure)) throw e;
        vms.push(null);
        row.status = `setup:${failureStatus(e)}`;
      }
    }
    // Then they allocate concurrently until the demand is met or the first refusal.
    await Promise.all(
      vms.map(async (vm, i) => {
        if (!vm) return;
        const row = rows[i]!;
        for (let k = 0; k < plan.demand; k++) {
          let op: 'alloc' | 'bind' = 'alloc';
          try {
            const pasid = await vm.alloc();
            op = 'bind';
            await vm.bind(pasid);
            row.succeeded++;
          } catch (e) {
            row.status = `${op}:${failureStatus(e)}`;
            return;
          }
        }
      }),
    );
    const shares = rows.map((r) => r.succeeded);
    const total = shares.reduce((a, b) => a + b, 0);
    const fr: FairnessRow = {
      scheme: p.scheme,
      vms: p.vms,
      policy: p.policy,
      capacity,
      demand_per_vm: plan.demand,
      vms_started: rows.filter((r) => r.setup_ok).length,
      total_bound: total,
      utilization: capacity > 0 ? total / capacity : NaN,
      jain_index: jainIndex(shares),
      min_share: Math.min(...shares),
      max_share: Math.max(...shares),
    };
    res.fairnessVms.push(...rows);
    res.fairness.push(fr);
  } finally {
    await closeAll(vms.filter((v): v is SchemeVm => v !== null));
    await host.close();
  }
}

/**
 * The DMA points of one length, measured together: one VM per variant, all bound first, then
 * ROUNDS rounds in which every variant does samples / ROUNDS DMAs in turn — so JIT warm-up and
 * machine noise fall on every variant alike instead of on whichever runs first.
 */
const DMA_ROUNDS = 10;

async function runDmaGroup(env: ExperimentEnv, host: ExperimentHost, points: DmaPoint[], res: AllocResults, skip: (p: DmaPoint, e: unknown) => void): Promise<void> {
  const live: { p: DmaPoint; vm: SchemeVm; pasid: number; t: number[]; ok: number }[] = [];
  try {
    for (const p of points) {
      let vm: SchemeVm | null = null;
      try {
        vm = await env.startVm(host, p.scheme, { name: `d${++runSeq}`, quota: 16, device: p.device });
        const pasid = await vm.alloc();
        await vm.bind(pasid);
        for (let i = 0; i < Math.min(100, p.samples); i++) await vm.dma(pasid, p.length);
        live.push({ p, vm, pasid, t: [], ok: 0 });
      } catch (e) {
        await vm?.close().catch(() => {});
        skip(p, e);
      }
    }
    for (let r = 0; r < DMA_ROUNDS; r++) {
      for (const v of live) {
        const n = Math.ceil(v.p.samples / DMA_ROUNDS);
        for (let i = 0; i < n && v.t.length < v.p.samples; i++) {
          const a = now();
          const good = await v.vm.dma(v.pasid, v.p.length);
          v.t.push((now() - a) * 1000);
          if (good) v.ok++;
        }
      }
    }
    for (const v of live) {
      if (v.ok === 0) {
        skip(v.p, new OpFailure('dma', 'every DMA faulted'));
        continue;
      }
      const d = distribution(v.t);
      const row: DmaRow = {
        scheme: v.p.scheme,
        mapping: v.p.scheme === 'vcmd-identity' ? 'identity' : 'spid',
        device: v.p.device,
        length: v.p.length,
        samples: v.t.length,
        ok: v.ok,
        p50_us: d.p50,
        p99_us: d.p99,
        mean_us: d.mean,
      };
      res.dma.push(row);
    }
  } finally {
    await closeAll(live.map((v) => v.vm));
  }
}

/** Run every point of `grid`; never throws for a single point (see `skipped`). */
export async function runAllocGrid(env: ExperimentEnv, grid: AllocGrid, opts: RunOptions): Promise<AllocResults> {
  const res: AllocResults = {
    startedAt: new Date().toISOString(),
    quick: opts.quick,
    machine: { cpus: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, node: process.version },
    alloc: [],
    samples: [],
    fairnessVms: [],
    fairness: [],
    dma: [],
    skipped: [],
  };
  const progress = opts.progress;
  const guard = async (label: string, f: () => Promise<void>): Promise<void> => {
    progress?.status(label);
    try {
      await f();
    } catch (e) {
      const reason = (e as Error)?.message ?? String(e);
      log.warn({ point: label, err: reason }, 'experiment point skipped');
      res.skipped.push({ point: label, reason: reason.split('\n')[0]! });
    }
    progress?.tick(label);
  };

  let host: ExperimentHost | null = null;
  try {
    host = await env.startHost(opts.pasidBits ?? 20);
    const h = host;
    // One untimed point per scheme first, so that the first measured points are not the ones
    // that pay for JIT compilation of the guest and host paths (results discarded).
    for (const scheme of [...new Set(grid.alloc.map((p) => p.scheme))]) {
      progress?.status(`warm-up ${scheme}`);
      const scratch: AllocResults = { ...res, alloc: [], samples: [], skipped: [] };
      await runAllocPoint(env, h, { kind: 'alloc', scheme, vms: 2, pasidsPerVm: 32, quota: 32 }, scratch).catch(() => {});
    }
    for (const p of grid.alloc) {
      // No wait for the closed VMs' release (the host keeps them for its reconnect grace
      // period): names are unique and a 20-bit space leaves room for every point's quotas.
      await guard(pointLabel(p), () => runAllocPoint(env, h, p, res));
    }
    const lengths = [...new Set(grid.dma.map((p) => p.length))];
    for (const len of lengths) {
      const group = grid.dma.filter((p) => p.length === len);
      progress?.status(`dma len=${len} (${group.length} variants interleaved)`);
      await runDmaGroup(env, h, group, res, (p, e) => {
        const reason = (e as Error)?.message ?? String(e);
        log.warn({ point: pointLabel(p), err: reason }, 'experiment point skipped');
        res.skipped.push({ point: pointLabel(p), reason: reason.split('\n')[0]! });
      });
      for (const p of group) progress?.tick(pointLabel(p));
    }
  } catch (e) {
    res.skipped.push({ point: 'host', reason: `host did not start: ${(e as Error).message}` });
  } finally {
    await host?.close().catch(() => {});
  }
  for (const p of grid.fairness) await guard(pointLabel(p), () => runFairnessPoint(env, p, res));
  await guard('host-side SPID translation micro', async () => {
    if (env.translationMicro) res.micro = env.translationMicro();
  });
  return res;
}

export { SCHEME_LABEL };
