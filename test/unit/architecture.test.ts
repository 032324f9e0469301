/**
 * The layering of docs/architecture.md, enforced. Every import (value or type-only, static or
 * dynamic) of every source file is read and checked:
 *
 *   application  src/app/**                      may import anything below
 *   halves       guest/**  |  host/**            may import protocol and base; never each other
 *   protocol     vhost/**                        may import base
 *   base         src/** (the rest)               imports only base
 *
 * and neither files nor folders may import each other in a loop. Source files stay under
 * MAX_LINES, except the hand-inlined walk named in ALLOWED_LONG.
 */
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SOURCE_DIRS = ['src', 'vhost', 'guest', 'host'];
const MAX_LINES = 600;
/** host/iommu/engine.ts: the page walk is hand-inlined for speed (its header says why). */
const ALLOWED_LONG = new Set(['host/iommu/engine.ts']);

type Layer = 'base' | 'protocol' | 'guest' | 'host' | 'application';
const RANK: Record<Layer, number> = { base: 0, protocol: 1, guest: 2, host: 2, application: 3 };

export function layerOf(file: string): Layer {
  if (file.startsWith('src/app/')) return 'application';
  if (file.startsWith('src/')) return 'base';
  if (file.startsWith('vhost/')) return 'protocol';
  if (file.startsWith('guest/')) return 'guest';
  if (file.startsWith('host/')) return 'host';
  throw new Error(`${file} is in no layer`);
}

function listSources(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts')) out.push(rel);
    }
  };
  for (const d of SOURCE_DIRS) walk(d);
  return out.sort();
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** Relative imports of one file, resolved to repository paths (.js specifiers name .ts files). */
export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2]!;
    let target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec));
    if (target.endsWith('.js')) target = target.slice(0, -3) + '.ts';
    out.push(target);
  }
  return out;
}

/** Strongly connected components with more than one member (Tarjan). */
function cycles(nodes: Iterable<string>, edges: Map<string, Set<string>>): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>(), on = new Set<string>();
  const stack: string[] = [], found: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index); low.set(v, index); index++; stack.push(v); on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do { w = stack.pop()!; on.delete(w); scc.push(w); } while (w !== v);
      if (scc.length > 1) found.push(scc.sort());
    }
  };
  for (const v of nodes) if (!idx.has(v)) visit(v);
  return found;
}

const files = listSources();
const texts = new Map(files.map(f => [f, fs.readFileSync(path.join(ROOT, f), 'utf8')]));
const graph = new Map(files.map(f => [f, new Set(importsOf(f, texts.get(f)!))]));

describe('architecture', () => {
  it('reads the imports it checks (the parser sees value, type-only and dynamic imports)', () => {
    const probe = `import { a } from './a.js';\nimport type { B } from "../b.js";\nexport * from './c.js';\nconst d = await import('./d.js');\n`;
    expect(importsOf('x/y/z.ts', probe)).toEqual(['x/y/a.ts', 'x/b.ts', 'x/y/c.ts', 'x/y/d.ts']);
    expect([...graph.values()].reduce((n, s) => n + s.size, 0)).toBeGreaterThan(500);
  });

  it('every import resolves to a source file', () => {
    const missing = [...graph].flatMap(([f, ts]) => [...ts].filter(t => !texts.has(t) && !t.endsWith('.json')).map(t => `${f} -> ${t}`));
    expect(missing).toEqual([]);
  });

  it('imports point down the layers, and the two halves never import each other', () => {
    const bad: string[] = [];
    for (const [f, ts] of graph) {
      const lf = layerOf(f);
      for (const t of ts) {
        if (!texts.has(t)) continue;
        const lt = layerOf(t);
        if (RANK[lt] > RANK[lf] || (RANK[lt] === RANK[lf] && lt !== lf)) bad.push(`${f} (${lf}) -> ${t} (${lt})`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('no two files import each other, directly or round a loop', () => {
    expect(cycles(files, graph)).toEqual([]);
  });

  it('no two folders import each other, directly or round a loop', () => {
    const folders = new Map<string, Set<string>>();
    for (const [f, ts] of graph) {
      const from = path.posix.dirname(f);
      const set = folders.get(from) ?? new Set<string>();
      folders.set(from, set);
      for (const t of ts) if (texts.has(t) && path.posix.dirname(t) !== from) set.add(path.posix.dirname(t));
    }
    expect(cycles(folders.keys(), folders)).toEqual([]);
  });

  it(`source files stay under ${MAX_LINES} lines`, () => {
    const long = files.filter(f => !ALLOWED_LONG.has(f)).map(f => [f, texts.get(f)!.split('\n').length] as const)
      .filter(([, n]) => n > MAX_LINES).map(([f, n]) => `${f}: ${n}`);
    expect(long).toEqual([]);
  });
});
