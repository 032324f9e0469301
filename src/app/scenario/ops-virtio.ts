/**
 * virtio-iommu requests (docs/scenarios.md, "virtio-iommu requests"; virtio spec 5.13.6):
 * `virtio-attach`, `virtio-detach`, `virtio-map`, `virtio-unmap`. A status other than OK fails
 * the step with the status and Linux's errno for it (guest/workload VirtioRequestError).
 */
import type { Checker, Obj, Path } from './checker.js';
import type { StepDef } from './step-def.js';
import { hex, showAddr } from './show.js';
import { MAX_DMA_LENGTH, type AddrValue, type StepBase } from './types.js';
import { parseSize } from './values.js';
import { resolveAddr } from './vars.js';

/** ATTACH or DETACH of the endpoint (the device's requester ID) to or from a domain. */
export interface VirtioEndpointStep<Op extends 'virtio-attach' | 'virtio-detach'> extends StepBase { op: Op; vm: string; device: string; domain: number }
export type VirtioAttachStep = VirtioEndpointStep<'virtio-attach'>;
export type VirtioDetachStep = VirtioEndpointStep<'virtio-detach'>;
export interface VirtioMapStep extends StepBase {
  op: 'virtio-map';
  vm: string;
  domain: number;
  iova: AddrValue;
  length: number;
  /** Guest physical address of the target; omitted: fresh zeroed guest pages (stored in `as`). */
  gpa?: AddrValue;
  as?: string;
  read: boolean;
  write: boolean;
}
export interface VirtioUnmapStep extends StepBase { op: 'virtio-unmap'; vm: string; domain: number; iova: AddrValue; length: number }

const DOMAIN_MAX = 0xffff_ffff;

function endpointOp<Op extends 'virtio-attach' | 'virtio-detach'>(op: Op, summary: string, verb: string): StepDef<VirtioEndpointStep<Op>> {
  return {
    op,
    summary,
    args: { required: ['vm', 'device', 'domain'] },
    parse(a, p, head, c) {
      const vm = c.vm(a, 'vm', p, 'virtio');
      const device = c.device(a, 'device', p, vm);
      const domain = c.int(a, 'domain', p, 0, DOMAIN_MAX);
      return vm && device && domain !== undefined ? { ...head, op, vm: vm.name, device, domain } : undefined;
    },
    async run(step, env) {
      const g = env.virtio(step.vm);
      await (op === 'virtio-attach' ? g.attach(step.device, step.domain) : g.detach(step.device, step.domain));
    },
    describe: (s) => `virtio ${verb} ${s.device} ${op === 'virtio-attach' ? 'to' : 'from'} domain ${s.domain} on ${s.vm}`,
  };
}

export const virtioAttachOp = endpointOp('virtio-attach', 'virtio-iommu ATTACH of a device to a domain', 'attach');
export const virtioDetachOp = endpointOp('virtio-detach', 'virtio-iommu DETACH of a device from a domain', 'detach');

/** `length` of an IOVA range: a size, 1 .. MAX_DMA_LENGTH. */
function rangeLength(a: Obj, p: Path, c: Checker): number | undefined {
  const length = c.take(parseSize(a.length, 'length'), [...p, 'length']);
  if (length !== undefined && (length < 1 || length > MAX_DMA_LENGTH)) return c.issue([...p, 'length'], `length must be 1..${MAX_DMA_LENGTH}`);
  return length;
}

export const virtioMapOp: StepDef<VirtioMapStep> = {
  op: 'virtio-map',
  summary: 'virtio-iommu MAP of an IOVA range onto a GPA, or onto fresh zeroed guest pages',
  args: { required: ['vm', 'domain', 'iova', 'length'], optional: ['gpa', 'as', 'read', 'write'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p, 'virtio');
    const domain = c.int(a, 'domain', p, 0, DOMAIN_MAX);
    const iova = c.addr(a, 'iova', p);
    const length = rangeLength(a, p, c);
    const gpa = 'gpa' in a ? c.addr(a, 'gpa', p) : undefined;
    if ('gpa' in a && 'as' in a) c.issue([...p, 'as'], "'as' names the fresh pages a map without 'gpa' allocates");
    const as = c.defVar(a, 'as', p);
    if (!vm || domain === undefined || iova === undefined || length === undefined) return undefined;
    const step: VirtioMapStep = { ...head, op: 'virtio-map', vm: vm.name, domain, iova, length, read: c.bool(a, 'read', p, true), write: c.bool(a, 'write', p, true) };
    if (gpa !== undefined) step.gpa = gpa;
    if (as) step.as = as;
    return step;
  },
  async run(step, env) {
    const V = env.vars;
    const gpa = await env.virtio(step.vm).map(step.domain, resolveAddr(step.iova, V), step.length, { read: step.read, write: step.write, ...(step.gpa !== undefined ? { gpa: resolveAddr(step.gpa, V) } : {}) });
    if (step.as) V.set(step.as, gpa);
    return `GPA ${hex(gpa)}`;
  },
  describe: (s) => `virtio map domain ${s.domain} iova ${showAddr(s.iova)} +${s.length}${s.gpa !== undefined ? ` → ${showAddr(s.gpa)}` : ''} on ${s.vm}`,
};

export const virtioUnmapOp: StepDef<VirtioUnmapStep> = {
  op: 'virtio-unmap',
  summary: 'virtio-iommu UNMAP of an IOVA range',
  args: { required: ['vm', 'domain', 'iova', 'length'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p, 'virtio');
    const domain = c.int(a, 'domain', p, 0, DOMAIN_MAX);
    const iova = c.addr(a, 'iova', p);
    const length = c.take(parseSize(a.length, 'length'), [...p, 'length']);
    return vm && domain !== undefined && iova !== undefined && length !== undefined ? { ...head, op: 'virtio-unmap', vm: vm.name, domain, iova, length } : undefined;
  },
  async run(step, env) {
    await env.virtio(step.vm).unmap(step.domain, resolveAddr(step.iova, env.vars), step.length);
  },
  describe: (s) => `virtio unmap domain ${s.domain} iova ${showAddr(s.iova)} +${s.length} on ${s.vm}`,
};
