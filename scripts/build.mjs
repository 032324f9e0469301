#!/usr/bin/env node
/**
 * `npm run build` (and the `prepare` script): compiles src/, vhost/, guest/ and host/ with tsc
 * (tsconfig.build.json) to ESM JavaScript and .d.ts files under dist/, then copies the files the
 * compiled code reads at run time that are not TypeScript (the dashboard page,
 * host/monitor/public/). dist/ is removed first so no stale module survives a rename.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist');
/** Non-TypeScript run-time assets, relative to the repository root (copied to the same place under dist/). */
const ASSET_DIRS = ['host/monitor/public'];

fs.rmSync(DIST, { recursive: true, force: true });
const tsPackage = createRequire(path.join(ROOT, 'package.json')).resolve('typescript/package.json');
const tsc = path.join(path.dirname(tsPackage), 'bin', 'tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit', cwd: ROOT });
if (r.error) throw r.error;
for (const dir of ASSET_DIRS) fs.cpSync(path.join(ROOT, dir), path.join(DIST, dir), { recursive: true });
// Type errors still fail the build (tsc emits anyway; the exit status says it).
if (r.status !== 0) process.exit(r.status ?? 1);
