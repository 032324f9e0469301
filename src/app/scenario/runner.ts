/**
 * Run a validated scenario: start a host (in-process unless the scenario asks to spawn it), bring
 * each VM up with its guest driver (guest/workload SvaGuest), execute the steps in order and
 * stop at the first one that fails; then release everything (processes exit, drivers are
 * removed, VMs disconnect, the host closes) whatever happened.
 *
 * A step passes when it does what it says — or, with `error:`, when it fails with that errno /
 * virtio status / message. A step that fails is reported as expected vs actual. `expect` steps
 * compare the host's snapshot and what the guest drivers observed; because page requests and
 * fault records arrive asynchronously, a failing `expect` is re-checked for up to
 * EXPECT_SETTLE_MS before it counts as failed.
 */
import { isVsvaError, VsvaError, fail } from '../../errors.js';
import { childLogger } from '../../log.js';
import type { HostSnapshot } from '../../api/types.js';
import { startHost, type StartedHost } from '../harness/start-host.js';
import { startGuest, type StartedGuest } from '../harness/start-guest.js';
import { startSvaGuest, VirtioRequestError, VirtioSvaGuest, VtdSvaGuest, type SvaGuest } from '../../../guest/workload/index.js';
import { checkDmaJob, runDmaJob, type DmaJob } from '../../../guest/workload/dma-jobs.js';
import { firstDifference, hexAround } from '../../../guest/workload/data.js';
import { flushRangeFor } from '../../../guest/driver/guest-process.js';
import { toBytes } from './bytes.js';
import { checkSnapshotExpectations, resolveAddr, resolveInt, type Vars } from './expect.js';
import { describeStep, hex, showBytes, type Mismatch, type ScenarioResult, type StepResult } from './report.js';
import type { DmaStep, ExpectStep, MemoryRef, Scenario, Step, VmSpec } from './schema.js';

const log = childLogger('scenario');

/** How long a failing `expect` is re-checked (asynchronous page requests and faults). */
export const EXPECT_SETTLE_MS = 1000;
const SETTLE_POLL_MS = 20;

/** A step's failure with a precise expected-vs-actual. */
export class StepMismatch extends Error {
  constructor(readonly mismatch: Mismatch) {
    super(`${mismatch.what}: expected ${mismatch.expected}, actual ${mismatch.actual}`);
  }
}

export interface RunOptions {
  /** Called after each step, in order (progress output). */
  onStep?: (r: StepResult) => void;
  /** Run on this host instead of starting one (it is not closed at the end). */
  host?: { socket: string; snapshot(): Promise<HostSnapshot> };
}

interface VmEnv {
  spec: VmSpec;
  vm: StartedGuest;
  sva: SvaGuest;
}

class ScenarioEnv {
  readonly vars: Vars = new Map();
  readonly vms = new Map<string, VmEnv>();
  host!: { socket: string; snapshot(): Promise<HostSnapshot> };
  ownHost: StartedHost | null = null;

  vm(name: string): VmEnv {
    const v = this.vms.get(name);
    if (!v) fail('ENOENT', `no VM '${name}'`);
    return v;
  }

  /** The VM and process named `proc` (process names are unique across the scenario). */
  proc(name: string): { env: VmEnv; proc: ReturnType<SvaGuest['process']> } {
    for (const env of this.vms.values()) {
      const p = env.sva.processes.get(name);
      if (p) return { env, proc: p };
    }
    fail('ENOENT', `no live process '${name}'`);
  }
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
  let note: string | undefined;
  try {
    note = await withTimeout(execute(step, env), timeoutMs, `step ${step.index + 1}`);
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

function vtd(env: VmEnv): VtdSvaGuest {
  if (!(env.sva instanceof VtdSvaGuest)) fail('EOPNOTSUPP', `VM ${env.spec.name} is not a VT-d VM`);
  return env.sva;
}

function virtio(env: VmEnv): VirtioSvaGuest {
  if (!(env.sva instanceof VirtioSvaGuest)) fail('EOPNOTSUPP', `VM ${env.spec.name} is not a virtio-iommu VM`);
  return env.sva;
}

/** Perform one step; returns a short note for the report. Throws on failure. */
async function execute(step: Step, env: ScenarioEnv): Promise<string | undefined> {
  const V = env.vars;
  switch (step.op) {
    case 'process': {
      const p = await env.vm(step.vm).sva.createProcess(step.name, step.levels);
      return `page tables at ${hex(p.pgd)}`;
    }
    case 'exit': {
      const { env: e, proc } = env.proc(step.process);
      await e.sva.exit(proc);
      return undefined;
    }
    case 'map': {
      const { env: e, proc } = env.proc(step.process);
      const va = resolveAddr(step.va, V);
      const gpas = await e.sva.mapPages(proc, va, step.pages, { size: step.size, write: step.write, user: step.user, exec: step.exec });
      if (step.fill) await proc.write(va, toBytes(step.fill));
      return `GPA ${hex(gpas[0]!)}${gpas.length > 1 ? ' …' : ''}`;
    }
    case 'unmap': {
      const { env: e, proc } = env.proc(step.process);
      await e.sva.unmapPages(proc, resolveAddr(step.va, V), step.pages, step.flush);
      return undefined;
    }
    case 'alloc': {
      const sva = env.vm(step.vm).sva;
      const got: number[] = [];
      for (let i = 0; i < step.count; i++) got.push(await sva.allocPasid());
      if (step.as) V.set(step.as, got[0]!);
      return got.length > 4 ? `PASIDs ${got.slice(0, 4).join(', ')}, … ${got[got.length - 1]}` : `PASID${got.length > 1 ? 's' : ''} ${got.join(', ')}`;
    }
    case 'free':
      await env.vm(step.vm).sva.freePasid(resolveInt(step.pasid, V));
      return undefined;
    case 'bind': {
      const { env: e, proc } = env.proc(step.process);
      const pasid = await e.sva.bind(proc, step.device, step.pasid === undefined ? undefined : resolveInt(step.pasid, V));
      if (step.as) V.set(step.as, pasid);
      return `PASID ${pasid}`;
    }
    case 'unbind': {
      const { env: e, proc } = env.proc(step.process);
      await e.sva.unbind(proc, step.device);
      return undefined;
    }
    case 'flush': {
      const g = vtd(env.vm(step.vm));
      if (step.cache === 'pasid') await g.flushPasidCache(step.pasid === undefined ? undefined : resolveInt(step.pasid, V));
      else if (step.cache === 'iotlb') await g.flushIotlb();
      else {
        const range = step.va === undefined ? undefined : flushRangeFor(resolveAddr(step.va, V), step.pages ?? 1);
        if (step.cache === 'piotlb') await g.flushPiotlb(resolveInt(step.pasid!, V), range);
        else await g.flushDevTlb(step.device!, resolveInt(step.pasid!, V), range);
      }
      return undefined;
    }
    case 'wait':
      await vtd(env.vm(step.vm)).waitQueue();
      return undefined;
    case 'sleep':
      await new Promise((r) => setTimeout(r, step.ms));
      return undefined;
    case 'page-requests':
      env.vm(step.vm).sva.policy = step.policy;
      return undefined;
    case 'dma':
      return dmaStep(step, env);
    case 'virtio-attach':
      await virtio(env.vm(step.vm)).attach(step.device, step.domain);
      return undefined;
    case 'virtio-detach':
      await virtio(env.vm(step.vm)).detach(step.device, step.domain);
      return undefined;
    case 'virtio-map': {
      const g = virtio(env.vm(step.vm));
      const gpa = await g.map(step.domain, resolveAddr(step.iova, V), step.length, { read: step.read, write: step.write, ...(step.gpa !== undefined ? { gpa: resolveAddr(step.gpa, V) } : {}) });
      if (step.as) V.set(step.as, gpa);
      return `GPA ${hex(gpa)}`;
    }
    case 'virtio-unmap':
      await virtio(env.vm(step.vm)).unmap(step.domain, resolveAddr(step.iova, V), step.length);
      return undefined;
    case 'expect':
      return expectStep(step, env);
  }
}

async function dmaStep(step: DmaStep, env: ScenarioEnv): Promise<string | undefined> {
  const V = env.vars;
  const e = env.vm(step.vm);
  let proc: ReturnType<SvaGuest['process']> | undefined;
  let pasid: number | undefined;
  if (step.process) {
    proc = env.proc(step.process).proc;
    const b = e.sva.binding(proc, step.device);
    if (!b) fail('ENOENT', `process ${step.process} is not bound to ${step.device}`);
    pasid = b.pasid;
  } else if (step.pasid !== undefined) pasid = resolveInt(step.pasid, V);
  const addr = resolveAddr(step.addr, V);
  let job: DmaJob;
  switch (step.kind) {
    case 'read':
      job = { op: 'read', addr, length: step.length };
      break;
    case 'write':
      job = { op: 'write', addr, data: toBytes(step.data!) };
      break;
    case 'fill':
      job = { op: 'fill', addr, length: step.length, value: step.value ?? 0 };
      break;
    case 'copy':
      job = { op: 'copy', src: resolveAddr(step.src!, V), dst: addr, length: step.length };
      break;
    case 'compare':
      job = { op: 'compare', a: resolveAddr(step.src!, V), b: addr, length: step.length };
      break;
  }
  const prBefore = e.sva.pageRequests;
  const r = await runDmaJob({ dma: (bdf, req) => e.vm.dma(bdf, req), bdf: step.device, ...(pasid !== undefined ? { pasid } : {}) }, job);
  const served = e.sva.pageRequests - prBefore;
  const prNote = served > 0 ? `, ${served} page request(s)` : '';
  if (step.fault) {
    if (r.ok) throw new StepMismatch({ what: 'DMA outcome', expected: `a fault${step.fault.reason !== undefined ? ` with reason ${hex(resolveInt(step.fault.reason, V))}` : ''}`, actual: `completed (${r.bytes} bytes${prNote})` });
    if (step.fault.reason !== undefined && r.fault.reason !== resolveInt(step.fault.reason, V)) throw new StepMismatch({ what: 'DMA fault reason', expected: hex(resolveInt(step.fault.reason, V)), actual: hex(r.fault.reason) });
    if (step.fault.addr !== undefined && r.fault.addr !== resolveAddr(step.fault.addr, V)) throw new StepMismatch({ what: 'DMA fault address', expected: hex(resolveAddr(step.fault.addr, V)), actual: hex(r.fault.addr) });
    return `faulted: reason ${hex(r.fault.reason)} at ${hex(r.fault.addr)}${prNote}`;
  }
  if (!r.ok) throw new StepMismatch({ what: 'DMA outcome', expected: 'completed', actual: `fault reason ${hex(r.fault.reason)} at ${hex(r.fault.addr)} after ${r.bytes} bytes${prNote}` });
  if (step.kind === 'read' && step.expectData) {
    const want = toBytes(step.expectData);
    const d = firstDifference(r.data!, want);
    if (d >= 0) throw new StepMismatch({ what: `data the device read (byte ${d})`, expected: hexAround(want, d), actual: hexAround(r.data!, d) });
  }
  if (step.kind === 'compare' && r.equal !== (step.equal ?? true)) throw new StepMismatch({ what: 'device compare', expected: step.equal === false ? 'different' : 'equal', actual: r.equal ? 'equal' : 'different' });
  if (step.check && proc) {
    const bad = await checkDmaJob(proc, job, r);
    if (bad) throw new StepMismatch({ what: 'result in guest memory', expected: 'the job’s effect', actual: bad });
  }
  return `${r.bytes} bytes in ${r.requests} request(s)${prNote}${step.kind === 'compare' ? (r.equal ? ', equal' : ', different') : ''}`;
}

async function readRef(ref: MemoryRef, length: number, env: ScenarioEnv): Promise<Uint8Array> {
  if ('process' in ref) return env.proc(ref.process).proc.read(resolveAddr(ref.va, env.vars), length);
  return env.vm(ref.vm).vm.memread(resolveAddr(ref.gpa, env.vars), length);
}

function showRef(ref: MemoryRef, vars: Vars): string {
  return 'process' in ref ? `${ref.process} VA ${hex(resolveAddr(ref.va, vars))}` : `${ref.vm} GPA ${hex(resolveAddr(ref.gpa, vars))}`;
}

async function checkOnce(step: ExpectStep, env: ScenarioEnv): Promise<Mismatch | undefined> {
  if (step.capacity || step.vms !== undefined || step.vmChecks.length > 0) {
    const snap = await env.host.snapshot();
    const bad = checkSnapshotExpectations(step, snap, (name) => env.vm(name).sva, env.vars);
    if (bad) return bad;
  }
  for (const m of step.memory) {
    const length = 'sameAs' in m.equals ? m.equals.length : toBytes(m.equals).length;
    const actual = await readRef(m.at, length, env);
    const want = 'sameAs' in m.equals ? await readRef(m.equals.sameAs, length, env) : toBytes(m.equals);
    const d = firstDifference(actual, want);
    if (d >= 0) {
      const of = 'sameAs' in m.equals ? `the bytes at ${showRef(m.equals.sameAs, env.vars)}` : showBytes(m.equals);
      return { what: `memory at ${showRef(m.at, env.vars)}, byte ${d} (comparing with ${of})`, expected: hexAround(want, d), actual: hexAround(actual, d) };
    }
  }
  return undefined;
}

async function expectStep(step: ExpectStep, env: ScenarioEnv): Promise<string | undefined> {
  const deadline = Date.now() + EXPECT_SETTLE_MS;
  for (;;) {
    const bad = await checkOnce(step, env);
    if (!bad) return undefined;
    if (Date.now() >= deadline) throw new StepMismatch(bad);
    for (const v of env.vms.values()) if (v.sva instanceof VtdSvaGuest) await v.sva.poll();
    await new Promise((r) => setTimeout(r, SETTLE_POLL_MS));
  }
}

export { describeStep };
