/**
 * PASIDs and SVA (docs/scenarios.md, "PASIDs and SVA"): `alloc`, `free`, `bind`, `unbind`, and the
 * guest driver's answer to page requests, `page-requests`.
 */
import { PASID_MAX } from '../../vtd/pasid-entry.js';
import type { StepDef } from './step-def.js';
import { showInt } from './show.js';
import { PAGE_REQUEST_POLICIES, type IntValue, type PageRequestPolicy, type StepBase } from './types.js';
import { parseEnum } from './values.js';
import { resolveInt } from './vars.js';

export interface AllocStep extends StepBase { op: 'alloc'; vm: string; count: number; as?: string }
export interface FreeStep extends StepBase { op: 'free'; vm: string; pasid: IntValue }
export interface BindStep extends StepBase { op: 'bind'; process: string; device: string; pasid?: IntValue; as?: string }
export interface UnbindStep extends StepBase { op: 'unbind'; process: string; device: string }
export interface PageRequestsStep extends StepBase { op: 'page-requests'; vm: string; policy: PageRequestPolicy }

export const allocOp: StepDef<AllocStep> = {
  op: 'alloc',
  summary: 'allocate PASIDs (VT-d: VCMD under the host quota; virtio-iommu: guest-private)',
  args: { required: ['vm'], optional: ['count', 'as'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p);
    const count = c.int(a, 'count', p, 1, PASID_MAX, 1);
    if (count !== undefined && count > 1 && 'as' in a) return c.issue([...p, 'as'], "'as' names one PASID; use it with count 1");
    const as = c.defVar(a, 'as', p);
    if (!vm || !count) return undefined;
    const step: AllocStep = { ...head, op: 'alloc', vm: vm.name, count };
    if (as) step.as = as;
    return step;
  },
  async run(step, env) {
    const sva = env.vm(step.vm).sva;
    const got: number[] = [];
    for (let i = 0; i < step.count; i++) got.push(await sva.allocPasid());
    if (step.as) env.vars.set(step.as, got[0]!);
    return got.length > 4 ? `PASIDs ${got.slice(0, 4).join(', ')}, … ${got[got.length - 1]}` : `PASID${got.length > 1 ? 's' : ''} ${got.join(', ')}`;
  },
  describe: (s) => `alloc ${s.count > 1 ? `${s.count} PASIDs` : 'PASID'} on ${s.vm}${s.as ? ` as $${s.as}` : ''}`,
};

export const freeOp: StepDef<FreeStep> = {
  op: 'free',
  summary: 'free a PASID (VCMD FREE_PASID / release the guest-private number)',
  args: { required: ['vm', 'pasid'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p);
    const pasid = c.intv(a, 'pasid', p);
    return vm && pasid !== undefined ? { ...head, op: 'free', vm: vm.name, pasid } : undefined;
  },
  async run(step, env) {
    await env.vm(step.vm).sva.freePasid(resolveInt(step.pasid, env.vars));
  },
  describe: (s) => `free PASID ${showInt(s.pasid)} on ${s.vm}`,
};

export const bindOp: StepDef<BindStep> = {
  op: 'bind',
  summary: "SVA bind: the device translates a PASID through the process's page tables",
  args: { required: ['process', 'device'], optional: ['pasid', 'as'] },
  parse(a, p, head, c) {
    const pr = c.process(a, 'process', p);
    const device = c.device(a, 'device', p, pr?.vm);
    const pasid = 'pasid' in a ? c.intv(a, 'pasid', p, 1) : undefined;
    const as = c.defVar(a, 'as', p);
    if (!pr || !device || ('pasid' in a && pasid === undefined)) return undefined;
    const step: BindStep = { ...head, op: 'bind', process: pr.name, device };
    if (pasid !== undefined) step.pasid = pasid;
    if (as) step.as = as;
    return step;
  },
  async run(step, env) {
    const { env: e, proc } = env.proc(step.process);
    const pasid = await e.sva.bind(proc, step.device, step.pasid === undefined ? undefined : resolveInt(step.pasid, env.vars));
    if (step.as) env.vars.set(step.as, pasid);
    return `PASID ${pasid}`;
  },
  describe: (s) => `bind ${s.process} to ${s.device}${s.pasid !== undefined ? ` with PASID ${showInt(s.pasid)}` : ''}${s.as ? ` as $${s.as}` : ''}`,
};

export const unbindOp: StepDef<UnbindStep> = {
  op: 'unbind',
  summary: "undo a bind; the process's last unbind frees a PASID its bind allocated",
  args: { required: ['process', 'device'] },
  parse(a, p, head, c) {
    const pr = c.process(a, 'process', p);
    const device = c.device(a, 'device', p, pr?.vm);
    return pr && device ? { ...head, op: 'unbind', process: pr.name, device } : undefined;
  },
  async run(step, env) {
    const { env: e, proc } = env.proc(step.process);
    await e.sva.unbind(proc, step.device);
  },
  describe: (s) => `unbind ${s.process} from ${s.device}`,
};

export const pageRequestsOp: StepDef<PageRequestsStep> = {
  op: 'page-requests',
  summary: 'how the guest driver answers page requests: serve, refuse or ignore',
  args: { required: ['vm', 'policy'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p);
    const policy = c.take(parseEnum(a.policy, PAGE_REQUEST_POLICIES, 'policy'), [...p, 'policy']);
    return vm && policy ? { ...head, op: 'page-requests', vm: vm.name, policy } : undefined;
  },
  async run(step, env) {
    env.vm(step.vm).sva.policy = step.policy;
  },
  describe: (s) => `page requests on ${s.vm}: ${s.policy}`,
};
