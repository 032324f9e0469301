/** Markdown helpers for the experiment summaries: tables with aligned numeric columns. */
import { fail } from '../../errors.js';

export type Cell = string | number | boolean | null | undefined;

/** Format a number for a table: integers as-is, others with 3 significant digits. */
export function mdNumber(v: number): string {
  if (!Number.isFinite(v)) return '–';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
}

function cell(v: Cell): string {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'number') return mdNumber(v);
  return String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** A GitHub-flavoured Markdown table; numeric columns are right-aligned. */
export function mdTable(headers: readonly string[], rows: readonly (readonly Cell[])[]): string {
  if (headers.length === 0) fail('EINVAL', 'table needs at least one column');
  rows.forEach((r, i) => {
    if (r.length !== headers.length) fail('EINVAL', `table row ${i} has ${r.length} cells, header has ${headers.length}`);
  });
  const numeric = headers.map((_, c) => rows.length > 0 && rows.every((r) => typeof r[c] === 'number' || r[c] == null));
  const lines = [`| ${headers.map(cell).join(' | ')} |`, `|${numeric.map((n) => (n ? ' ---: ' : ' --- ')).join('|')}|`];
  for (const r of rows) lines.push(`| ${r.map(cell).join(' | ')} |`);
  return lines.join('\n') + '\n';
}
