/**
 * Expectations (docs/scenarios.md, "Expectations"): `expect` checks the host's snapshot, what one
 * VM's guest driver observed (expect.ts) and bytes in guest memory. Page requests and fault records
 * reach the guest asynchronously, so a failing `expect` is re-checked for up to EXPECT_SETTLE_MS
 * before it counts as failed.
 */
import { firstDifference, hexAround } from '../../../guest/workload/data.js';
import { VtdSvaGuest } from '../../../guest/workload/index.js';
import { PASID_MAX } from '../../vtd/pasid-entry.js';
import { toBytes } from './bytes.js';
import type { Checker, Obj, Path } from './checker.js';
import { StepMismatch, type ScenarioEnv } from './env.js';
import { checkSnapshotExpectations, type PasidRowExpectation, type SnapshotExpectation, type VmExpectation } from './expect.js';
import type { StepDef } from './step-def.js';
import { hex, showBytes, type Mismatch } from './show.js';
import type { BytesSpec, IntValue, MemoryRef, StepBase, VmSpec } from './types.js';
import { parseBdf, parseEnum, parseInt, parseIntValue, parseSize, parseString } from './values.js';
import { resolveAddr, type Vars } from './vars.js';

export interface ExpectStep extends StepBase, SnapshotExpectation {
  op: 'expect';
  /** Data equality checks. */
  memory: { at: MemoryRef; equals: BytesSpec | { sameAs: MemoryRef; length: number } }[];
}

/** How long a failing `expect` is re-checked (asynchronous page requests and faults). */
export const EXPECT_SETTLE_MS = 1000;
const SETTLE_POLL_MS = 20;

/** The keys that check one VM (they need `vm`). */
const VM_KEYS = ['connected', 'used', 'quota', 'pasids', 'pasid', 'fault', 'noFaults', 'pageRequests'];

export const expectOp: StepDef<ExpectStep> = {
  op: 'expect',
  summary: "check the host's snapshot, what one VM's guest driver observed, and guest memory",
  args: { required: [], optional: ['capacity', 'vmCount', 'vm', 'memory', ...VM_KEYS] },
  parse(a, p, head, c) {
    if (head.error) return c.issue([...p, 'error'], "an 'expect' step cannot expect an error");
    const step: ExpectStep = { ...head, op: 'expect', vmChecks: [], memory: [] };
    if ('capacity' in a) {
      const m = c.map(a.capacity, [...p, 'capacity'], 'capacity');
      const cap = m && c.fields(m, [...p, 'capacity'], 'capacity', ['total', 'available']);
      if (cap) {
        step.capacity = {};
        if ('total' in cap) step.capacity.total = c.int(cap, 'total', [...p, 'capacity'], 0, PASID_MAX);
        if ('available' in cap) step.capacity.available = c.int(cap, 'available', [...p, 'capacity'], 0, PASID_MAX);
      }
    }
    if ('vmCount' in a) step.vms = c.int(a, 'vmCount', p, 0, 100_000);
    const hasVmKeys = VM_KEYS.some((k) => k in a);
    if (hasVmKeys && !('vm' in a)) c.issue(p, `${VM_KEYS.filter((k) => k in a).join(', ')} need 'vm' (which VM to check)`);
    if ('vm' in a) {
      const vm = c.vm(a, 'vm', p);
      if (vm) step.vmChecks.push(vmExpectation(vm, a, p, c));
    }
    if ('memory' in a) {
      const list = Array.isArray(a.memory) ? a.memory : [a.memory];
      list.forEach((m, i) => {
        const check = memoryCheck(m, Array.isArray(a.memory) ? [...p, 'memory', i] : [...p, 'memory'], c);
        if (check) step.memory.push(check);
      });
    }
    if (!hasVmKeys && !step.capacity && step.vms === undefined && step.vmChecks.length === 0 && step.memory.length === 0) c.issue(p, "'expect' checks nothing (give capacity, vmCount, vm + checks, or memory)");
    return step;
  },
  async run(step, env) {
    const deadline = Date.now() + EXPECT_SETTLE_MS;
    for (;;) {
      const bad = await checkOnce(step, env);
      if (!bad) return undefined;
      if (Date.now() >= deadline) throw new StepMismatch(bad);
      for (const v of env.vms.values()) if (v.sva instanceof VtdSvaGuest) await v.sva.poll();
      await new Promise((r) => setTimeout(r, SETTLE_POLL_MS));
    }
  },
  describe(s) {
    const parts: string[] = [];
    if (s.capacity) parts.push('capacity');
    if (s.vms !== undefined) parts.push('VM count');
    for (const v of s.vmChecks) parts.push(`${v.vm}`);
    if (s.memory.length) parts.push(`${s.memory.length} memory check(s)`);
    return `expect ${parts.join(', ')}`;
  },
};

// --- parsing ------------------------------------------------------------------------------------

function memoryRef(o: Obj, p: Path, c: Checker): MemoryRef | undefined {
  if ('process' in o) {
    if ('gpa' in o) return c.issue([...p, 'gpa'], "give 'process' + 'va' or 'vm' + 'gpa'");
    const pr = c.process(o, 'process', p);
    const va = 'va' in o ? c.addr(o, 'va', p) : c.issue(p, "a memory check in a process needs 'va'");
    return pr && va !== undefined ? { vm: pr.vm.name, process: pr.name, va } : undefined;
  }
  const vm = 'vm' in o ? c.vm(o, 'vm', p) : c.issue(p, "a memory location needs 'process' + 'va' or 'vm' + 'gpa'");
  const gpa = 'gpa' in o ? c.addr(o, 'gpa', p) : c.issue(p, "a memory location in a VM needs 'gpa'");
  return vm && gpa !== undefined ? { vm: vm.name, gpa } : undefined;
}

function memoryCheck(raw: unknown, mp: Path, c: Checker): ExpectStep['memory'][number] | undefined {
  const m = c.map(raw, mp, 'a memory check');
  const o = m && c.fields(m, mp, 'a memory check', ['process', 'va', 'vm', 'gpa', 'equals', 'length'], ['equals']);
  if (!o) return undefined;
  const at = memoryRef(o, mp, c);
  const eqRaw = c.map(o.equals, [...mp, 'equals'], 'equals');
  if (!eqRaw || !at) return undefined;
  if ('process' in eqRaw || 'gpa' in eqRaw) {
    const eq = c.fields(eqRaw, [...mp, 'equals'], 'equals', ['process', 'va', 'vm', 'gpa']);
    const other = eq && memoryRef(eq, [...mp, 'equals'], c);
    const length = 'length' in o ? c.take(parseSize(o.length, 'length'), [...mp, 'length']) : c.issue(mp, "comparing two locations needs 'length'");
    return other && length !== undefined ? { at, equals: { sameAs: other, length } } : undefined;
  }
  if ('length' in o) c.issue([...mp, 'length'], "the length comes from 'equals' here");
  const bytes = c.bytes(o.equals, [...mp, 'equals'], 'equals');
  return bytes ? { at, equals: bytes } : undefined;
}

function vmExpectation(vm: VmSpec, a: Obj, p: Path, c: Checker): VmExpectation {
  const e: VmExpectation = { vm: vm.name, rows: [] };
  if ('connected' in a) e.connected = c.bool(a, 'connected', p, true);
  if ('used' in a) e.used = c.int(a, 'used', p, 0, PASID_MAX);
  if ('quota' in a) e.quota = c.int(a, 'quota', p, 0, PASID_MAX);
  if ('pasids' in a) e.pasids = c.int(a, 'pasids', p, 0, PASID_MAX);
  if ('pageRequests' in a) e.pageRequests = c.int(a, 'pageRequests', p, 0, Number.MAX_SAFE_INTEGER);
  if ('noFaults' in a) e.noFaults = c.bool(a, 'noFaults', p, true);
  if ('fault' in a) {
    const m = c.map(a.fault, [...p, 'fault'], 'fault');
    const f = m && c.fields(m, [...p, 'fault'], 'fault', ['reason', 'addr', 'pasid']);
    if (f) {
      const fe: VmExpectation['fault'] = {};
      if ('reason' in f) fe.reason = c.intv(f, 'reason', [...p, 'fault'], 0, 0xff);
      if ('addr' in f) fe.addr = c.addr(f, 'addr', [...p, 'fault']);
      if ('pasid' in f) fe.pasid = c.intv(f, 'pasid', [...p, 'fault']);
      e.fault = fe;
    }
  }
  if ('pasid' in a) {
    const list = Array.isArray(a.pasid) ? a.pasid : [a.pasid];
    list.forEach((r, i) => {
      const row = rowExpectation(r, Array.isArray(a.pasid) ? [...p, 'pasid', i] : [...p, 'pasid'], c);
      if (row) e.rows.push(row);
    });
  }
  return e;
}

function rowExpectation(raw: unknown, p: Path, c: Checker): PasidRowExpectation | undefined {
  const m = c.map(raw, p, 'a PASID row expectation');
  const o = m && c.fields(m, p, 'a PASID row expectation', ['gpasid', 'hpasid', 'absent', 'state', 'refs', 'users', 'bindings', 'save']);
  if (!o) return undefined;
  const row: PasidRowExpectation = { absent: c.bool(o, 'absent', p, false), loc: c.locOf(p) };
  const pasidVal = (key: string) => (x: unknown) => {
    const v = c.take(parseIntValue(x, 0, PASID_MAX, key), [...p, key]);
    if (v !== undefined && typeof v === 'object') c.useVar(v.ref, [...p, key]);
    return v;
  };
  if ('gpasid' in o) row.gpasid = c.matcher<IntValue | null>(o.gpasid, [...p, 'gpasid'], (x) => (x === null ? null : pasidVal('gpasid')(x)));
  if ('hpasid' in o) row.hpasid = c.matcher<IntValue>(o.hpasid, [...p, 'hpasid'], pasidVal('hpasid'));
  const selects = (row.gpasid && 'eq' in row.gpasid) || (row.hpasid && 'eq' in row.hpasid);
  if (!selects) c.issue(p, 'a PASID row expectation needs gpasid or hpasid as a plain value to pick the row');
  if ('state' in o) row.state = c.matcher(o.state, [...p, 'state'], (x) => c.take(parseEnum(x, ['idle', 'active', 'free-pending'] as const, 'state'), [...p, 'state']));
  if ('refs' in o) row.refs = c.matcher(o.refs, [...p, 'refs'], (x) => c.take(parseInt(x, 0, 1 << 30, 'refs'), [...p, 'refs']));
  if ('users' in o) {
    const l = c.list(o.users, [...p, 'users'], 'users');
    if (l) row.users = l.map((u, i) => c.take(parseString(u, 'a user'), [...p, 'users', i]) ?? '');
  }
  if ('bindings' in o) {
    if (Array.isArray(o.bindings)) {
      const bindings: { bdf: string; pgtt?: 'nested' | 'sl' | 'pt' }[] = [];
      o.bindings.forEach((b, i) => {
        const bp = [...p, 'bindings', i];
        const bm = c.map(b, bp, 'a binding');
        const bo = bm && c.fields(bm, bp, 'a binding', ['bdf', 'pgtt'], ['bdf']);
        if (!bo) return;
        const bdf = c.take(parseBdf(bo.bdf, 'bdf'), [...bp, 'bdf']);
        const pgtt = 'pgtt' in bo ? c.take(parseEnum(bo.pgtt, ['nested', 'sl', 'pt'] as const, 'pgtt'), [...bp, 'pgtt']) : undefined;
        if (bdf) bindings.push(pgtt ? { bdf, pgtt } : { bdf });
      });
      row.bindings = bindings;
    } else row.bindings = c.int(o, 'bindings', p, 0, 1 << 16);
  }
  if (row.absent && Object.keys(o).some((k) => !['gpasid', 'hpasid', 'absent'].includes(k))) c.issue(p, 'an absent row has nothing else to check');
  if ('save' in o) {
    const sm = c.map(o.save, [...p, 'save'], 'save');
    const s = sm && c.fields(sm, [...p, 'save'], 'save', ['hpasid', 'gpasid']);
    if (s) {
      row.save = {};
      if ('hpasid' in s) row.save.hpasid = c.defVar(s, 'hpasid', [...p, 'save']);
      if ('gpasid' in s) row.save.gpasid = c.defVar(s, 'gpasid', [...p, 'save']);
    }
  }
  return row;
}

// --- running ------------------------------------------------------------------------------------

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
