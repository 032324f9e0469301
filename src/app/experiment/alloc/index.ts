/**
 * `vsva experiment alloc` as a library call: build the grid, run it against an environment
 * (the real one by default: a spawned host and in-process guests), write the report.
 */
import { buildGrid, FULL_AXES, QUICK_AXES, type GridAxes } from '../grid.js';
import { ProgressBar, type ProgressStream } from '../progress.js';
import { gridSteps, runAllocGrid } from './runner.js';
import { writeAllocReport } from './report.js';
import type { ExperimentEnv } from './types.js';
import type { AllocResults } from './results.js';

export interface AllocExperimentOptions {
  quick?: boolean;
  /** Output directory. */
  out: string;
  /** Override grid axes (defaults: QUICK_AXES with quick, FULL_AXES otherwise). */
  axes?: Partial<GridAxes>;
  /** Environment; default: the real system (schemes.ts). */
  env?: ExperimentEnv;
  /** Where the progress bar goes (default stderr); null for none. */
  progressStream?: ProgressStream | null;
}

export async function runAllocExperiment(opts: AllocExperimentOptions): Promise<{ results: AllocResults; files: string[] }> {
  const quick = opts.quick ?? false;
  const grid = buildGrid({ ...(quick ? QUICK_AXES : FULL_AXES), ...opts.axes });
  const env = opts.env ?? (await import('./schemes.js')).realEnv({ quick });
  const bar = opts.progressStream === null ? undefined : new ProgressBar(gridSteps(grid), opts.progressStream ?? process.stderr);
  const results = await runAllocGrid(env, grid, { quick, ...(bar ? { progress: bar } : {}) });
  bar?.finish(`written to ${opts.out}`);
  const files = writeAllocReport(results, opts.out);
  return { results, files };
}

export * from './types.js';
export * from './results.js';
export { ALLOC_COLUMNS, SAMPLE_COLUMNS, FAIRNESS_COLUMNS, FAIRNESS_VM_COLUMNS, DMA_COLUMNS, SUMMARY_SECTIONS } from './report.js';
