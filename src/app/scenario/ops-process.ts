/**
 * Guest processes and their memory (docs/scenarios.md, "Guest processes and memory"): `process`,
 * `exit`, `map`, `unmap`. A process has x86-64 first-level page tables the device can use once the
 * process is bound (ops-pasid.ts).
 */
import { toBytes } from './bytes.js';
import type { StepDef } from './step-def.js';
import { hex, showAddr, showBytes } from './show.js';
import { MAX_PAGES, type AddrValue, type BytesSpec, type PageSize, type StepBase } from './types.js';
import { parseEnum, parseName } from './values.js';
import { resolveAddr } from './vars.js';

export interface ProcessStep extends StepBase { op: 'process'; vm: string; name: string; levels: 4 | 5 }
export interface ExitStep extends StepBase { op: 'exit'; process: string }
export interface MapStep extends StepBase {
  op: 'map';
  process: string;
  va: AddrValue;
  pages: number;
  size: PageSize;
  write: boolean;
  user: boolean;
  exec: boolean;
  /** Initial contents written by the process after mapping. */
  fill?: BytesSpec;
}
export interface UnmapStep extends StepBase { op: 'unmap'; process: string; va: AddrValue; pages: number; flush: boolean }

export const processOp: StepDef<ProcessStep> = {
  op: 'process',
  summary: 'a guest process with empty x86-64 first-level page tables (4 or 5 levels)',
  args: { required: ['vm', 'name'], optional: ['levels'] },
  parse(a, p, head, c) {
    const vm = c.vm(a, 'vm', p);
    const name = c.take(parseName(a.name, 'name'), [...p, 'name']);
    const levels = c.int(a, 'levels', p, 4, 5, 4) as 4 | 5 | undefined;
    if (name === undefined) return undefined;
    if (c.isLive(name)) return c.issue([...p, 'name'], `a live process is already named '${name}'`);
    if (!head.error) c.startProcess(name, vm);
    if (!vm || !levels) return undefined;
    return { ...head, op: 'process', vm: vm.name, name, levels };
  },
  async run(step, env) {
    const p = await env.vm(step.vm).sva.createProcess(step.name, step.levels);
    return `page tables at ${hex(p.pgd)}`;
  },
  describe: (s) => `process ${s.name} on ${s.vm} (${s.levels}-level)`,
};

export const exitOp: StepDef<ExitStep> = {
  op: 'exit',
  summary: 'the process exits: unbound from every device, tables and pages freed',
  args: { required: ['process'] },
  parse(a, p, head, c) {
    const pr = c.process(a, 'process', p);
    if (!pr) return undefined;
    if (!head.error) c.endProcess(pr.name);
    return { ...head, op: 'exit', process: pr.name };
  },
  async run(step, env) {
    const { env: e, proc } = env.proc(step.process);
    await e.sva.exit(proc);
  },
  describe: (s) => `exit ${s.process}`,
};

export const mapOp: StepDef<MapStep> = {
  op: 'map',
  summary: 'fresh zeroed guest pages mapped at a VA of the process, optionally filled',
  args: { required: ['process', 'va'], optional: ['pages', 'size', 'write', 'user', 'exec', 'fill'] },
  parse(a, p, head, c) {
    const pr = c.process(a, 'process', p);
    const va = c.addr(a, 'va', p);
    const pages = c.int(a, 'pages', p, 1, MAX_PAGES, 1);
    const size = 'size' in a ? c.take(parseEnum(a.size, ['4K', '2M', '1G'] as const, 'size'), [...p, 'size']) : ('4K' as PageSize);
    const fill = 'fill' in a ? c.bytes(a.fill, [...p, 'fill'], 'fill') : undefined;
    if (!pr || va === undefined || !pages || !size) return undefined;
    const step: MapStep = { ...head, op: 'map', process: pr.name, va, pages, size, write: c.bool(a, 'write', p, true), user: c.bool(a, 'user', p, true), exec: c.bool(a, 'exec', p, false) };
    if (fill) step.fill = fill;
    return step;
  },
  async run(step, env) {
    const { env: e, proc } = env.proc(step.process);
    const va = resolveAddr(step.va, env.vars);
    const gpas = await e.sva.mapPages(proc, va, step.pages, { size: step.size, write: step.write, user: step.user, exec: step.exec });
    if (step.fill) await proc.write(va, toBytes(step.fill));
    return `GPA ${hex(gpas[0]!)}${gpas.length > 1 ? ' …' : ''}`;
  },
  describe: (s) => `map ${s.process} ${showAddr(s.va)} ${s.pages} × ${s.size}${s.write ? '' : ' read-only'}${s.fill ? `, fill ${showBytes(s.fill)}` : ''}`,
};

export const unmapOp: StepDef<UnmapStep> = {
  op: 'unmap',
  summary: "clear a VA range's leaves; flush the IOTLB and device-TLB unless flush: false",
  args: { required: ['process', 'va'], optional: ['pages', 'flush'] },
  parse(a, p, head, c) {
    const pr = c.process(a, 'process', p);
    const va = c.addr(a, 'va', p);
    const pages = c.int(a, 'pages', p, 1, MAX_PAGES, 1);
    return pr && va !== undefined && pages ? { ...head, op: 'unmap', process: pr.name, va, pages, flush: c.bool(a, 'flush', p, true) } : undefined;
  },
  async run(step, env) {
    const { env: e, proc } = env.proc(step.process);
    await e.sva.unmapPages(proc, resolveAddr(step.va, env.vars), step.pages, step.flush);
  },
  describe: (s) => `unmap ${s.process} ${showAddr(s.va)} ${s.pages} page(s)${s.flush ? '' : ' without IOTLB flush'}`,
};
