#!/usr/bin/env node
/**
 * Builds native/build/vsva_native.node (memfd, mmap, SCM_RIGHTS; see native/vsva_native.c) with
 * the system C compiler against the headers of the Node that runs this script. No node-gyp, no
 * network: headers come from Node's own include directory, a node-gyp cache already on disk, or
 * the `node-api-headers` package when it is installed (plus a system uv.h).
 *
 * Runs as the package's `install` script. When the compiler or the headers are missing it prints
 * ONE warning line and exits 0, so `npm install` still succeeds; vsva then falls back to
 * positioned I/O. VSVA_NATIVE_STRICT=1 makes any failure exit 1 (for CI, where the addon must
 * exist). CC overrides the compiler.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = path.join(ROOT, 'native', 'vsva_native.c');
const OUT_DIR = path.join(ROOT, 'native', 'build');
const OUT = path.join(OUT_DIR, 'vsva_native.node');
const STRICT = process.env.VSVA_NATIVE_STRICT === '1';

function giveUp(reason) {
  console.warn(`vsva: native addon not built (${reason}); guest RAM will use positioned I/O instead of shared mappings`);
  process.exit(STRICT ? 1 : 0);
}

/** Directories that hold node_api.h and uv.h for this Node, most specific first. */
function includeDirs() {
  const dirs = [];
  const add = (...d) => { for (const x of d) if (x && !dirs.includes(x)) dirs.push(x); };
  add(process.env.VSVA_NODE_INCLUDE);
  add(path.join(path.dirname(process.execPath), '..', 'include', 'node'));
  const prefix = process.config?.variables?.node_prefix;
  if (typeof prefix === 'string' && prefix !== '') add(path.join(prefix, 'include', 'node'));
  add(path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node'));
  return dirs.map(d => path.resolve(d));
}

function findHeaders() {
  const has = (dir, file) => fs.existsSync(path.join(dir, file));
  for (const dir of includeDirs()) if (has(dir, 'node_api.h') && has(dir, 'uv.h')) return [dir];
  // node-api-headers carries only the Node-API headers; uv.h must then come from the system.
  try {
    const req = createRequire(path.join(ROOT, 'package.json'));
    const napi = path.join(path.dirname(req.resolve('node-api-headers/package.json')), 'include');
    const uv = ['/usr/include', '/usr/local/include'].find(d => has(d, 'uv.h'));
    if (has(napi, 'node_api.h') && uv) return [napi, uv];
  } catch { /* not installed */ }
  return undefined;
}

if (process.platform !== 'linux') giveUp(`memfd and SCM_RIGHTS handling are Linux-only, this is ${process.platform}`);
const cc = process.env.CC || 'cc';
const probe = spawnSync(cc, ['--version'], { stdio: 'ignore' });
if (probe.error || probe.status !== 0) giveUp(`no C compiler '${cc}'; install one, e.g. apt-get install build-essential`);
const headers = findHeaders();
if (!headers) giveUp(`node_api.h and uv.h not found (looked in ${includeDirs().join(', ')})`);

fs.mkdirSync(OUT_DIR, { recursive: true });
const tmp = `${OUT}.${process.pid}.tmp`;
const args = ['-O2', '-shared', '-fPIC', '-std=c11', '-Wall', '-Wextra', '-Werror=implicit-function-declaration',
  ...headers.map(d => `-I${d}`), SOURCE, '-o', tmp];
const run = spawnSync(cc, args, { encoding: 'utf8' });
if (run.status !== 0) {
  fs.rmSync(tmp, { force: true });
  if (run.stderr) process.stderr.write(run.stderr);
  giveUp(`${cc} failed (exit ${run.status ?? run.signal}) compiling native/vsva_native.c`);
}
if (run.stderr) process.stderr.write(run.stderr); // warnings
fs.renameSync(tmp, OUT); // atomic: a running process never sees a half-written file
console.log(`vsva: built ${path.relative(ROOT, OUT)} (${cc} ${args.slice(0, -3).join(' ')} ${path.relative(ROOT, SOURCE)})`);
