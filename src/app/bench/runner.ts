/**
 * Runs benchmark modules and renders their figures as a table and a JSON report
 * (`npm run bench`, `vsva bench`). Each figure is printed beside its same-run baseline.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BenchFigure, BenchModule, BenchOptions } from './types.js';

export interface BenchReport {
  startedAt: string;
  durationMs: number;
  quick: boolean;
  machine: { cpus: string; cores: number; memGiB: number; node: string; platform: string };
  modules: { name: string; figures: BenchFigure[]; error?: string }[];
}

export async function runBenches(mods: BenchModule[], opts: BenchOptions): Promise<BenchReport> {
  const t0 = Date.now();
  const report: BenchReport = {
    startedAt: new Date(t0).toISOString(),
    durationMs: 0,
    quick: opts.quick,
    machine: {
      cpus: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
    modules: [],
  };
  for (const m of mods) {
    opts.progress?.(`[bench] ${m.name} …`);
    try {
      report.modules.push({ name: m.name, figures: await m.run(opts) });
    } catch (e) {
      report.modules.push({ name: m.name, figures: [], error: (e as Error).stack ?? String(e) });
    }
  }
  report.durationMs = Date.now() - t0;
  return report;
}

function fmt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  const a = Math.abs(n);
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (a >= 100) return n.toFixed(0);
  if (a >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** Columns the rendered table fits in (a standard terminal is 100 wide or more). */
export const TABLE_WIDTH = 100;

/** `text` broken at spaces into lines of at most `width` characters, each after `indent`. */
function wrap(text: string, indent: string, width = TABLE_WIDTH): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    const next = line === '' ? word : `${line} ${word}`;
    if (indent.length + next.length > width && line !== '') {
      out.push(indent + line);
      line = word;
    } else line = next;
  }
  out.push(indent + line);
  return out.map((l) => (l.length > width ? `${l.slice(0, width - 1)}…` : l));
}

/**
 * The figures as plain text that fits TABLE_WIDTH columns: per module its name, then per
 * figure its name, a line with the value (median and spread), ratio and target verdict, and a
 * line with the same-run baseline; a closing line counts the targets met and missed.
 */
export function renderTable(report: BenchReport): string {
  const lines: string[] = [];
  for (const m of report.modules) {
    lines.push(m.name);
    if (m.error) lines.push(...wrap(`ERROR: ${m.error.split('\n')[0]!}`, '  '));
    for (const f of m.figures) {
      lines.push(...wrap(f.name, '  '));
      const verdict = f.met === undefined ? '' : f.met ? ': met' : ': MISSED';
      const parts = [
        `${fmt(f.value.median)} ${f.unit} (${fmt(f.value.min)}..${fmt(f.value.max)})`,
        ...(f.ratio === undefined ? [] : [`ratio ${f.ratio.toFixed(2)}`]),
        ...(f.target === undefined ? [] : [`target ${f.target}${verdict}`]),
      ];
      lines.push(...wrap(parts.join('   '), '      '));
      if (f.baseline) lines.push(...wrap(`baseline: ${f.baseline.name} ${fmt(f.baseline.value.median)}`, '      '));
    }
  }
  const { met, missed, errors } = verdicts(report);
  lines.push('', `targets: ${met} met, ${missed.length} missed${missed.length ? ` (${missed.join('; ')})` : ''}${errors ? `; ${errors} module(s) failed` : ''}`);
  return lines.flatMap((l) => (l.length > TABLE_WIDTH ? wrap(l, '') : [l])).join('\n');
}

/** Targets met, the names of those missed, and modules that failed. */
export function verdicts(report: BenchReport): { met: number; missed: string[]; errors: number } {
  const figs = report.modules.flatMap((m) => m.figures);
  return {
    met: figs.filter((f) => f.met === true).length,
    missed: figs.filter((f) => f.met === false).map((f) => f.name),
    errors: report.modules.filter((m) => m.error !== undefined).length,
  };
}

/** `vsva bench`'s exit status: 1 when a module failed or a target was missed, else 0. */
export function benchExitCode(report: BenchReport): number {
  const v = verdicts(report);
  return v.errors > 0 || v.missed.length > 0 ? 1 : 0;
}

export function writeReport(report: BenchReport, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `bench-${report.startedAt.replace(/[:.]/g, '-')}.json`);
  const json = JSON.stringify(report, null, 2);
  fs.writeFileSync(file, json);
  fs.writeFileSync(path.join(dir, 'latest.json'), json);
  return file;
}
