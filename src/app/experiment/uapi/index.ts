/**
 * `vsva experiment uapi` as a library call: run the workload on both host uAPIs against an
 * environment (the real one by default: env.ts) and write the report (report.ts).
 */
import { ProgressBar, type ProgressStream } from '../progress.js';
import { runUapiExperimentOn } from './runner.js';
import { writeUapiReport } from './report.js';
import type { Uapi, UapiEnv, UapiViommu } from './types.js';
import type { UapiResults } from './results.js';

export interface UapiExperimentOptions {
  quick?: boolean;
  /** Output directory. */
  out: string;
  /** Iterations per uAPI (default 300; 40 with quick). */
  iterations?: number;
  /** Rounds the iterations are spread over, alternating the uAPIs (default min(iterations, 10)). */
  rounds?: number;
  /** Only these uAPIs (default both). */
  uapis?: readonly Uapi[];
  /** The guests' vIOMMU (default vtd); used by the default environment. */
  viommu?: UapiViommu;
  /** Environment; default: the real system (env.ts). */
  env?: UapiEnv;
  /** Where the progress bar goes (default stderr); null for none. */
  progressStream?: ProgressStream | null;
}

export const DEFAULT_ITERATIONS = 300;
export const QUICK_ITERATIONS = 40;

export async function runUapiExperiment(opts: UapiExperimentOptions): Promise<{ results: UapiResults; files: string[] }> {
  const quick = opts.quick ?? false;
  const iterations = opts.iterations ?? (quick ? QUICK_ITERATIONS : DEFAULT_ITERATIONS);
  const rounds = opts.rounds ?? Math.min(iterations, 10);
  const env = opts.env ?? (await import('./env.js')).realUapiEnv(opts.viommu ?? 'vtd');
  const bar = opts.progressStream === null ? undefined : new ProgressBar(rounds, opts.progressStream ?? process.stderr);
  const results = await runUapiExperimentOn(env, { iterations, rounds, quick, ...(opts.uapis ? { uapis: opts.uapis } : {}), ...(bar ? { progress: bar } : {}) });
  bar?.finish(`written to ${opts.out}`);
  const files = writeUapiReport(results, opts.out);
  return { results, files };
}

export * from './types.js';
export * from './results.js';
export { WireCounter, HeaderScanner, diffCounts, emptyCounts, FRAME_CLASSES, type FrameClass, type WireCounts } from './wire-tap.js';
export { COUNTING_METHOD, summarize } from './runner.js';
export { UAPI_OP_COLUMNS, UAPI_MESSAGE_COLUMNS, UAPI_SAMPLE_COLUMNS, UAPI_SUMMARY_SECTIONS, buildUapiCharts, buildUapiSummary, writeUapiReport } from './report.js';
