/**
 * Where a process last ran (/proc/<pid>/stat, proc(5)) and the placement sampler the e2e-vtd
 * benchmark puts in its VCMD figures' notes (src/app/bench/cpu-pin.ts).
 */
import os from 'node:os';
import { describe, it, expect } from 'vitest';
import { PlacementSampler, lastCpu } from '../../../../../src/app/bench/cpu-pin.js';

const linux = process.platform === 'linux';

describe.runIf(linux)('lastCpu', () => {
  it('names a CPU of this machine for this process', () => {
    const cpu = lastCpu(process.pid);
    expect(cpu).not.toBeNull();
    expect(cpu!).toBeGreaterThanOrEqual(0);
    expect(cpu!).toBeLessThan(os.availableParallelism?.() ?? os.cpus().length);
  });

  it('is null for a process that does not exist', () => {
    expect(lastCpu(2 ** 31 - 1)).toBeNull();
  });
});

describe.runIf(linux)('PlacementSampler', () => {
  it('has no shares before a sample; this process counts as on its own CPU, a missing one never', () => {
    const s = new PlacementSampler([process.pid, 2 ** 31 - 1]);
    expect(s.shares()).toBeNull();
    for (let i = 0; i < 10; i++) s.sample();
    const [self, missing] = s.shares()!;
    // Two reads of this process's CPU a few µs apart: the scheduler may move it in between, rarely.
    expect(self).toBeGreaterThanOrEqual(0.7);
    expect(missing).toBe(0);
  });
});
