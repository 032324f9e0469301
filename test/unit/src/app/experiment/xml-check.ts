/**
 * A strict XML well-formedness check for the SVG the experiments write (no XML parser is a
 * dependency): one root element, balanced and properly nested tags, quoted unique attributes,
 * only the five predefined entities or character references, no stray '<' or '&'.
 * Returns the element names in document order and the text nodes, for content assertions.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { parseCsv } from '../../../../../src/app/experiment/csv.js';

export interface XmlInfo {
  elements: { name: string; attrs: Record<string, string> }[];
  texts: string[];
}

const NAME = /^[A-Za-z_][\w.:-]*$/;

function checkText(t: string): string {
  const bad = t.match(/&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/);
  if (bad) throw new Error(`bare '&' in text near '${t.slice(0, 40)}'`);
  if (t.includes('<')) throw new Error(`'<' in text near '${t.slice(0, 40)}'`);
  return t.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
}

export function parseXml(doc: string): XmlInfo {
  let s = doc.replace(/^\uFEFF/, '');
  s = s.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const info: XmlInfo = { elements: [], texts: [] };
  let i = 0;
  let roots = 0;
  while (i < s.length) {
    const lt = s.indexOf('<', i);
    const text = lt < 0 ? s.slice(i) : s.slice(i, lt);
    if (text.trim()) {
      if (stack.length === 0) throw new Error(`text outside the root element: '${text.trim().slice(0, 40)}'`);
      info.texts.push(checkText(text));
    }
    if (lt < 0) break;
    if (s.startsWith('<!--', lt)) {
      const end = s.indexOf('-->', lt);
      if (end < 0) throw new Error('unterminated comment');
      i = end + 3;
      continue;
    }
    const gt = s.indexOf('>', lt);
    if (gt < 0) throw new Error('unterminated tag');
    const tag = s.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      const open = stack.pop();
      if (open !== name) throw new Error(`closing </${name}> does not match <${open ?? 'nothing'}>`);
      continue;
    }
    const selfClose = tag.endsWith('/');
    const body = selfClose ? tag.slice(0, -1) : tag;
    const m = body.match(/^([^\s]+)([\s\S]*)$/);
    if (!m || !NAME.test(m[1]!)) throw new Error(`bad tag name in <${tag.slice(0, 30)}>`);
    if (stack.length === 0) {
      roots++;
      if (roots > 1) throw new Error('more than one root element');
    }
    const attrs: Record<string, string> = {};
    let rest = m[2]!.trim();
    while (rest) {
      const a = rest.match(/^([A-Za-z_:][\w.:-]*)\s*=\s*"([^"]*)"\s*/) ?? rest.match(/^([A-Za-z_:][\w.:-]*)\s*=\s*'([^']*)'\s*/);
      if (!a) throw new Error(`bad attribute syntax in <${m[1]} ${rest.slice(0, 30)}>`);
      if (a[1]! in attrs) throw new Error(`duplicate attribute ${a[1]} on <${m[1]}>`);
      attrs[a[1]!] = checkText(a[2]!);
      rest = rest.slice(a[0].length);
    }
    info.elements.push({ name: m[1]!, attrs });
    if (!selfClose) stack.push(m[1]!);
  }
  if (stack.length) throw new Error(`unclosed <${stack[stack.length - 1]}>`);
  if (roots !== 1) throw new Error('no root element');
  return info;
}

/** Checks that each CSV file in `dir` has exactly the given columns and row count. */
export function expectCsvTables(dir: string, tables: readonly (readonly [file: string, columns: readonly string[], rows: number])[]): void {
  for (const [name, cols, n] of tables) {
    const t = parseCsv(fs.readFileSync(path.join(dir, name), 'utf8'));
    expect(t.columns, name).toEqual([...cols]);
    expect(t.rows, name).toHaveLength(n);
  }
}
