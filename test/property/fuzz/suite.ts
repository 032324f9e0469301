/**
 * The vitest suite of one fuzzer (bounded for CI; scripts/fuzz-long.ts runs the same commands for
 * longer): one world for the file, `numRuns` generated command lists, each run expected to break
 * no invariant.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { makeWorld, type FuzzWorld } from './world.js';
import { scaled } from '../../support/slowdown.js';

export function fuzzSuite<C>(title: string, commands: fc.Arbitrary<C>, run: (world: FuzzWorld, cmds: C) => Promise<string[]>, numRuns: number): void {
  let world: FuzzWorld;
  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world?.close();
  });
  describe(title, () => {
    it('keeps every invariant', async () => {
      await fc.assert(
        fc.asyncProperty(commands, async (cmds) => {
          expect(await run(world, cmds)).toEqual([]);
        }),
        { numRuns },
      );
    }, scaled(30_000));
  });
}
