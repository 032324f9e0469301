/**
 * The readable report of a scenario run: one line per step (✓ passed, ✗ failed, · skipped after
 * a failure), the first failure shown as expected vs actual with its file:line, and a verdict
 * line. Pure functions of the result, so the CLI and tests render the same text.
 */
import type { AddrValue, BytesSpec, IntValue, Scenario, SourceLocation, Step } from './schema.js';

export type StepStatus = 'pass' | 'fail' | 'skip';

/** What differed: `what` names the checked thing; expected/actual are rendered values. */
export interface Mismatch {
  what: string;
  expected: string;
  actual: string;
}

export interface StepResult {
  step: Step;
  status: StepStatus;
  /** Short result, e.g. 'PASID 5' or 'faulted 0x...' (passing steps). */
  note?: string;
  /** Why a step failed. */
  mismatch?: Mismatch;
  ms: number;
}

export interface ScenarioResult {
  scenario: Pick<Scenario, 'name' | 'file'>;
  passed: boolean;
  steps: StepResult[];
  /** Setting up the host or a VM failed (before any step ran). */
  setupError?: string;
  /** Tearing down failed (everything passed but resources were not released cleanly). */
  teardownError?: string;
  ms: number;
}

const FLUSH_NAMES = { pasid: 'PASID cache', piotlb: 'PASID-based IOTLB', iotlb: 'IOTLB', devtlb: 'PASID-based device-TLB' } as const;

export function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}

export function showInt(v: IntValue | null | undefined): string {
  if (v === undefined) return '?';
  if (v === null) return 'none';
  return typeof v === 'object' ? `$${v.ref}` : String(v);
}

export function showAddr(v: AddrValue | undefined): string {
  if (v === undefined) return '?';
  return typeof v === 'object' ? `$${v.ref}` : hex(v);
}

export function showBytes(b: BytesSpec): string {
  if ('hex' in b) return b.hex.length > 32 ? `hex ${b.hex.slice(0, 32)}… (${b.hex.length / 2} bytes)` : `hex ${b.hex}`;
  if ('text' in b) return JSON.stringify(b.text);
  if ('pattern' in b) return `${b.length} × ${hex(b.pattern)}`;
  return `${b.length} random bytes (seed ${b.random})`;
}

/** A one-line description of what a step does. */
export function describeStep(s: Step): string {
  if (s.label) return s.label;
  switch (s.op) {
    case 'process':
      return `process ${s.name} on ${s.vm} (${s.levels}-level)`;
    case 'exit':
      return `exit ${s.process}`;
    case 'map':
      return `map ${s.process} ${showAddr(s.va)} ${s.pages} × ${s.size}${s.write ? '' : ' read-only'}${s.fill ? `, fill ${showBytes(s.fill)}` : ''}`;
    case 'unmap':
      return `unmap ${s.process} ${showAddr(s.va)} ${s.pages} page(s)${s.flush ? '' : ' without IOTLB flush'}`;
    case 'alloc':
      return `alloc ${s.count > 1 ? `${s.count} PASIDs` : 'PASID'} on ${s.vm}${s.as ? ` as $${s.as}` : ''}`;
    case 'free':
      return `free PASID ${showInt(s.pasid)} on ${s.vm}`;
    case 'bind':
      return `bind ${s.process} to ${s.device}${s.pasid !== undefined ? ` with PASID ${showInt(s.pasid)}` : ''}${s.as ? ` as $${s.as}` : ''}`;
    case 'unbind':
      return `unbind ${s.process} from ${s.device}`;
    case 'flush':
      return `flush ${FLUSH_NAMES[s.cache]}${s.device ? ` of ${s.device}` : ''} on ${s.vm}${s.pasid !== undefined ? ` PASID ${showInt(s.pasid)}` : ''}${s.va !== undefined ? ` at ${showAddr(s.va)}` : ''}`;
    case 'wait':
      return `wait (invalidation queue drained) on ${s.vm}`;
    case 'sleep':
      return `sleep ${s.ms} ms`;
    case 'page-requests':
      return `page requests on ${s.vm}: ${s.policy}`;
    case 'dma': {
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
    }
    case 'virtio-attach':
      return `virtio attach ${s.device} to domain ${s.domain} on ${s.vm}`;
    case 'virtio-detach':
      return `virtio detach ${s.device} from domain ${s.domain} on ${s.vm}`;
    case 'virtio-map':
      return `virtio map domain ${s.domain} iova ${showAddr(s.iova)} +${s.length}${s.gpa !== undefined ? ` → ${showAddr(s.gpa)}` : ''} on ${s.vm}`;
    case 'virtio-unmap':
      return `virtio unmap domain ${s.domain} iova ${showAddr(s.iova)} +${s.length} on ${s.vm}`;
    case 'expect': {
      const parts: string[] = [];
      if (s.capacity) parts.push('capacity');
      if (s.vms !== undefined) parts.push('VM count');
      for (const v of s.vmChecks) parts.push(`${v.vm}`);
      if (s.memory.length) parts.push(`${s.memory.length} memory check(s)`);
      return `expect ${parts.join(', ')}`;
    }
  }
}

function at(loc: SourceLocation): string {
  return `${loc.file}:${loc.line}`;
}

export interface RenderOptions {
  /** ANSI colours (default false). */
  color?: boolean;
}

/** The whole report as text (ends without a newline). */
export function renderReport(r: ScenarioResult, opts: RenderOptions = {}): string {
  const c = opts.color ? { g: '\x1b[32m', r: '\x1b[31m', d: '\x1b[2m', b: '\x1b[1m', x: '\x1b[0m' } : { g: '', r: '', d: '', b: '', x: '' };
  const lines: string[] = [`${c.b}scenario: ${r.scenario.name}${c.x} ${c.d}(${r.scenario.file})${c.x}`];
  if (r.setupError) lines.push(`  ${c.r}✗ setup failed: ${r.setupError}${c.x}`);
  const width = String(r.steps.length).length;
  for (const s of r.steps) {
    const n = String(s.step.index + 1).padStart(width);
    const desc = describeStep(s.step);
    if (s.status === 'pass') lines.push(`  ${c.g}✓${c.x} ${n} ${desc}${s.note ? ` ${c.d}— ${s.note}${c.x}` : ''}`);
    else if (s.status === 'skip') lines.push(`  ${c.d}· ${n} ${desc} (not run)${c.x}`);
    else {
      lines.push(`  ${c.r}✗ ${n} ${desc}${c.x} ${c.d}(${at(s.step.loc)})${c.x}`);
      if (s.mismatch) {
        lines.push(`      ${s.mismatch.what}`);
        lines.push(`        expected: ${s.mismatch.expected}`);
        lines.push(`        actual:   ${s.mismatch.actual}`);
      }
    }
  }
  if (r.teardownError) lines.push(`  ${c.r}✗ teardown: ${r.teardownError}${c.x}`);
  const passed = r.steps.filter((s) => s.status === 'pass').length;
  const failed = r.steps.find((s) => s.status === 'fail');
  const secs = (r.ms / 1000).toFixed(2);
  if (r.passed) lines.push(`${c.g}${c.b}PASS${c.x} ${passed}/${r.steps.length} steps in ${secs} s`);
  else {
    const where = failed ? `; first failure: step ${failed.step.index + 1} at ${at(failed.step.loc)}` : r.setupError ? '; setup failed' : r.teardownError ? '; teardown failed' : '';
    lines.push(`${c.r}${c.b}FAIL${c.x} ${passed}/${r.steps.length} steps passed in ${secs} s${where}`);
  }
  return lines.join('\n');
}
