/**
 * Device DMA (docs/scenarios.md, "DMA"): `dma` runs a read / write / fill / copy / compare job
 * on a device, for a bound process (its PASID), with a raw PASID, or without PASID (an IOVA). The
 * job is split into device requests (guest/workload/dma-jobs.ts); page requests it causes are
 * answered by the guest driver; the result is checked against what the step expects.
 */
import { fail } from '../../errors.js';
import { checkDmaJob, runDmaJob, type DmaJob } from '../../../guest/workload/dma-jobs.js';
import { firstDifference, hexAround } from '../../../guest/workload/data.js';
import { bytesLength, toBytes } from './bytes.js';
import { StepMismatch, type GuestProcess, type ScenarioEnv } from './env.js';
import type { StepDef } from './step-def.js';
import { hex, showAddr, showInt } from './show.js';
import { MAX_DMA_LENGTH, type AddrValue, type BytesSpec, type ExpectedFault, type IntValue, type StepBase } from './types.js';
import { parseEnum, parseSize } from './values.js';
import { resolveAddr, resolveInt } from './vars.js';

export type DmaOp = 'read' | 'write' | 'fill' | 'copy' | 'compare';

export interface DmaStep extends StepBase {
  op: 'dma';
  vm: string;
  device: string;
  /** The bound process whose PASID and address space the DMA uses. */
  process?: string;
  /** Raw PASID (no process); omitted with no process: a request without PASID (IOVA). */
  pasid?: IntValue;
  kind: DmaOp;
  /** read/write/fill: the target; copy: the destination. */
  addr: AddrValue;
  /** copy/compare: the source (compare: the second buffer). */
  src?: AddrValue;
  length: number;
  /** write: the bytes. */
  data?: BytesSpec;
  /** fill: the byte. */
  value?: number;
  /** read: the bytes the device must return. */
  expectData?: BytesSpec;
  /** compare: whether the buffers must be equal (default true). */
  equal?: boolean;
  /** The DMA must fault (and not be served by a page request). */
  fault?: ExpectedFault;
  /** Check the result in guest memory through the process's page tables (default true with a process). */
  check: boolean;
}

export const dmaOp: StepDef<DmaStep> = {
  op: 'dma',
  summary: 'a device DMA job (read, write, fill, copy, compare) by process, PASID or IOVA',
  args: { required: ['device', 'op'], optional: ['vm', 'process', 'pasid', 'va', 'iova', 'addr', 'src', 'dst', 'length', 'data', 'value', 'expect', 'equal', 'fault', 'check'] },
  parse(a, p, head, c) {
    const kind = c.take(parseEnum(a.op, ['read', 'write', 'fill', 'copy', 'compare'] as const, 'op'), [...p, 'op']);
    if ('process' in a && 'vm' in a) return c.issue([...p, 'vm'], "give 'process' or 'vm', not both (a process belongs to one VM)");
    if ('process' in a && 'pasid' in a) return c.issue([...p, 'pasid'], "a process DMA uses the PASID the process is bound with; drop 'pasid'");
    const pr = 'process' in a ? c.process(a, 'process', p) : undefined;
    const vm = pr ? pr.vm : 'vm' in a ? c.vm(a, 'vm', p) : 'process' in a ? undefined : c.issue(p, "'dma' needs 'process' (SVA) or 'vm'");
    const device = c.device(a, 'device', p, vm);
    const pasid = 'pasid' in a ? c.intv(a, 'pasid', p) : undefined;
    // Target address: va / iova / addr (one), or dst for copy/compare.
    const addrKeys = ['va', 'iova', 'addr', 'dst'].filter((k) => k in a);
    const two = kind === 'copy' || kind === 'compare';
    if (addrKeys.length !== 1) return c.issue(p, two ? `'${kind}' needs 'src' and 'dst'` : `'dma' needs exactly one target address: va, iova or addr`);
    if (two && addrKeys[0] !== 'dst') return c.issue([...p, addrKeys[0]!], `'${kind}' takes 'src' and 'dst'`);
    if (!two && (addrKeys[0] === 'dst' || 'src' in a)) return c.issue(p, `'src'/'dst' apply to copy and compare only`);
    const addr = c.addr(a, addrKeys[0]!, p);
    const src = two ? ('src' in a ? c.addr(a, 'src', p) : c.issue(p, `'${kind}' needs 'src'`)) : undefined;
    let data: BytesSpec | undefined;
    let length: number | undefined;
    if (kind === 'write') {
      if (!('data' in a)) return c.issue(p, "a DMA write needs 'data'");
      data = c.bytes(a.data, [...p, 'data'], 'data');
      if (data) length = bytesLength(data);
      if ('length' in a) c.issue([...p, 'length'], "a DMA write's length is its data's");
    } else {
      if ('data' in a) c.issue([...p, 'data'], "'data' applies to op write only");
      length = 'length' in a ? c.take(parseSize(a.length, 'length'), [...p, 'length']) : c.issue(p, `a DMA ${kind ?? ''} needs 'length'`);
    }
    if (length !== undefined && (length < 1 || length > MAX_DMA_LENGTH)) c.issue([...p, 'length'], `length must be 1..${MAX_DMA_LENGTH}`);
    const value = kind === 'fill' ? c.int(a, 'value', p, 0, 255, 0) : 'value' in a ? c.issue([...p, 'value'], "'value' applies to op fill only") : undefined;
    const expectData = 'expect' in a ? (kind === 'read' ? c.bytes(a.expect, [...p, 'expect'], 'expect') : c.issue([...p, 'expect'], "'expect' (data) applies to op read only")) : undefined;
    if (expectData && length !== undefined && bytesLength(expectData) !== length) c.issue([...p, 'expect'], `expected data has ${bytesLength(expectData)} bytes; the read has ${length}`);
    if ('equal' in a && kind !== 'compare') c.issue([...p, 'equal'], "'equal' applies to op compare only");
    const equal = kind === 'compare' ? c.bool(a, 'equal', p, true) : undefined;
    let fault: ExpectedFault | undefined;
    if ('fault' in a) {
      const f = a.fault === true ? {} : c.map(a.fault, [...p, 'fault'], 'fault');
      const fields = f && c.fields(f, [...p, 'fault'], 'fault', ['reason', 'addr']);
      if (fields) {
        fault = {};
        if ('reason' in fields) fault.reason = c.intv(fields, 'reason', [...p, 'fault'], 0, 0xff);
        if ('addr' in fields) fault.addr = c.addr(fields, 'addr', [...p, 'fault']);
      }
    }
    if (fault && head.error) c.issue([...p, 'fault'], "give 'fault' (the device's request is blocked) or 'error' (the request is refused), not both");
    const check = c.bool(a, 'check', p, pr !== undefined && fault === undefined);
    if (check && !('process' in a)) c.issue([...p, 'check'], "'check' reads the result through a process's page tables; it needs 'process'");
    if (!vm || !device || !kind || addr === undefined || length === undefined || (two && src === undefined)) return undefined;
    const step: DmaStep = { ...head, op: 'dma', vm: vm.name, device, kind, addr, length, check };
    if (pr) step.process = pr.name;
    if (pasid !== undefined) step.pasid = pasid;
    if (src !== undefined) step.src = src;
    if (data) step.data = data;
    if (value !== undefined) step.value = value;
    if (expectData) step.expectData = expectData;
    if (equal !== undefined) step.equal = equal;
    if (fault) step.fault = fault;
    return step;
  },
  run: runDma,
  describe(s) {
    const who = s.process ? s.process : s.pasid !== undefined ? `${s.vm} PASID ${showInt(s.pasid)}` : s.vm;
    const what =
      s.kind === 'copy'
        ? `copy ${showAddr(s.src)} → ${showAddr(s.addr)}`
        : s.kind === 'compare'
          ? `compare ${showAddr(s.src)} with ${showAddr(s.addr)}`
          : s.kind === 'fill'
            ? `fill ${showAddr(s.addr)} with ${hex(s.value ?? 0)}`
            : `${s.kind} ${showAddr(s.addr)}`;
    return `dma ${s.device} ${who}: ${what}, ${s.length} bytes${s.fault ? ' (must fault)' : ''}`;
  },
};

function jobOf(step: DmaStep, addr: bigint, resolve: (a: AddrValue) => bigint): DmaJob {
  switch (step.kind) {
    case 'read':
      return { op: 'read', addr, length: step.length };
    case 'write':
      return { op: 'write', addr, data: toBytes(step.data!) };
    case 'fill':
      return { op: 'fill', addr, length: step.length, value: step.value ?? 0 };
    case 'copy':
      return { op: 'copy', src: resolve(step.src!), dst: addr, length: step.length };
    case 'compare':
      return { op: 'compare', a: resolve(step.src!), b: addr, length: step.length };
  }
}

async function runDma(step: DmaStep, env: ScenarioEnv): Promise<string | undefined> {
  const V = env.vars;
  const e = env.vm(step.vm);
  let proc: GuestProcess | undefined;
  let pasid: number | undefined;
  if (step.process) {
    proc = env.proc(step.process).proc;
    const b = e.sva.binding(proc, step.device);
    if (!b) fail('ENOENT', `process ${step.process} is not bound to ${step.device}`);
    pasid = b.pasid;
  } else if (step.pasid !== undefined) pasid = resolveInt(step.pasid, V);
  const job = jobOf(step, resolveAddr(step.addr, V), (a) => resolveAddr(a, V));
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
