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
import fs from 'node:fs';
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

/**
 * The CPU a process last ran on: field 39 (`processor`) of /proc/<pid>/stat (proc(5)); null
 * when it cannot be read (not Linux, the process is gone). The fields are counted after the
 * last ')', since the command name in field 2 may hold spaces and parentheses.
 */
export function lastCpu(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const cpu = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[36]);
    return Number.isInteger(cpu) ? cpu : null;
  } catch {
    return null;
  }
}

/**
 * How often each of two peer processes was last seen on this process's CPU, sampled between
 * timed operations (untimed). On a small machine a request/reply between two processes on one
 * CPU is a direct hand-over, between two CPUs a cross-CPU wake-up: a ratio of two round trips
 * whose peers sat differently compares placements (see the header). The shares go into a
 * figure's notes so that a reader can tell.
 */
export class PlacementSampler {
  private samples = 0;
  private readonly withSelf: [number, number] = [0, 0];

  constructor(private readonly peers: readonly [number, number]) {}

  sample(): void {
    const self = lastCpu(process.pid);
    if (self === null) return;
    this.samples++;
    for (let i = 0; i < 2; i++) if (lastCpu(this.peers[i]!) === self) this.withSelf[i]!++;
  }

  /** Share of samples in which each peer was last on this process's CPU (null: no samples). */
  shares(): [number, number] | null {
    return this.samples === 0 ? null : [this.withSelf[0] / this.samples, this.withSelf[1] / this.samples];
  }
}
