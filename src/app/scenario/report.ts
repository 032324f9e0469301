/**
 * The readable report of a scenario run: one line per step (✓ passed, ✗ failed, · skipped after
 * a failure), the first failure shown as expected vs actual with its file:line, and a verdict
 * line. Pure functions of the result, so the CLI and tests render the same text.
 */
import type { Scenario, SourceLocation } from './schema.js';
import type { Mismatch } from './show.js';
import { defOf, type Step } from './steps.js';

export type StepStatus = 'pass' | 'fail' | 'skip';

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

/** A one-line description of what a step does: its label, else its action's description. */
export function describeStep(s: Step): string {
  return s.label ?? defOf(s).describe(s);
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
