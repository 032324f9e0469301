/**
 * Runs the uAPI experiment against a UapiEnv: one host, one VM per uAPI on it, and `rounds`
 * rounds in which each VM runs `iterations / rounds` iterations of the workload (types.ts
 * UAPI_OPS), the VMs taking turns and the order swapped every round, so that both uAPIs see
 * the same machine conditions (A/B interleaved in one run).
 *
 * Per operation: latency is wall-clock around the guest-visible call (performance.now, µs);
 * messages are the frames the VM's wire tap counted between just before the call and after
 * the VM settled (wire-tap.ts). An operation that fails is recorded with its status, the rest
 * of that iteration is skipped and the iteration is torn down; the run goes on.
 */
import os from 'node:os';
import { fail } from '../../../errors.js';
import { childLogger } from '../../../log.js';
import { distribution } from '../stats.js';
import { FRAME_CLASSES, diffCounts, type WireCounts } from './wire-tap.js';
import { UAPI_OPS, UAPIS, type Uapi, type UapiEnv, type UapiOp, type UapiVm } from './types.js';
import type { UapiFailure, UapiMessageRow, UapiOpRow, UapiResults, UapiSample } from './results.js';

const log = childLogger('experiment');

export interface UapiRunProgress {
  tick(label: string): void;
  status(label: string): void;
}

export interface UapiRunOptions {
  /** Iterations per uAPI (each runs every operation once). */
  iterations: number;
  /** Rounds the iterations are spread over, alternating the uAPIs (default min(iterations, 10)). */
  rounds?: number;
  quick?: boolean;
  /** Only these uAPIs (default both). */
  uapis?: readonly Uapi[];
  progress?: UapiRunProgress;
}

export const COUNTING_METHOD =
  'frames on the guest\'s Unix-socket connections (main and backend channel), read from each vhost-user header by a transport tap in the guest process (src/app/experiment/uapi/wire-tap.ts): requests, replies, back-end requests and their acks';

function status(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === 'string') return code;
  return (e as Error)?.message?.split(/[:\n]/)[0] ?? String(e);
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Accumulates the breakdown by message name per uAPI and operation. */
class MessageTally {
  private readonly sums = new Map<string, { uapi: Uapi; op: UapiOp; byName: Map<string, number>; n: number }>();

  add(uapi: Uapi, op: UapiOp, d: WireCounts): void {
    const key = `${uapi}/${op}`;
    let t = this.sums.get(key);
    if (!t) this.sums.set(key, (t = { uapi, op, byName: new Map(), n: 0 }));
    t.n++;
    for (const [k, v] of Object.entries(d.byName)) t.byName.set(k, (t.byName.get(k) ?? 0) + v);
  }

  rows(): UapiMessageRow[] {
    const out: UapiMessageRow[] = [];
    for (const t of this.sums.values()) {
      for (const [k, v] of t.byName) {
        const sp = k.indexOf(' ');
        out.push({ uapi: t.uapi, op: t.op, class: k.slice(0, sp), message: k.slice(sp + 1), per_op: v / t.n });
      }
    }
    const cls = (c: string) => FRAME_CLASSES.indexOf(c as never);
    return out.sort((a, b) => UAPIS.indexOf(a.uapi) - UAPIS.indexOf(b.uapi) || UAPI_OPS.indexOf(a.op) - UAPI_OPS.indexOf(b.op) || cls(a.class) - cls(b.class) || a.message.localeCompare(b.message));
  }
}

/** Per-op rows from the samples, the failures and the message breakdown. */
export function summarize(samples: readonly UapiSample[], failures: readonly UapiFailure[], messages: readonly UapiMessageRow[]): UapiOpRow[] {
  const rows: UapiOpRow[] = [];
  for (const uapi of UAPIS) {
    for (const op of UAPI_OPS) {
      const s = samples.filter((x) => x.uapi === uapi && x.op === op);
      const failed = failures.filter((f) => f.uapi === uapi && f.op === op).length;
      if (s.length === 0 && failed === 0) continue;
      const d = distribution(s.map((x) => x.latency_us));
      const mean = (f: (x: UapiSample) => number) => (s.length ? s.reduce((a, x) => a + f(x), 0) / s.length : NaN);
      const msgs = s.map((x) => x.messages);
      rows.push({
        uapi,
        op,
        samples: s.length,
        failed,
        p50_us: d.p50,
        p99_us: d.p99,
        mean_us: d.mean,
        messages_per_op: mean((x) => x.messages),
        messages_min: msgs.length ? Math.min(...msgs) : NaN,
        messages_max: msgs.length ? Math.max(...msgs) : NaN,
        requests_per_op: mean((x) => x.requests),
        replies_per_op: mean((x) => x.replies),
        backend_requests_per_op: mean((x) => x.backend_requests),
        backend_replies_per_op: mean((x) => x.backend_replies),
        request_names: messages
          .filter((m) => m.uapi === uapi && m.op === op && m.class === 'request')
          .map((m) => `${m.message}×${Number(m.per_op.toPrecision(3))}`)
          .join(' '),
      });
    }
  }
  return rows;
}

async function runIteration(vm: UapiVm, i: number, samples: UapiSample[], failures: UapiFailure[], tally: MessageTally): Promise<void> {
  try {
    await vm.prepare(i);
  } catch (e) {
    failures.push({ uapi: vm.uapi, op: 'prepare', iteration: i, status: status(e) });
    log.warn({ vm: vm.name, iteration: i, err: errorMessage(e) }, 'uapi experiment: prepare failed');
    await vm.finish().catch(() => undefined);
    return;
  }
  for (const op of UAPI_OPS) {
    const before = vm.wire();
    const t0 = performance.now();
    try {
      await vm.run(op);
    } catch (e) {
      failures.push({ uapi: vm.uapi, op, iteration: i, status: status(e) });
      log.warn({ vm: vm.name, op, iteration: i, err: errorMessage(e) }, 'uapi experiment: operation failed');
      break;
    }
    const latency = (performance.now() - t0) * 1000;
    await vm.settle();
    const d = diffCounts(vm.wire(), before);
    tally.add(vm.uapi, op, d);
    samples.push({
      uapi: vm.uapi,
      op,
      iteration: i,
      latency_us: latency,
      messages: d.total,
      requests: d.byClass.request,
      replies: d.byClass.reply,
      backend_requests: d.byClass['backend-request'],
      backend_replies: d.byClass['backend-reply'],
    });
  }
  try {
    await vm.finish();
  } catch (e) {
    failures.push({ uapi: vm.uapi, op: 'finish', iteration: i, status: status(e) });
    log.warn({ vm: vm.name, iteration: i, err: errorMessage(e) }, 'uapi experiment: finish failed');
  }
}

/** Run the experiment; the host and the VMs are closed at the end, whatever happened. */
export async function runUapiExperimentOn(env: UapiEnv, opts: UapiRunOptions): Promise<UapiResults> {
  if (!Number.isSafeInteger(opts.iterations) || opts.iterations < 1) fail('EINVAL', `iterations must be a positive integer, got ${opts.iterations}`);
  const rounds = opts.rounds ?? Math.min(opts.iterations, 10);
  if (!Number.isSafeInteger(rounds) || rounds < 1 || rounds > opts.iterations) fail('EINVAL', `rounds must be an integer in [1, iterations], got ${rounds}`);
  const uapis = opts.uapis ?? UAPIS;
  if (uapis.length === 0 || uapis.some((u) => !UAPIS.includes(u))) fail('EINVAL', `uapis must be some of ${UAPIS.join(', ')}`);
  const cpus = os.cpus();
  const res: UapiResults = {
    startedAt: new Date().toISOString(),
    quick: opts.quick ?? false,
    machine: { cpus: cpus[0]?.model.trim() ?? 'unknown', cores: cpus.length, node: process.version },
    hostKind: env.hostKind,
    viommu: env.viommu,
    counting: COUNTING_METHOD,
    iterations: opts.iterations,
    rounds,
    ops: [],
    messages: [],
    samples: [],
    failures: [],
    skipped: [],
  };
  const tally = new MessageTally();
  opts.progress?.status('starting the host');
  const host = await env.startHost();
  const vms: UapiVm[] = [];
  try {
    for (const uapi of uapis) {
      opts.progress?.status(`starting the ${uapi} VM`);
      try {
        vms.push(await env.startVm(host, uapi, `uapi-${uapi}`));
      } catch (e) {
        res.skipped.push({ uapi, reason: errorMessage(e) });
        log.warn({ uapi, err: errorMessage(e) }, 'uapi experiment: VM did not start');
      }
    }
    let done = 0;
    for (let r = 0; r < rounds; r++) {
      // iterations spread evenly: round r runs [r·n/R, (r+1)·n/R)
      const from = Math.floor((r * opts.iterations) / rounds);
      const to = Math.floor(((r + 1) * opts.iterations) / rounds);
      const order = r % 2 === 0 ? vms : [...vms].reverse();
      for (const vm of order) {
        for (let i = from; i < to; i++) await runIteration(vm, i, res.samples, res.failures, tally);
      }
      done = to;
      opts.progress?.tick(`round ${r + 1}/${rounds}, ${done} of ${opts.iterations} iterations per uAPI`);
    }
  } finally {
    for (const vm of vms) await vm.close().catch((e: unknown) => log.warn({ vm: vm.name, err: errorMessage(e) }, 'close failed'));
    await host.close().catch((e: unknown) => log.warn({ err: errorMessage(e) }, 'host close failed'));
  }
  res.messages = tally.rows();
  res.ops = summarize(res.samples, res.failures, res.messages);
  return res;
}
