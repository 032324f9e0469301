/**
 * Ending a bench helper process that exits when its stdin ends (scripts/fairness-vm.ts, the CPU
 * spinner): end stdin, wait for the exit, and kill it if it has not exited after a grace period.
 */
import type { ChildProcess } from 'node:child_process';

/** How long stopChild waits for the child to exit after stdin's end before killing it. */
export const STOP_GRACE_MS = 5000;

/** End `child`'s stdin and resolve once it has exited (`exited`); SIGKILL after STOP_GRACE_MS. */
export async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.stdin!.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}
