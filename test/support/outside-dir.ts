/**
 * A fresh directory that is certainly outside a given set of directories — for tests that need
 * "a file the host must refuse" and cannot assume where the checkout lives (a clone under the
 * temp directory is inside the host's memory directories, so the checkout's own files are not
 * "outside" there).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

function real(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

function within(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Creates and returns a new directory (mkdtemp) under the first writable candidate — the home
 * directory, /var/tmp, the working directory — whose real path is inside none of `excluded`
 * (compared by real path, so a home directory that is a link into /tmp does not count). The
 * caller removes it. Throws, naming the candidates, when none qualifies.
 */
export function makeDirOutside(excluded: readonly string[], prefix = 'vsva-outside-'): string {
  const bad = excluded.map(real);
  const candidates = [os.homedir(), '/var/tmp', process.cwd()];
  for (const c of candidates) {
    const r = real(c);
    if (bad.some((d) => within(d, r))) continue;
    try {
      const dir = fs.mkdtempSync(path.join(r, prefix));
      if (!bad.some((d) => within(d, real(dir)))) return dir;
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // not writable here: try the next candidate
    }
  }
  throw new Error(`no writable directory outside ${excluded.join(', ')} among ${candidates.join(', ')}`);
}
