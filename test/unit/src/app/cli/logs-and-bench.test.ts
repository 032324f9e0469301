/**
 * CLI output conventions: logs are JSON lines off a terminal (one `name` key per line) and
 * readable lines on one; progress redraws (`\r`) go only to a terminal; the bench table fits
 * 100 columns and `vsva bench` exits 1 when a target is missed; `vsva --help` loads no
 * subcommand module.
 */
import { describe, it, expect } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { prettyLine } from '../../../../../src/log-format.js';
import { ProgressBar } from '../../../../../src/app/experiment/progress.js';
import { benchExitCode, renderTable, TABLE_WIDTH, type BenchReport } from '../../../../../src/app/bench/runner.js';
import { commands, selectedCommand } from '../../../../../src/app/cli/commands/index.js';
import { scaled } from '../../../../support/wait.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../..');
const LOG_SNIPPET = "import { childLogger } from './src/log.ts'; childLogger('ioasid', { vm: 'vm0' }).warn({ set: 3, name: 'bench' }, 'set allocated');";

function runLogSnippet(env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', LOG_SNIPPET], { cwd: ROOT, env, timeout: scaled(30_000) }, (err, _out, stderr) =>
      err ? reject(err) : resolve(stderr),
    );
  });
}

describe('logs', () => {
  it('are JSON lines with a single name key when stderr is not a terminal', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, VSVA_LOG: 'warn' };
    delete env.VSVA_LOG_FORMAT;
    const stderr = await runLogSnippet(env);
    const line = stderr.trim();
    expect(line.match(/"name":/g)).toHaveLength(1);
    expect(JSON.parse(line)).toMatchObject({ name: 'vsva', component: 'ioasid', vm: 'vm0', set: 3, objectName: 'bench', msg: 'set allocated' });
  }, scaled(40_000));

  const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!hasScript)('are readable lines on a terminal (under script(1), a pty)', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, VSVA_LOG: 'warn' };
    delete env.VSVA_LOG_FORMAT;
    const cmd = `${process.execPath} --import tsx --input-type=module -e "${LOG_SNIPPET}"`;
    const out = await new Promise<string>((resolve, reject) =>
      execFile('script', ['-qec', cmd, '/dev/null'], { cwd: ROOT, env, timeout: scaled(30_000) }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
    expect(plain).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN {2}ioasid \[vm0\] set allocated set=3 objectName=bench\r?\n$/);
  }, scaled(40_000));

  it('prettyLine formats fields, errors and non-JSON input', () => {
    const t = new Date(2026, 0, 1, 12, 34, 56, 7).getTime();
    expect(prettyLine(JSON.stringify({ level: 50, time: t, pid: 1, name: 'vsva', component: 'host', msg: 'failed', err: { message: 'boom' }, path: 'a b' }), false)).toBe(
      '12:34:56.007 ERROR host failed boom path="a b"\n',
    );
    expect(prettyLine('not json', false)).toBe('not json\n');
  });
});

describe('progress', () => {
  it('redraws with \\r only on a terminal', () => {
    const written: string[] = [];
    const pipe = { write: (s: string) => written.push(s), isTTY: false };
    const bar = new ProgressBar(3, pipe, 10, 0);
    bar.tick('a');
    bar.tick('b');
    bar.finish();
    expect(written.join('')).not.toContain('\r');
    const tty: string[] = [];
    const term = new ProgressBar(3, { write: (s: string) => tty.push(s), isTTY: true }, 10, 0);
    term.tick('a');
    expect(tty.join('')).toContain('\r');
  });
});

function report(met: boolean | undefined, error?: string): BenchReport {
  const long = 'x'.repeat(60);
  return {
    startedAt: '2026-01-01T00:00:00.000Z',
    durationMs: 1,
    quick: true,
    machine: { cpus: 'cpu', cores: 2, memGiB: 4, node: 'v20', platform: 'linux' },
    modules: [
      {
        name: 'e2e-vtd',
        figures: [
          {
            name: 'VCMD PASID alloc round trip p50 (guest VCMD write → VCRSP ready, 2 processes)',
            unit: 'us',
            value: { median: 71.7, min: 28.6, max: 79.3, reps: 9 },
            baseline: { name: `raw Node pipelined ping-pong (128 in flight) messages/s ${long}`, value: { median: 61.7, min: 50, max: 70, reps: 9 } },
            ratio: 1.16,
            target: 'ratio <= 1.25',
            ...(met === undefined ? {} : { met }),
          },
        ],
        ...(error ? { error } : {}),
      },
    ],
  };
}

describe('vsva bench output', () => {
  it(`fits ${TABLE_WIDTH} columns and names every figure`, () => {
    const table = renderTable(report(false, `Error: ${'y'.repeat(150)}\n    at somewhere`));
    for (const l of table.split('\n')) expect(l.length, l).toBeLessThanOrEqual(TABLE_WIDTH);
    expect(table).toContain('VCMD PASID alloc round trip p50 (guest VCMD write → VCRSP ready, 2 processes)');
    expect(table).toContain('target ratio <= 1.25: MISSED');
    expect(table).toMatch(/targets: 0 met, 1 missed/);
  });

  it('exits 1 when a target is missed or a module failed, else 0', () => {
    expect(benchExitCode(report(true))).toBe(0);
    expect(benchExitCode(report(undefined))).toBe(0);
    expect(benchExitCode(report(false))).toBe(1);
    expect(benchExitCode(report(true, 'Error: boom'))).toBe(1);
  });
});

describe('vsva --help', () => {
  it('selects the command word to load, and nothing for --help alone', () => {
    expect(selectedCommand(['--help'])).toBeUndefined();
    expect(selectedCommand(['--log-level', 'debug', 'demo', '--duration', '1'])?.name).toBe('demo');
    expect(selectedCommand(['run', 'demo.yaml'])?.name).toBe('run');
    expect(selectedCommand(['--', 'host'])).toBeUndefined();
    expect(commands.map((c) => c.name)).toEqual(['demo', 'host', 'guest', 'run', 'bench', 'experiment', 'trace']);
  });

  it('lists every command without loading any command module', async () => {
    // NODE_DEBUG=esm makes node log every module it loads to stderr.
    const r = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(process.execPath, ['bin/vsva.js', '--help'], { cwd: ROOT, timeout: scaled(30_000), maxBuffer: 64 << 20, env: { ...process.env, NODE_DEBUG: 'esm' } }, (err, stdout, stderr) =>
        err ? reject(err) : resolve({ stdout, stderr }),
      ),
    );
    for (const c of commands) expect(r.stdout).toContain(`vsva ${c.command}`);
    expect(r.stderr).toContain('src/app/cli/main.ts'); // the log does list the modules loaded
    const heavy = r.stderr.match(/file:\/\/\S*?\/(src\/app\/cli\/commands\/(?!index\.ts)\w+\.ts|host\/\S+\.ts|guest\/\S+\.ts)/g) ?? [];
    expect([...new Set(heavy)]).toEqual([]);
  }, scaled(40_000));
});
