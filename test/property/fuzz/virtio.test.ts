/**
 * Virtqueue contents, requests and register writes into the virtio-iommu (bounded for CI;
 * scripts/fuzz-long.ts runs it for longer).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { makeWorld, type FuzzWorld } from './world.js';
import { runVirtio, virtioCommands } from './virtio.js';

let world: FuzzWorld;
beforeAll(async () => {
  world = await makeWorld();
});
afterAll(async () => {
  await world?.close();
});

describe('fuzz: the virtio-iommu model', () => {
  it('keeps every invariant', async () => {
    await fc.assert(
      fc.asyncProperty(virtioCommands, async (cmds) => {
        expect(await runVirtio(world, cmds)).toEqual([]);
      }),
      { numRuns: 30 },
    );
  }, 30_000);
});
