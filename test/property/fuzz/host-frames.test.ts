/**
 * Protocol frames into a host (bounded for CI; scripts/fuzz-long.ts runs it for longer):
 * no host bug errno, no malformed reply, the steady VM unaffected, the host consistent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { makeWorld, type FuzzWorld } from './world.js';
import { hostFrameCommands, runHostFrames } from './host-frames.js';

let world: FuzzWorld;
beforeAll(async () => {
  world = await makeWorld();
});
afterAll(async () => {
  await world?.close();
});

describe('fuzz: protocol frames into the host', () => {
  it('keeps every invariant', async () => {
    await fc.assert(
      fc.asyncProperty(hostFrameCommands, async (cmds) => {
        expect(await runHostFrames(world, cmds)).toEqual([]);
      }),
      { numRuns: 60 },
    );
  }, 30_000);
});
