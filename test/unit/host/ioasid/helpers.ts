/** Test helpers for the IOASID core: exact-errno assertions with an unchanged-state check. */
import { expect } from 'vitest';
import { isVsvaError, type ErrnoName } from '../../../../src/errors.js';
import type { IoasidCore } from '../../../../host/ioasid/index.js';

/** Everything a caller can observe of the core without side effects. */
export function observe(core: IoasidCore, opts: { cgroupEvents?: boolean } = {}): unknown {
  const snapshot = core.snapshot();
  // A refused cgroup charge counts in `events.max` by design; callers may leave that out.
  if (opts.cgroupEvents === false) for (const c of snapshot.cgroups) c.events = { max: 0 };
  return { snapshot, capacity: core.capacity };
}

/**
 * Run `fn`, expect a VsvaError with `code`, and expect the observable state not to change
 * (except cgroup `events.max` when `cgroupEvents` is false: a refusal is counted there).
 */
export function expectErrno(core: IoasidCore, code: ErrnoName, fn: () => unknown, opts: { cgroupEvents?: boolean } = {}): void {
  const before = observe(core, opts);
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeDefined();
  expect(isVsvaError(err) ? err.code : err).toBe(code);
  expect(observe(core, opts)).toEqual(before);
}
