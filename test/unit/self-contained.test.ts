/**
 * The repository is self-contained: its code, tests, scripts and documents cite only what is in
 * the repository (docs/*.md, its own files) or public sources (the VT-d and virtio
 * specifications, Linux files and functions, mailing-list threads) — never documents that lived
 * beside it during development (a DESIGN file, numbered seeds, reference notes, style anchors,
 * a ../shared directory).
 */
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SELF = 'test/unit/self-contained.test.ts';
const TEXT_FILE = /\.(ts|js|mjs|cjs|md|json|ya?ml|html|css|c|h|sh)$|^\.ci\/|(^|\/)[^./]+$/;
const SKIP = /^(node_modules|dist|artifacts|coverage)\/|(^|\/)package-lock\.json$/;

/** Each pattern and what it stands for. */
const OUTSIDE: readonly [RegExp, string][] = [
  [/\.\.\/shared\b|\/work\/shared\b/, 'a path outside the repository (../shared)'],
  [/\bDESIGN(\.md| §)/, 'the outside DESIGN document (cite docs/design.md §n)'],
  [/\bseeds? \d{3}\b/i, 'a numbered seed (cite the public source)'],
  [/\breference\/[\w.-]+\.md\b|\breference [A-C](\.\d+)?\b|\breference [\w-]+\.md\b/, 'an outside reference note (cite the spec section)'],
  [/\bstyle[- ]anchors?\b/i, 'the outside style anchors'],
];

/** Tracked and new (not ignored) files; a directory walk when git is unavailable. */
function repositoryFiles(): string[] {
  try {
    return execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 })
      .split('\n')
      .filter((f) => f !== '');
  } catch {
    const out: string[] = [];
    const walk = (rel: string): void => {
      for (const e of fs.readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
        const f = rel === '' ? e.name : `${rel}/${e.name}`;
        if (e.name === '.git' || SKIP.test(`${f}/`)) continue;
        if (e.isDirectory()) walk(f);
        else if (e.isFile()) out.push(f);
      }
    };
    walk('');
    return out;
  }
}

export function outsideReferences(file: string, text: string): string[] {
  const hits: string[] = [];
  text.split('\n').forEach((line, i) => {
    for (const [re, what] of OUTSIDE) if (re.test(line)) hits.push(`${file}:${i + 1}: ${what}: ${line.trim().slice(0, 120)}`);
  });
  return hits;
}

describe('self-contained repository', () => {
  it('cites no document outside the repository in source, test, script or doc files', () => {
    const files = repositoryFiles().filter((f) => f !== SELF && TEXT_FILE.test(f) && !SKIP.test(f) && fs.existsSync(path.join(ROOT, f)));
    expect(files.length).toBeGreaterThan(100);
    const hits = files.flatMap((f) => outsideReferences(f, fs.readFileSync(path.join(ROOT, f), 'utf8')));
    expect(hits).toEqual([]);
  });

  it('recognises each kind of outside reference (and leaves in-repository ones alone)', () => {
    const bad = ['see ../shared/notes.md', 'as DESIGN §7 says', 'seed 003 counts', 'reference A.3', 'reference/vtd-scalable-mode.md', 'style anchors L8'];
    for (const line of bad) expect(outsideReferences('x.ts', line), line).toHaveLength(1);
    const good = ['docs/design.md §7', 'VT-d spec §9.6', "holds a 'kvm' reference", 'the reference walker', '--seed 1'];
    for (const line of good) expect(outsideReferences('x.ts', line), line).toEqual([]);
  });
});
