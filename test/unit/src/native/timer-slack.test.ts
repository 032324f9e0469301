/**
 * The calling thread's timer slack (prctl(2) PR_SET_TIMERSLACK / PR_GET_TIMERSLACK): the host asks
 * for a short one so that its sleep between two slices of a long job (host/vfio/slice-budget.ts)
 * lasts what it asks for, not the default 50 µs more.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { getTimerSlack, nativeAvailable, setTimerSlack } from '../../../../src/native/native.js';

describe.runIf(nativeAvailable())('timer slack', () => {
  let restore: number | null = null;
  afterEach(() => {
    if (restore !== null) setTimerSlack(restore);
    restore = null;
  });

  it('sets the calling thread\'s slack and returns the previous one', () => {
    const before = getTimerSlack();
    expect(before).toBeGreaterThan(0);
    restore = setTimerSlack(1000);
    expect(restore).toBe(before);
    expect(getTimerSlack()).toBe(1000);
    expect(setTimerSlack(2000)).toBe(1000);
    expect(getTimerSlack()).toBe(2000);
  });

  it('refuses 0, negative, too large and non-numbers with EINVAL, leaving the slack as it was', () => {
    const before = getTimerSlack();
    for (const bad of [0, -1, 2 ** 31, 'x' as unknown as number]) {
      let code: unknown;
      try {
        setTimerSlack(bad);
      } catch (e) {
        code = (e as { code?: unknown }).code;
      }
      expect(code).toBe('EINVAL');
      expect(getTimerSlack()).toBe(before);
    }
  });
});
