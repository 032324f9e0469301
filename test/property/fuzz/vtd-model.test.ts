/**
 * Invalidation-queue contents, PASID / context entries and register writes into the virtual
 * VT-d (bounded for CI; scripts/fuzz-long.ts runs it for longer).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { makeWorld, type FuzzWorld } from './world.js';
import { runVtd, vtdCommands } from './vtd-model.js';

let world: FuzzWorld;
beforeAll(async () => {
  world = await makeWorld();
});
afterAll(async () => {
  await world?.close();
});

describe('fuzz: the VT-d model', () => {
  it('keeps every invariant', async () => {
    await fc.assert(
      fc.asyncProperty(vtdCommands, async (cmds) => {
        expect(await runVtd(world, cmds)).toEqual([]);
      }),
      { numRuns: 40 },
    );
  }, 30_000);
});
