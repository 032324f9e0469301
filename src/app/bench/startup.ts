/**
 * Start-up benchmark: wall time of `vsva --help` (a new node process loading the CLI, which
 * loads only the selected subcommand's modules; src/app/cli/commands/index.ts), beside an empty
 * `node -e 0` measured in the same run. Target: ≤ 300 ms on an idle machine. It times the
 * compiled CLI (dist/) when it is built, the source through tsx otherwise, and says which.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stat, type BenchFigure, type BenchModule } from './types.js';

const TARGET_MS = 300;

function timeRuns(args: string[], runs: number, env: NodeJS.ProcessEnv): number[] {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { stdio: 'ignore', env });
    if (r.status !== 0) throw new Error(`startup bench: node ${args.join(' ')} exited ${String(r.status)}`);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

export const bench: BenchModule = {
  name: 'startup',
  async run(opts) {
    // The package root: three levels up from src/app/bench/*.ts, four from dist/src/app/bench/*.js.
    const root = new URL(import.meta.url.endsWith('.ts') ? '../../../' : '../../../../', import.meta.url);
    const bin = fileURLToPath(new URL('bin/vsva.js', root));
    const compiled = fs.existsSync(new URL('dist/src/app/cli/main.js', root));
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.VSVA_FROM_SOURCE;
    const runs = opts.quick ? 5 : 20;
    const help: number[] = [];
    const empty: number[] = [];
    // Interleaved, so that load changes hit both series alike.
    for (let i = 0; i < runs; i++) {
      empty.push(...timeRuns(['-e', '0'], 1, env));
      help.push(...timeRuns([bin, '--help'], 1, env));
    }
    const value = stat(help);
    const base = stat(empty);
    const figure: BenchFigure = {
      name: `vsva --help start-up (${compiled ? 'compiled dist/' : 'source through tsx: run npm run build'})`,
      unit: 'ms',
      value,
      baseline: { name: 'node -e 0', value: base },
      ratio: value.median / base.median,
      target: `<= ${TARGET_MS} ms`,
      met: value.median <= TARGET_MS,
      notes: 'wall time of a new process, including node itself (the baseline)',
    };
    return [figure];
  },
};
