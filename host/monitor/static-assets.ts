/**
 * The page's files, read once when the monitor starts and served from memory. Only regular
 * files directly inside the asset folder with a known type are served, looked up by exact
 * name in a table: a request path never reaches the file system, so no path can escape the
 * folder (traversal, encoded dots, symlinks to elsewhere are all just unknown names → 404).
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Asset {
  body: Buffer;
  contentType: string;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** Where the page lives: host/monitor/public beside this file. */
export const DEFAULT_ASSET_DIR = fileURLToPath(new URL('./public/', import.meta.url));

export class StaticAssets {
  private constructor(private readonly files: ReadonlyMap<string, Asset>) {}

  static async load(dir: string = DEFAULT_ASSET_DIR): Promise<StaticAssets> {
    const files = new Map<string, Asset>();
    for (const ent of await readdir(dir, { withFileTypes: true })) {
      const type = CONTENT_TYPES[extname(ent.name)];
      if (!ent.isFile() || type === undefined || ent.name.startsWith('.')) continue;
      files.set('/' + ent.name, { body: await readFile(join(dir, ent.name)), contentType: type });
    }
    return new StaticAssets(files);
  }

  /** The asset for a URL path ('/' is index.html), or undefined. */
  lookup(pathname: string): Asset | undefined {
    return this.files.get(pathname === '/' ? '/index.html' : pathname);
  }

  names(): string[] {
    return [...this.files.keys()];
  }
}
