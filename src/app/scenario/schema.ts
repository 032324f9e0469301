/**
 * The validated form of a scenario file (docs/scenarios.md is the user-facing description; this
 * file is its contract). A scenario names a host, the VMs on it and a list of steps; each step
 * is one action with its arguments, optionally expected to fail. The shared vocabulary is in
 * types.ts, each step type with its action's record (ops-*.ts), gathered here.
 *
 * Values that refer to earlier results use variables: a step with `as: NAME` stores what it
 * produced (a PASID, a buffer's GPA), and later steps write `$NAME`. The parser resolves no
 * variable (values arrive at run time) but checks that every `$NAME` is defined by an earlier
 * step, so a typo is a malformed scenario, not a run-time failure.
 *
 * Every step keeps the location of its source (file, line, column) for the report.
 */
import type { Step } from './steps.js';
import type { VmSpec } from './types.js';

export * from './types.js';
export type { PasidRowExpectation, VmExpectation } from './expect.js';
export type { DmaOp, DmaStep } from './ops-dma.js';
export type { ExpectStep } from './ops-expect.js';
export type { AllocStep, BindStep, FreeStep, PageRequestsStep, UnbindStep } from './ops-pasid.js';
export type { ExitStep, MapStep, ProcessStep, UnmapStep } from './ops-process.js';
export type { SleepStep } from './ops-sleep.js';
export type { VirtioAttachStep, VirtioDetachStep, VirtioMapStep, VirtioUnmapStep } from './ops-virtio.js';
export type { FlushStep, WaitStep } from './ops-vtd.js';
export { STEP_OPS, type Step, type StepOp } from './steps.js';

export interface Scenario {
  name: string;
  description?: string;
  file: string;
  host: { pasidBits: number; spawn: boolean };
  /** Per-step time limit, ms. */
  stepTimeoutMs: number;
  vms: VmSpec[];
  steps: Step[];
}
