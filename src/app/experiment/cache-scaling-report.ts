/**
 * Renders the cache scaling curves (src/app/bench/cache-scaling.ts) for docs/performance.md: a Markdown table
 * (new figures beside the earlier ones from issue 17) and two SVG charts with log axes —
 * invalidation costs vs size, and IOTLB random-hit rate vs cached entries beside a Map lookup.
 *
 *   npx tsx src/app/experiment/cache-scaling-report.ts [--quick] [--charts docs/charts]
 *
 * prints the table on stdout and writes cache-invalidation-scaling.svg and
 * iotlb-hit-scaling.svg into the charts directory.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { lineChart, type Series } from './svg-chart.js';
import { measureCacheScaling, sizeLabel, type ScalingCurve } from '../bench/cache-scaling.js';

function fmt(v: number, unit: string): string {
  if (unit === 'M/s') return v.toFixed(2);
  return v >= 1000 ? `${(v / 1000).toFixed(1)} ms` : v >= 10 ? `${v.toFixed(0)} µs` : v >= 1 ? `${v.toFixed(2)} µs` : `${v.toPrecision(2)} µs`;
}

/** The Markdown table: one row per curve and size, the earlier figure beside the new one. */
export function scalingTable(curves: readonly ScalingCurve[]): string {
  const rows = ['| operation | size | now (median) | spread | earlier (issue 17) | same-run baseline |', '|---|---|---|---|---|---|'];
  for (const c of curves) {
    const sizes = new Set<number>([...c.points.map((p) => p.n), ...c.earlier.map(([n]) => n)]);
    for (const n of [...sizes].sort((a, b) => a - b)) {
      const p = c.points.find((q) => q.n === n);
      const e = c.earlier.find(([m]) => m === n);
      const unit = c.unit === 'M/s' ? ' M/s' : '';
      rows.push(
        `| ${c.name} | ${sizeLabel(n)} ${c.sizeOf} | ${p ? fmt(p.value.median, c.unit) + unit : '—'} | ${p ? `${fmt(p.value.min, c.unit)} – ${fmt(p.value.max, c.unit)}` : '—'} | ${e ? fmt(e[1], c.unit) + unit : '—'} | ${p?.baseline ? `${c.baselineName} ${fmt(p.baseline.median, c.unit)}${unit}` : '—'} |`,
      );
    }
  }
  return rows.join('\n');
}

/** Cost curves (µs, log–log): every invalidation curve now, and the earlier ones dashed by name. */
export function costChart(curves: readonly ScalingCurve[]): string {
  const series: Series[] = [];
  for (const c of curves) {
    if (c.unit !== 'us') continue;
    series.push({ name: `${c.name} (now)`, points: c.points.map((p) => [p.n, p.value.median] as const) });
    if (c.earlier.length) series.push({ name: `${c.name} (before indexing)`, points: c.earlier });
  }
  return lineChart({ title: 'Cache invalidation cost vs cache size', xLabel: 'cached entries / contexts (log)', yLabel: 'cost per operation (µs, log)', series, xLog: true, yLog: true, width: 760, height: 460 });
}

/** IOTLB random-hit rate (M/s, log–log) beside a Map lookup of the same keys, and the earlier figures. */
export function hitChart(curves: readonly ScalingCurve[]): string {
  const c = curves.find((x) => x.unit === 'M/s')!;
  const series: Series[] = [
    { name: 'IOTLB hit, 64 PASIDs, random (now)', points: c.points.map((p) => [p.n, p.value.median] as const) },
    { name: 'Map.get, same keys (same run)', points: c.points.map((p) => [p.n, p.baseline!.median] as const) },
    { name: 'IOTLB hit (issue 17, before)', points: c.earlier },
  ];
  return lineChart({ title: 'IOTLB random-hit rate vs cached entries', xLabel: 'cached IOTLB entries (log)', yLabel: 'translations per second (M/s, log)', series, xLog: true, yLog: true, width: 760, height: 460 });
}

async function main(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const i = argv.indexOf('--charts');
  const dir = i >= 0 ? argv[i + 1]! : path.join('docs', 'charts');
  const curves = measureCacheScaling({ quick, progress: (m) => process.stderr.write(`${m}\n`) });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'cache-invalidation-scaling.svg'), costChart(curves));
  fs.writeFileSync(path.join(dir, 'iotlb-hit-scaling.svg'), hitChart(curves));
  process.stdout.write(`${scalingTable(curves)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  });
}
