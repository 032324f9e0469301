/**
 * The step registry: every action a scenario step can take, one record each (step-def.ts), in
 * the order docs/scenarios.md lists them. The parser, the runner, the report and `vsva run --help`
 * look actions up here; the `Step` union is derived from the records.
 */
import type { StepDef } from './step-def.js';
import { dmaOp } from './ops-dma.js';
import { expectOp } from './ops-expect.js';
import { allocOp, bindOp, freeOp, pageRequestsOp, unbindOp } from './ops-pasid.js';
import { exitOp, mapOp, processOp, unmapOp } from './ops-process.js';
import { sleepOp } from './ops-sleep.js';
import { virtioAttachOp, virtioDetachOp, virtioMapOp, virtioUnmapOp } from './ops-virtio.js';
import { flushOp, waitOp } from './ops-vtd.js';

const DEFS = [
  processOp,
  exitOp,
  mapOp,
  unmapOp,
  allocOp,
  freeOp,
  bindOp,
  unbindOp,
  flushOp,
  waitOp,
  sleepOp,
  pageRequestsOp,
  dmaOp,
  virtioAttachOp,
  virtioDetachOp,
  virtioMapOp,
  virtioUnmapOp,
  expectOp,
] as const;

type StepOf<D> = D extends StepDef<infer S> ? S : never;

/** A validated step: one of the records' step types. */
export type Step = StepOf<(typeof DEFS)[number]>;
export type StepOp = Step['op'];

export const STEP_DEFS: readonly StepDef<Step>[] = DEFS;
export const STEP_OPS: readonly StepOp[] = STEP_DEFS.map((d) => d.op);

const BY_OP = new Map<string, StepDef<Step>>(STEP_DEFS.map((d) => [d.op, d]));

/** The record of action `op`, or undefined when there is no such action. */
export function stepDef(op: string): StepDef<Step> | undefined {
  return BY_OP.get(op);
}

/** The record of a validated step. */
export function defOf(step: Step): StepDef<Step> {
  return BY_OP.get(step.op)!;
}
