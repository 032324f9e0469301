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

/** A plain-text table: one row per figure. */
export function renderTable(report: BenchReport): string {
  const rows: string[][] = [['module', 'figure', 'median', 'spread', 'unit', 'baseline', 'ratio', 'target', 'met']];
  for (const m of report.modules) {
    if (m.error) rows.push([m.name, 'ERROR: ' + m.error.split('\n')[0]!, '', '', '', '', '', '', '']);
    for (const f of m.figures) {
      rows.push([
        m.name,
        f.name,
        fmt(f.value.median),
        `${fmt(f.value.min)}..${fmt(f.value.max)}`,
        f.unit,
        f.baseline ? `${f.baseline.name} ${fmt(f.baseline.value.median)}` : '-',
        f.ratio === undefined ? '-' : f.ratio.toFixed(2),
        f.target ?? '-',
        f.met === undefined ? '-' : f.met ? 'yes' : 'NO',
      ]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function writeReport(report: BenchReport, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `bench-${report.startedAt.replace(/[:.]/g, '-')}.json`);
  const json = JSON.stringify(report, null, 2);
  fs.writeFileSync(file, json);
  fs.writeFileSync(path.join(dir, 'latest.json'), json);
  return file;
}
