#!/usr/bin/env node
// Entry shim: registers the TypeScript loader (tsx) and runs the CLI from source.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/app/cli/main.ts');
await main(process.argv.slice(2));
