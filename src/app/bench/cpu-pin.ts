/**
 * CPU placement for two-process A/B figures. On a small machine the wake-up latency between two
 * processes depends on whether they run on the same CPU or on two, and the scheduler changes its
 * mind from one second to the next: an A/B pair measured under different placements compares
 * the placements, not A with B. Pinning both sides of A and of B the same way (this process on
 * one CPU, every peer process on another) removes that variable; the unpinned figures stay
 * beside the pinned ones. sched_setaffinity(2) through taskset(1) (util-linux), on every thread
 * of a process (`-a`); when taskset or a second CPU is missing nothing is pinned.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';

/** CPUs this machine offers (the pinning needs two). */
function cpuCount(): number {
  return os.availableParallelism?.() ?? os.cpus().length;
}

function taskset(pid: number, cpus: string): boolean {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Pin this process to CPU 0 and each of `peers` to CPU 1. Returns an undo (every process back
 * on every CPU), or null when nothing could be pinned.
 */
export function pinApart(peers: readonly number[]): (() => void) | null {
  const n = cpuCount();
  if (n < 2) return null;
  const all = `0-${n - 1}`;
  if (!taskset(process.pid, '0')) return null;
  const pinned = [process.pid];
  for (const pid of peers) {
    if (!taskset(pid, '1')) {
      for (const p of pinned) taskset(p, all);
      return null;
    }
    pinned.push(pid);
  }
  return () => {
    for (const p of pinned) taskset(p, all);
  };
}
