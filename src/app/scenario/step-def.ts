/**
 * One record per step action: everything about an action is in its record, and the parser, the
 * runner, the report and `vsva run --help` consult the registry (steps.ts) instead of switching
 * on the action. docs/scenarios.md ("Adding an action") says how to add one.
 */
import type { Checker, Obj, Path } from './checker.js';
import type { ScenarioEnv } from './env.js';
import type { StepBase } from './types.js';

/** Keys every action takes besides its own. */
export const COMMON_STEP_KEYS = ['label', 'error'] as const;

export interface StepDef<S extends StepBase & { op: string }> {
  /** The action key, as written in a scenario file. */
  readonly op: S['op'];
  /** One line on what the action does (`vsva run --help`). */
  readonly summary: string;
  /** The argument keys it takes besides `label` and `error`: those it requires, those it may have. */
  readonly args: { readonly required: readonly string[]; readonly optional?: readonly string[] };
  /** A scalar shorthand for the arguments (`wait: vm0`, `sleep: 100`); undefined when `v` is none. */
  shorthand?(v: unknown): Obj | undefined;
  /**
   * The typed step from arguments whose keys are already checked (`a` holds only allowed keys,
   * every required one). `head` carries index, location, label and expected error. Issues go to
   * `c`; names the step defines (processes, variables) are defined in `c` even when the step has
   * other problems, so later steps do not fail because of it.
   */
  parse(a: Obj, p: Path, head: StepBase, c: Checker): S | undefined;
  /** Perform the step; returns a short note for the report, if any. Throws on failure (StepMismatch for a wrong outcome). */
  run(step: S, env: ScenarioEnv): Promise<string | void>;
  /** One line saying what the step does, from its arguments (the report's text when there is no label). */
  describe(step: S): string;
}

/** Every argument key of an action, required ones first, then `label` and `error`. */
export function argKeys(def: StepDef<StepBase & { op: string }>): string[] {
  return [...def.args.required, ...(def.args.optional ?? []), ...COMMON_STEP_KEYS];
}
