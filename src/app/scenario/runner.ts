/**
 * Run a validated scenario: start a host (in-process unless the scenario asks to spawn it), bring
 * each VM up with its guest driver (guest/workload SvaGuest), execute the steps in order and
 * stop at the first one that fails; then release everything (processes exit, drivers are
 * removed, VMs disconnect, the host closes) whatever happened.
 *
 * A step passes when it does what it says — or, with `error:`, when it fails with that errno /
 * virtio status / message. A step that fails is reported as expected vs actual. `expect` steps
 * compare the host's snapshot and what the guest drivers observed. What each step does is its
 * action's record's `run` (steps.ts).
 */
import { fail, isVsvaError, VsvaError } from '../../errors.js';
import { childLogger } from '../../log.js';
import type { HostSnapshot } from '../../api/types.js';
import { startHost } from '../harness/start-host.js';
import { startGuest } from '../harness/start-guest.js';
import { startSvaGuest, VirtioRequestError } from '../../../guest/workload/index.js';
import { ScenarioEnv, StepMismatch } from './env.js';
import type { ScenarioResult, StepResult } from './report.js';
import type { Scenario } from './schema.js';
import type { Mismatch } from './show.js';
import { defOf, type Step } from './steps.js';

const log = childLogger('scenario');

export interface RunOptions {
  /** Called after each step, in order (progress output). */
  onStep?: (r: StepResult) => void;
  /** Run on this host instead of starting one (it is not closed at the end). */
  host?: { socket: string; snapshot(): Promise<HostSnapshot> };
  /** The host uAPI of VMs whose spec names none (default 'vfio-sva'; `vsva run --uapi`). */
  uapi?: 'vfio-sva' | 'iommufd';
}

export async function runScenario(sc: Scenario, opts: RunOptions = {}): Promise<ScenarioResult> {
  const t0 = Date.now();
  const env = new ScenarioEnv();
  const results: StepResult[] = [];
  const result: ScenarioResult = { scenario: { name: sc.name, file: sc.file }, passed: false, steps: results, ms: 0 };
  try {
    await setUp(sc, env, opts);
  } catch (e) {
    result.setupError = errText(e);
  }
  let failed = result.setupError !== undefined;
  for (const step of sc.steps) {
    if (failed) {
      results.push({ step, status: 'skip', ms: 0 });
      continue;
    }
    const r = await runStep(step, env, sc.stepTimeoutMs);
    results.push(r);
    opts.onStep?.(r);
    if (r.status === 'fail') failed = true;
  }
  try {
    await tearDown(env);
  } catch (e) {
    result.teardownError = errText(e);
  }
  result.passed = !failed && result.teardownError === undefined;
  result.ms = Date.now() - t0;
  return result;
}

async function setUp(sc: Scenario, env: ScenarioEnv, opts: RunOptions): Promise<void> {
  if (opts.host) env.host = opts.host;
  else {
    env.ownHost = await startHost({ spawn: sc.host.spawn, pasidBits: sc.host.pasidBits });
    env.host = env.ownHost;
  }
  for (const spec of sc.vms) {
    const vm = await startGuest({
      socket: env.host.socket,
      name: spec.name,
      viommu: spec.viommu,
      memory: spec.memory,
      pasidQuota: spec.pasidQuota,
      devices: spec.devices,
      ...(spec.viommu === 'vtd' ? { vcmd: spec.vcmd } : {}),
      uapi: spec.uapi ?? opts.uapi ?? 'vfio-sva',
    });
    try {
      const sva = await startSvaGuest(vm, { viommu: spec.viommu, memory: spec.memory, devices: spec.devices, ...(spec.viommu === 'vtd' ? { vcmd: spec.vcmd } : {}) });
      sva.policy = spec.pageRequests;
      env.vms.set(spec.name, { spec, vm, sva });
    } catch (e) {
      await vm.close();
      throw e;
    }
  }
}

async function tearDown(env: ScenarioEnv): Promise<void> {
  const errors: string[] = [];
  for (const { sva, vm } of [...env.vms.values()].reverse()) {
    try {
      await sva.close();
    } catch (e) {
      errors.push(`${vm.name}: ${errText(e)}`);
    }
    try {
      await vm.close();
    } catch (e) {
      errors.push(`${vm.name}: ${errText(e)}`);
    }
  }
  env.vms.clear();
  if (env.ownHost) await env.ownHost.close();
  if (errors.length) fail('EIO', errors.join('; '));
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new VsvaError('ETIMEDOUT', `${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function runStep(step: Step, env: ScenarioEnv, timeoutMs: number): Promise<StepResult> {
  const t0 = Date.now();
  const done = (r: Omit<StepResult, 'step' | 'ms'>): StepResult => ({ step, ms: Date.now() - t0, ...r });
  let note: string | void;
  try {
    note = await withTimeout(defOf(step).run(step, env), timeoutMs, `step ${step.index + 1}`);
  } catch (e) {
    if (e instanceof StepMismatch) return done({ status: 'fail', mismatch: e.mismatch });
    if (step.error) {
      const bad = errorMismatch(step, e);
      return bad ? done({ status: 'fail', mismatch: bad }) : done({ status: 'pass', note: `failed as expected: ${errText(e)}` });
    }
    log.debug({ err: e, step: step.index }, 'step failed');
    return done({ status: 'fail', mismatch: { what: 'outcome', expected: 'success', actual: `error ${errText(e)}` } });
  }
  if (step.error) {
    const want = [step.error.errno, step.error.status, step.error.message && `'${step.error.message}'`].filter(Boolean).join(' / ');
    return done({ status: 'fail', mismatch: { what: 'outcome', expected: `an error (${want})`, actual: `success${note ? ` (${note})` : ''}` } });
  }
  return done(note ? { status: 'pass', note } : { status: 'pass' });
}

/** Undefined when `e` is the error the step expects. */
function errorMismatch(step: Step, e: unknown): Mismatch | undefined {
  const want = step.error!;
  const actual = `error ${errText(e)}`;
  if (want.errno && !isVsvaError(e, want.errno)) return { what: 'error', expected: `errno ${want.errno}`, actual };
  if (want.status && !(e instanceof VirtioRequestError && e.statusName === want.status)) return { what: 'error', expected: `virtio-iommu status ${want.status}`, actual };
  if (want.message && !errText(e).includes(want.message)) return { what: 'error message', expected: `containing '${want.message}'`, actual };
  return undefined;
}
