/**
 * CSV output of the experiments (RFC 4180): a header row, then one row per record, fields
 * separated by commas, CRLF-free (LF line ends), and a field quoted with double quotes when it
 * holds a comma, a quote, CR or LF (quotes inside doubled). Numbers are written with enough
 * digits to round-trip; booleans as true/false; null/undefined as an empty field.
 */
import { fail } from '../../errors.js';

export type CsvValue = string | number | boolean | bigint | null | undefined;
export type CsvRow = Record<string, CsvValue>;

/** One field, quoted when RFC 4180 requires it. */
export function csvField(v: CsvValue): string {
  if (v === null || v === undefined) return '';
  let s: string;
  if (typeof v === 'number') s = Number.isFinite(v) ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)))) : '';
  else s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * A whole CSV document. `columns` fixes the header and the order of the fields; a row key that
 * is not a column is an error (EINVAL) so that a misspelt field never disappears silently.
 */
export function toCsv(columns: readonly string[], rows: readonly CsvRow[]): string {
  if (columns.length === 0) fail('EINVAL', 'CSV needs at least one column');
  if (new Set(columns).size !== columns.length) fail('EINVAL', `CSV columns are not unique: ${columns.join(',')}`);
  const known = new Set(columns);
  rows.forEach((r, i) => {
    for (const k of Object.keys(r)) if (!known.has(k)) fail('EINVAL', `CSV row ${i} has field '${k}' that is not a column`);
  });
  const lines = [columns.map(csvField).join(',')];
  for (const r of rows) lines.push(columns.map((c) => csvField(r[c])).join(','));
  return lines.join('\n') + '\n';
}

/** Parse a CSV document written by toCsv (or any RFC 4180 text) into header + string rows. */
export function parseCsv(text: string): { columns: string[]; rows: string[][] } {
  const records: string[][] = [];
  let field = '';
  let rec: string[] = [];
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else field += ch;
      i++;
      continue;
    }
    if (ch === '"' && field === '') quoted = true;
    else if (ch === ',') {
      rec.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      rec.push(field);
      records.push(rec);
      rec = [];
      field = '';
    } else field += ch;
    i++;
  }
  if (quoted) fail('EINVAL', 'CSV ends inside a quoted field');
  if (field !== '' || rec.length) {
    rec.push(field);
    records.push(rec);
  }
  const [columns, ...rows] = records;
  if (!columns) fail('EINVAL', 'CSV has no header row');
  rows.forEach((r, n) => {
    if (r.length !== columns.length) fail('EINVAL', `CSV row ${n + 1} has ${r.length} fields, header has ${columns.length}`);
  });
  return { columns, rows };
}
