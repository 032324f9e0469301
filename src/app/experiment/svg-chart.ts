/**
 * Small, dependency-free SVG charts for the experiment reports: line charts (numeric x, one
 * polyline with markers per series) and grouped bar charts (categorical x). Every chart has a
 * title, both axes with their label (units in the label, e.g. "latency (µs)"), tick marks with
 * values, horizontal grid lines and a legend — readable on its own in a browser or a Markdown
 * viewer. Linear axes get "nice" ticks (1, 2, 5 × 10^k); log axes get one tick per decade.
 *
 * Output is standalone SVG 1.1 (xmlns set, text XML-escaped), fixed size, no scripts.
 */
import { fail } from '../../errors.js';

export interface Series {
  name: string;
  /** [x, y] pairs; non-finite values are skipped (a gap in the line). */
  points: readonly (readonly [number, number])[];
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  xLog?: boolean;
  yLog?: boolean;
  /** The x values are counts: only whole-number ticks (linear axes only). */
  xInteger?: boolean;
  /** Force the y axis to start at 0 (linear axes only; default true). */
  yFromZero?: boolean;
  width?: number;
  height?: number;
}

export interface BarChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  categories: readonly string[];
  /** One value per category per series; non-finite values draw no bar. */
  series: readonly { name: string; values: readonly number[] }[];
  yLog?: boolean;
  width?: number;
  height?: number;
}

/** Colour-blind-safe palette (Okabe–Ito). */
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#F0E442', '#000000'] as const;

const MARGIN = { left: 78, right: 24, top: 44, bottom: 58 };
const LEGEND_ROW = 18;
const FONT = 'font-family="sans-serif"';

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Tick values for a linear axis covering [lo, hi]: about `count` steps of 1, 2 or 5 × 10^k. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) fail('EINVAL', `axis range is not finite: [${lo}, ${hi}]`);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi - lo <= 1e-9 * Math.max(1, Math.abs(lo), Math.abs(hi))) {
    const pad = Math.max(Math.abs(lo) * 0.1, 1e-12);
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  // The epsilon keeps 0.3 / 0.1 = 2.9999… from starting the axis a whole step early.
  const first = Math.floor(lo / step + 1e-9) * step;
  const last = Math.ceil(hi / step - 1e-9) * step;
  const out: number[] = [];
  for (let i = 0, v = first; v <= last + step / 2 && i < 100; i++, v = first + i * step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Decade ticks for a log axis covering [lo, hi] (both > 0). */
export function logTicks(lo: number, hi: number): number[] {
  if (!(lo > 0) || !(hi > 0)) fail('EINVAL', `log axis needs positive values, got [${lo}, ${hi}]`);
  const a = Math.floor(Math.log10(Math.min(lo, hi)));
  let b = Math.ceil(Math.log10(Math.max(lo, hi)));
  if (b === a) b = a + 1;
  const out: number[] = [];
  for (let e = a; e <= b; e++) out.push(10 ** e);
  return out;
}

/** A compact tick label: 1.5k, 2M, 0.25, 1e-3. */
export function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e9) return `${trim(v / 1e9)}G`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  if (a >= 0.01) return trim(v);
  return v.toExponential(0);
}

function trim(v: number): string {
  return String(Number(v.toPrecision(3)));
}

interface Axis {
  ticks: number[];
  map(v: number): number;
}

function linearAxis(values: number[], from: number, to: number, fromZero: boolean, integer = false): Axis {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (fromZero) {
    lo = Math.min(0, lo);
    hi = Math.max(0, hi);
  }
  let ticks = niceTicks(lo, hi);
  if (integer) {
    const whole = ticks.filter(Number.isInteger);
    ticks = whole.length >= 2 ? whole : [Math.floor(lo), Math.max(Math.ceil(hi), Math.floor(lo) + 1)];
  }
  const t0 = ticks[0]!;
  const t1 = ticks[ticks.length - 1]!;
  return { ticks, map: (v) => from + ((v - t0) / (t1 - t0)) * (to - from) };
}

function logAxis(values: number[], from: number, to: number): Axis {
  const pos = values.filter((v) => v > 0);
  if (pos.length === 0) fail('EINVAL', 'log axis has no positive value');
  const ticks = logTicks(Math.min(...pos), Math.max(...pos));
  const l0 = Math.log10(ticks[0]!);
  const l1 = Math.log10(ticks[ticks.length - 1]!);
  return { ticks, map: (v) => from + ((Math.log10(v) - l0) / (l1 - l0)) * (to - from) };
}

function num(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function frame(width: number, height: number, title: string, xLabel: string, yLabel: string, plotBottom: number, plotRightX: number): string[] {
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img">`);
  out.push(`<title>${escapeXml(title)}</title>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text class="title" x="${width / 2}" y="24" text-anchor="middle" ${FONT} font-size="16" font-weight="bold">${escapeXml(title)}</text>`);
  const px0 = MARGIN.left;
  const px1 = plotRightX;
  out.push(`<text class="x-label" x="${num((px0 + px1) / 2)}" y="${num(plotBottom + 44)}" text-anchor="middle" ${FONT} font-size="13">${escapeXml(xLabel)}</text>`);
  const cy = (MARGIN.top + plotBottom) / 2;
  out.push(`<text class="y-label" x="18" y="${num(cy)}" text-anchor="middle" transform="rotate(-90 18 ${num(cy)})" ${FONT} font-size="13">${escapeXml(yLabel)}</text>`);
  return out;
}

function yAxisMarks(out: string[], y: Axis, x0: number, x1: number, top: number, bottom: number): void {
  out.push(`<g class="y-axis">`);
  for (const t of y.ticks) {
    const py = num(y.map(t));
    out.push(`<line x1="${x0}" y1="${py}" x2="${x1}" y2="${py}" stroke="#e3e3e3" stroke-width="1"/>`);
    out.push(`<line x1="${x0 - 5}" y1="${py}" x2="${x0}" y2="${py}" stroke="#333" stroke-width="1"/>`);
    out.push(`<text x="${x0 - 8}" y="${py}" dy="0.32em" text-anchor="end" ${FONT} font-size="11">${escapeXml(formatTick(t))}</text>`);
  }
  out.push(`<line x1="${x0}" y1="${top}" x2="${x0}" y2="${bottom}" stroke="#333" stroke-width="1"/>`);
  out.push(`</g>`);
}

function legendWidth(names: readonly string[]): number {
  return Math.max(...names.map((n) => n.length)) * 6.6 + 34;
}

/** Right edge of the plot area: the legend sits to its right, outside the data. */
function plotRight(width: number, names: readonly string[]): number {
  return width - MARGIN.right - legendWidth(names) - 16;
}

/** The legend, right-aligned at `right` (outside the plot area). */
function legend(out: string[], names: readonly string[], right: number, top: number, marker: 'line' | 'box'): void {
  const w = legendWidth(names);
  const x = right - w;
  out.push(`<g class="legend">`);
  out.push(`<rect x="${num(x)}" y="${top + 4}" width="${num(w)}" height="${names.length * LEGEND_ROW + 8}" fill="#ffffff" fill-opacity="0.85" stroke="#bbb"/>`);
  names.forEach((n, i) => {
    const cy = top + 12 + i * LEGEND_ROW + LEGEND_ROW / 2 - 4;
    const c = PALETTE[i % PALETTE.length];
    if (marker === 'line') out.push(`<line x1="${num(x + 6)}" y1="${num(cy)}" x2="${num(x + 24)}" y2="${num(cy)}" stroke="${c}" stroke-width="2.5"/>`);
    else out.push(`<rect x="${num(x + 8)}" y="${num(cy - 5)}" width="12" height="10" fill="${c}"/>`);
    out.push(`<text x="${num(x + 30)}" y="${num(cy)}" dy="0.32em" ${FONT} font-size="11">${escapeXml(n)}</text>`);
  });
  out.push(`</g>`);
}

/** A line chart with one polyline (and point markers) per series. */
export function lineChart(spec: LineChartSpec): string {
  const width = spec.width ?? 900;
  const height = spec.height ?? 420;
  if (spec.series.length === 0) fail('EINVAL', `chart '${spec.title}' has no series`);
  const ok = (p: readonly [number, number]): boolean =>
    Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!spec.xLog || p[0] > 0) && (!spec.yLog || p[1] > 0);
  const pts = spec.series.flatMap((s) => s.points.filter(ok));
  if (pts.length === 0) fail('EINVAL', `chart '${spec.title}' has no finite point`);
  const x0 = MARGIN.left;
  const x1 = plotRight(width, spec.series.map((s) => s.name));
  const top = MARGIN.top;
  const bottom = height - MARGIN.bottom;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const x = spec.xLog ? logAxis(xs, x0, x1) : linearAxis(xs, x0, x1, false, spec.xInteger === true);
  const y = spec.yLog ? logAxis(ys, bottom, top) : linearAxis(ys, bottom, top, spec.yFromZero ?? true);
  const out = frame(width, height, spec.title, spec.xLabel, spec.yLabel, bottom, x1);
  yAxisMarks(out, y, x0, x1, top, bottom);
  out.push(`<g class="x-axis">`);
  for (const t of x.ticks) {
    const px = num(x.map(t));
    out.push(`<line x1="${px}" y1="${bottom}" x2="${px}" y2="${bottom + 5}" stroke="#333" stroke-width="1"/>`);
    out.push(`<text x="${px}" y="${bottom + 18}" text-anchor="middle" ${FONT} font-size="11">${escapeXml(formatTick(t))}</text>`);
  }
  out.push(`<line x1="${x0}" y1="${bottom}" x2="${x1}" y2="${bottom}" stroke="#333" stroke-width="1"/>`);
  out.push(`</g>`);
  spec.series.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
    // Split the polyline at non-finite points so that a missing value shows as a gap.
    let run: string[] = [];
    const flush = (): void => {
      if (run.length > 1) out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${run.join(' ')}"/>`);
      run = [];
    };
    for (const p of s.points) {
      if (!ok(p)) {
        flush();
        continue;
      }
      const px = num(x.map(p[0]));
      const py = num(y.map(p[1]));
      run.push(`${px},${py}`);
      if (s.points.length <= 60) out.push(`<circle cx="${px}" cy="${py}" r="3" fill="${c}"/>`);
    }
    flush();
    out.push(`</g>`);
  });
  legend(out, spec.series.map((s) => s.name), width - MARGIN.right, top, 'line');
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}

/** A grouped bar chart: one group per category, one bar per series inside it. */
export function barChart(spec: BarChartSpec): string {
  const width = spec.width ?? 900;
  const height = spec.height ?? 420;
  if (spec.categories.length === 0) fail('EINVAL', `chart '${spec.title}' has no categories`);
  if (spec.series.length === 0) fail('EINVAL', `chart '${spec.title}' has no series`);
  for (const s of spec.series) {
    if (s.values.length !== spec.categories.length)
      fail('EINVAL', `series '${s.name}' has ${s.values.length} values for ${spec.categories.length} categories`);
  }
  const vals = spec.series.flatMap((s) => s.values.filter((v) => Number.isFinite(v) && (!spec.yLog || v > 0)));
  if (vals.length === 0) fail('EINVAL', `chart '${spec.title}' has no finite value`);
  const x0 = MARGIN.left;
  const x1 = plotRight(width, spec.series.map((s) => s.name));
  const top = MARGIN.top;
  const bottom = height - MARGIN.bottom;
  const y = spec.yLog ? logAxis(vals, bottom, top) : linearAxis(vals, bottom, top, true);
  const base = spec.yLog ? bottom : y.map(0);
  const out = frame(width, height, spec.title, spec.xLabel, spec.yLabel, bottom, x1);
  yAxisMarks(out, y, x0, x1, top, bottom);
  const groupW = (x1 - x0) / spec.categories.length;
  const barW = (groupW * 0.8) / spec.series.length;
  out.push(`<g class="x-axis">`);
  spec.categories.forEach((c, i) => {
    const cx = num(x0 + groupW * (i + 0.5));
    out.push(`<line x1="${cx}" y1="${bottom}" x2="${cx}" y2="${bottom + 5}" stroke="#333" stroke-width="1"/>`);
    out.push(`<text x="${cx}" y="${bottom + 18}" text-anchor="middle" ${FONT} font-size="11">${escapeXml(c)}</text>`);
  });
  out.push(`<line x1="${x0}" y1="${bottom}" x2="${x1}" y2="${bottom}" stroke="#333" stroke-width="1"/>`);
  out.push(`</g>`);
  spec.series.forEach((s, si) => {
    const c = PALETTE[si % PALETTE.length];
    out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
    s.values.forEach((v, ci) => {
      if (!Number.isFinite(v) || (spec.yLog && !(v > 0))) return;
      const bx = x0 + groupW * ci + groupW * 0.1 + barW * si;
      const py = y.map(v);
      const yTop = Math.min(py, base);
      const h = Math.abs(base - py);
      out.push(`<rect x="${num(bx)}" y="${num(yTop)}" width="${num(Math.max(1, barW - 2))}" height="${num(Math.max(0.5, h))}" fill="${c}"><title>${escapeXml(`${s.name} / ${spec.categories[ci]}: ${formatTick(v)}`)}</title></rect>`);
    });
    out.push(`</g>`);
  });
  legend(out, spec.series.map((s) => s.name), width - MARGIN.right, top, 'box');
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}
