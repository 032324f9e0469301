/**
 * The fairness benchmark's machine-floor process (src/app/bench/cpu-spinner.ts): a real child
 * that keeps a CPU busy on request. Checks what the benchmark relies on — a spin lasts at least
 * the time asked, the child really computes meanwhile (its CPU time, from /proc, grows), bad
 * times are refused, and stop() ends the child. Nothing here looks at speed.
 */
import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs';
import { CpuSpinner } from '../../../src/app/bench/cpu-spinner.js';
import { withDeadline } from '../../support/wait.js';

/** utime + stime of a process, in clock ticks (proc(5), /proc/<pid>/stat fields 14 and 15). */
function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

describe('CPU spinner (fairness machine floor)', () => {
  const spinners: CpuSpinner[] = [];
  afterEach(async () => {
    await Promise.all(spinners.splice(0).map((s) => s.stop()));
  });

  function start(): CpuSpinner {
    const s = CpuSpinner.start();
    spinners.push(s);
    return s;
  }

  it('spins for at least the time asked, computing meanwhile', async () => {
    const s = start();
    await withDeadline(s.spin(1), { what: 'spinner up', timeoutMs: 20_000 });
    const before = cpuTicks(s.pid);
    const t0 = performance.now();
    await withDeadline(s.spin(200), { what: '200 ms spin', timeoutMs: 20_000 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(199);
    // 200 ms of wall-clock spinning: on an idle machine ~20 ticks of CPU; even with every core
    // busy the child gets some of it.
    expect(cpuTicks(s.pid) - before).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it('answers spins in order, one after the other', async () => {
    const s = start();
    const order: number[] = [];
    await withDeadline(Promise.all([s.spin(20).then(() => order.push(1)), s.spin(0).then(() => order.push(2)), s.spin(5).then(() => order.push(3))]), { what: 'three spins', timeoutMs: 20_000 });
    expect(order).toEqual([1, 2, 3]);
  }, 30_000);

  it('refuses a negative, infinite or NaN time without writing to the child', async () => {
    const s = start();
    for (const bad of [-1, Infinity, NaN]) await expect(s.spin(bad)).rejects.toThrow(/spin time/);
    await withDeadline(s.spin(1), { what: 'spin after refusals', timeoutMs: 20_000 });
  }, 30_000);

  it('stop() ends the child; a spin after that fails', async () => {
    const s = start();
    await withDeadline(s.spin(1), { what: 'spinner up', timeoutMs: 20_000 });
    await s.stop();
    await s.exited;
    await expect(s.spin(1)).rejects.toThrow(/exited/);
  }, 30_000);
});
