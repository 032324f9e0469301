import { readFileSync } from 'node:fs';

/**
 * The package version, read once from package.json: one directory up from src/version.ts, two
 * from the compiled dist/src/version.js.
 */
function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'vsva' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      /* not here */
    }
  }
  return '0.0.0';
}

export const VERSION: string = readVersion();
