/**
 * Statistics the experiment reports: latency distributions (percentiles, mean), empirical CDF
 * points for charts, and Jain's fairness index.
 */
import { fail } from '../../errors.js';
import { percentile } from '../bench/types.js';

export interface Distribution {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
}

/** Summary of samples; every field is NaN when there are none. */
export function distribution(samples: readonly number[]): Distribution {
  const n = samples.length;
  if (n === 0) return { n: 0, mean: NaN, p50: NaN, p90: NaN, p99: NaN, min: NaN, max: NaN };
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of samples) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const s = samples as number[];
  return { n, mean: sum / n, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), min, max };
}

/**
 * Jain's fairness index of allocations x_1..x_n: (Σx)² / (n · Σx²). 1 when every VM got the same,
 * 1/n when one VM got everything. Defined as 1 when every x is 0 (nobody got anything: equal).
 */
export function jainIndex(xs: readonly number[]): number {
  if (xs.length === 0) fail('EINVAL', "Jain's index of no values");
  let sum = 0;
  let sq = 0;
  for (const x of xs) {
    if (!(x >= 0)) fail('EINVAL', `Jain's index needs non-negative values, got ${x}`);
    sum += x;
    sq += x * x;
  }
  return sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
}

/** Up to `points` (value, cumulative fraction) pairs of the empirical CDF, for a chart. */
export function cdfPoints(samples: readonly number[], points = 100): [number, number][] {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return [];
  const out: [number, number][] = [];
  const step = Math.max(1, Math.floor(n / points));
  for (let i = step - 1; i < n; i += step) out.push([s[i]!, (i + 1) / n]);
  if (out[out.length - 1]![1] !== 1) out.push([s[n - 1]!, 1]);
  return out;
}
