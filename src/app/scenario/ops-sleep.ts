/** `sleep` (docs/scenarios.md, "Other"): wait some milliseconds, e.g. for a device timeout to pass. */
import type { StepDef } from './step-def.js';
import type { StepBase } from './types.js';

export interface SleepStep extends StepBase { op: 'sleep'; ms: number }

export const sleepOp: StepDef<SleepStep> = {
  op: 'sleep',
  summary: 'wait some milliseconds',
  args: { required: ['ms'] },
  shorthand: (v) => (typeof v === 'bigint' || typeof v === 'number' ? { ms: v } : undefined),
  parse(a, p, head, c) {
    const ms = c.int(a, 'ms', p, 0, 60_000);
    return ms === undefined ? undefined : { ...head, op: 'sleep', ms };
  },
  async run(step) {
    await new Promise((r) => setTimeout(r, step.ms));
  },
  describe: (s) => `sleep ${s.ms} ms`,
};
