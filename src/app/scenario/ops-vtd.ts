/**
 * VT-d invalidations (docs/scenarios.md, "Invalidations"): `flush` submits one invalidation
 * descriptor (VT-d spec 6.5.2: PASID-cache, PASID-based IOTLB, IOTLB, PASID-based device-TLB),
 * `wait` an invalidation wait descriptor alone. Every submission ends with a wait descriptor with
 * status write, as Linux's qi_submit_sync does.
 */
import { flushRangeFor } from '../../../guest/driver/guest-process.js';
import type { StepDef } from './step-def.js';
import { showAddr, showInt } from './show.js';
import { MAX_PAGES, type AddrValue, type IntValue, type StepBase } from './types.js';
import { parseEnum } from './values.js';
import { resolveAddr, resolveInt } from './vars.js';

export interface FlushStep extends StepBase {
  op: 'flush';
  vm: string;
  /** pasid: PASID-cache; piotlb: PASID-based IOTLB; iotlb: IOTLB global; devtlb: PASID-based device-TLB. */
  cache: 'pasid' | 'piotlb' | 'iotlb' | 'devtlb';
  pasid?: IntValue;
  /** devtlb: the device whose TLB is flushed. */
  device?: string;
  va?: AddrValue;
  pages?: number;
}
export interface WaitStep extends StepBase { op: 'wait'; vm: string }

const FLUSH_NAMES = { pasid: 'PASID cache', piotlb: 'PASID-based IOTLB', iotlb: 'IOTLB', devtlb: 'PASID-based device-TLB' } as const;

export const flushOp: StepDef<FlushStep> = {
  op: 'flush',
  summary: 'VT-d: a PASID-cache, PASID-IOTLB, IOTLB or PASID device-TLB invalidation',
  args: { required: ['vm', 'cache'], optional: ['pasid', 'va', 'pages', 'device'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p, 'vtd');
    const cache = c.take(parseEnum(a.cache, ['pasid', 'piotlb', 'iotlb', 'devtlb'] as const, 'cache'), [...p, 'cache']);
    const pasid = 'pasid' in a ? c.intv(a, 'pasid', p) : undefined;
    const va = 'va' in a ? c.addr(a, 'va', p) : undefined;
    const pages = c.int(a, 'pages', p, 1, MAX_PAGES);
    const device = 'device' in a ? c.device(a, 'device', p, vm) : undefined;
    const ranged = cache === 'piotlb' || cache === 'devtlb';
    if (ranged && !('pasid' in a)) c.issue(p, `a '${cache}' flush needs 'pasid'`);
    if (('va' in a || 'pages' in a) && !ranged) c.issue(p, "'va'/'pages' apply to 'piotlb' and 'devtlb' flushes only");
    if ('pages' in a && !('va' in a)) c.issue([...p, 'pages'], "'pages' needs 'va'");
    if (cache === 'devtlb' && !('device' in a)) c.issue(p, "a 'devtlb' flush needs 'device'");
    if (cache !== 'devtlb' && 'device' in a) c.issue([...p, 'device'], "'device' applies to 'devtlb' flushes only");
    if (cache === 'iotlb' && 'pasid' in a) c.issue([...p, 'pasid'], "an 'iotlb' flush is global; it takes no 'pasid'");
    if (!vm || !cache) return undefined;
    const step: FlushStep = { ...head, op: 'flush', vm: vm.name, cache };
    if (pasid !== undefined) step.pasid = pasid;
    if (va !== undefined) step.va = va;
    if (pages !== undefined) step.pages = pages;
    if (device !== undefined) step.device = device;
    return step;
  },
  async run(step, env) {
    const g = env.vtd(step.vm);
    const V = env.vars;
    if (step.cache === 'pasid') await g.flushPasidCache(step.pasid === undefined ? undefined : resolveInt(step.pasid, V));
    else if (step.cache === 'iotlb') await g.flushIotlb();
    else {
      const range = step.va === undefined ? undefined : flushRangeFor(resolveAddr(step.va, V), step.pages ?? 1);
      if (step.cache === 'piotlb') await g.flushPiotlb(resolveInt(step.pasid!, V), range);
      else await g.flushDevTlb(step.device!, resolveInt(step.pasid!, V), range);
    }
  },
  describe: (s) => `flush ${FLUSH_NAMES[s.cache]}${s.device ? ` of ${s.device}` : ''} on ${s.vm}${s.pasid !== undefined ? ` PASID ${showInt(s.pasid)}` : ''}${s.va !== undefined ? ` at ${showAddr(s.va)}` : ''}`,
};

export const waitOp: StepDef<WaitStep> = {
  op: 'wait',
  summary: 'VT-d: an invalidation wait descriptor alone; returns when the queue drained',
  args: { required: ['vm'] },
  shorthand: (v) => (typeof v === 'string' ? { vm: v } : undefined),
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p, 'vtd');
    return vm ? { ...head, op: 'wait', vm: vm.name } : undefined;
  },
  async run(step, env) {
    await env.vtd(step.vm).waitQueue();
  },
  describe: (s) => `wait (invalidation queue drained) on ${s.vm}`,
};
