/**
 * Deadline-based waiting for tests. Every wait here
 * - yields to the event loop between checks with a timer (never a microtask or setImmediate
 *   loop), so timers — including vitest's own test timeout — keep firing under load;
 * - has a deadline, given as the time the wait needs on an idle machine and scaled by the run's
 *   slowdown factor (test/support/slowdown.ts, docs/testing.md);
 * - bounds the check itself: a condition whose promise never settles still ends at the deadline.
 */
import { SLOWDOWN, scaled } from './slowdown.js';

export { SLOWDOWN, scaled };

export interface WaitOptions {
  /** What is awaited, for the error message ("VM released"). */
  what: string;
  /** Deadline on an idle machine (ms); the wait allows scaled(timeoutMs). Default 5000. */
  timeoutMs?: number;
  /** Pause between checks (ms, default 20; not scaled). */
  intervalMs?: number;
}

/** A timer-based pause (unscaled: use scaled(ms) for a window that must fit some work). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves once `cond()` returns (or resolves to) true; rejects with
 * "<what> not reached within <ms> ms" at the scaled deadline, or with the condition's own error.
 */
export async function waitFor(cond: () => boolean | Promise<boolean>, opts: WaitOptions): Promise<void> {
  const limit = scaled(opts.timeoutMs ?? 5000);
  const end = Date.now() + limit;
  const interval = opts.intervalMs ?? 20;
  for (;;) {
    const left = end - Date.now();
    if (await withinMs(Promise.resolve().then(cond), Math.max(left, 0), opts.what, limit)) return;
    if (Date.now() >= end) throw new Error(`${opts.what} not reached within ${limit} ms (slowdown ×${SLOWDOWN})`);
    await sleep(Math.min(interval, Math.max(1, end - Date.now())));
  }
}

/** `p`, or a rejection "<what> not reached within <ms> ms" after scaled(timeoutMs). */
export function withDeadline<T>(p: Promise<T>, opts: { what: string; timeoutMs: number }): Promise<T> {
  const limit = scaled(opts.timeoutMs);
  return withinMs(p, limit, opts.what, limit);
}

function withinMs<T>(p: Promise<T>, ms: number, what: string, limit: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not reached within ${limit} ms (slowdown ×${SLOWDOWN})`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
