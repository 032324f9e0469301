#!/usr/bin/env node
// Entry shim. The compiled CLI (dist/, built by `npm run build`; the only form an installed
// package has) runs when it exists; otherwise — or when VSVA_FROM_SOURCE=1, as the test suite
// sets — the TypeScript source runs through the tsx loader (a development dependency).
import { existsSync } from 'node:fs';
import { capYoungGeneration, isHostCommand } from './young-generation.js';

// `vsva host`: short young-generation collections (young-generation.js says why), set before
// anything else allocates.
if (isHostCommand(process.argv.slice(2))) capYoungGeneration();

const compiled = new URL('../dist/src/app/cli/main.js', import.meta.url);
const fromSource = process.env.VSVA_FROM_SOURCE === '1' || !existsSync(compiled);
let main;
if (fromSource) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../src/app/cli/main.ts'));
} else {
  ({ main } = await import(compiled.href));
}
await main(process.argv.slice(2));
