/**
 * The test suite's slowdown factor: how much slower than an idle developer machine this run may
 * be. Every timing a test depends on — a wait's deadline, a test or hook timeout, a window in
 * which some work must happen — is multiplied by it, so one knob makes the suite hold on a busy
 * or slow machine without hiding real hangs on a fast one.
 *
 *   VSVA_TEST_SLOWDOWN=<number ≥ 1>   explicit factor (scripts/test-under-load.sh sets 3);
 *   otherwise CI=true (or any non-empty CI other than 'false'/'0') → 3;
 *   otherwise 1.
 *
 * An unparsable or < 1 value is an error, not silently 1: a typo must not make a slow run flaky.
 * Documented in docs/testing.md. No imports, so vitest.config.ts can use it too.
 */

/** The factor for the given environment (exported for its own test). */
export function slowdownFrom(env: Record<string, string | undefined>): number {
  const raw = env['VSVA_TEST_SLOWDOWN'];
  if (raw !== undefined && raw.trim() !== '') {
    const f = Number(raw);
    if (!Number.isFinite(f) || f < 1) throw new Error(`VSVA_TEST_SLOWDOWN must be a number ≥ 1 (got '${raw}')`);
    return f;
  }
  const ci = env['CI'];
  if (ci !== undefined && ci !== '' && ci !== 'false' && ci !== '0') return 3;
  return 1;
}

/** The factor of this run. */
export const SLOWDOWN: number = slowdownFrom(process.env);

/** `ms` scaled by the run's slowdown factor (rounded up to a whole millisecond). */
export function scaled(ms: number): number {
  return Math.ceil(ms * SLOWDOWN);
}
