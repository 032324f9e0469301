/**
 * docs/conformance.md names, for every rule, the tests that show it: each test cell holds
 * `file` › test name entries separated by <br>. This test fails when a row names a test file
 * that does not exist or a test name that file does not define (an it/test/describe title, or
 * the `name` of a table-driven case), and when a row has too few columns or no test.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const DOC = path.join(ROOT, 'docs/conformance.md');

interface Row {
  line: number;
  rule: string;
  refs: { file: string; name: string }[];
}

/** Split a markdown table row into its cells (no pipes inside cells in this document). */
function cells(line: string): string[] {
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
}

function parseRows(text: string): Row[] {
  const rows: Row[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (!l.startsWith('|') || l.startsWith('|---') || l.startsWith('| Rule |')) continue;
    const c = cells(l);
    if (c.length !== 4) throw new Error(`docs/conformance.md:${i + 1}: ${c.length} columns, expected 4 (rule, spec, what vsva does, test)`);
    const refs = c[3]!.split('<br>').map((r) => {
      const m = /^`([^`]+)` › (.+)$/.exec(r.trim());
      if (m === null) throw new Error(`docs/conformance.md:${i + 1}: test reference "${r}" is not \`file\` › name`);
      return { file: m[1]!, name: m[2]! };
    });
    rows.push({ line: i + 1, rule: c[0]!, refs });
  }
  return rows;
}

/** Whether `source` defines a test (or group, or table case) titled exactly `name`. */
function definesTest(source: string, name: string): boolean {
  for (const q of ["'", '"', '`']) {
    const lit = q + (q === "'" ? name.replace(/'/g, "\\'") : name) + q;
    let at = source.indexOf(lit);
    while (at >= 0) {
      const before = source.slice(Math.max(0, at - 40), at);
      if (/\b(it|test|describe)(\.each\([^)]*\))?\(\s*$/.test(before) || /\bname:\s*$/.test(before)) return true;
      at = source.indexOf(lit, at + 1);
    }
  }
  return false;
}

describe('docs/conformance.md', () => {
  const rows = parseRows(fs.readFileSync(DOC, 'utf8'));

  it('has rows for both models, each naming at least one test', () => {
    expect(rows.length).toBeGreaterThan(80);
    for (const r of rows) expect(r.refs.length, `line ${r.line}`).toBeGreaterThan(0);
  });

  it('names only test files that exist and tests they define', () => {
    const missing: string[] = [];
    const sources = new Map<string, string | null>();
    for (const r of rows) {
      for (const ref of r.refs) {
        if (!sources.has(ref.file)) {
          const p = path.join(ROOT, ref.file);
          sources.set(ref.file, ref.file.startsWith('test/') && ref.file.endsWith('.test.ts') && fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : null);
        }
        const src = sources.get(ref.file);
        if (src === null || src === undefined) missing.push(`line ${r.line}: no test file ${ref.file}`);
        else if (!definesTest(src, ref.name)) missing.push(`line ${r.line}: ${ref.file} has no test "${ref.name}"`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('the checker itself rejects a file or name that does not exist', () => {
    expect(definesTest("it('a real test', () => {})", 'a real test')).toBe(true);
    expect(definesTest("it('a real test', () => {})", 'a real')).toBe(false);
    expect(definesTest("const x = 'a real test';", 'a real test')).toBe(false);
    expect(definesTest("{ name: 'case one', maps: [] }", 'case one')).toBe(true);
    expect(() => parseRows('| a | b | c |\n')).toThrow(/3 columns/);
    expect(() => parseRows('| a | b | c | no backticks › x |\n')).toThrow(/not `file` › name/);
  });
});
