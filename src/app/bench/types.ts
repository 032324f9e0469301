/**
 * What every benchmark module returns. A figure is always printed beside a baseline measured
 * in the same run (machines are shared and noisy), with the ratio and the docs/design.md §9 target.
 *
 * A benchmark module lives at src/bench/<area>.ts and exports
 *   `export const bench: BenchModule`.
 */
export interface Stat {
  /** Median over repetitions. */
  median: number;
  min: number;
  max: number;
  /** Repetitions measured (after warm-up). */
  reps: number;
}

export interface BenchFigure {
  /** e.g. 'VCMD PASID alloc round trip p50'. */
  name: string;
  unit: string; // 'us', 'ops/s', 'MB/s', 'bytes', 'ms'
  value: Stat;
  baseline?: { name: string; value: Stat };
  /** value / baseline (for times: >1 is slower; for rates: <1 is slower). */
  ratio?: number;
  /** docs/design.md §9 target in words, e.g. 'ratio <= 1.25' or '>= 1e6 ops/s'. */
  target?: string;
  met?: boolean;
  notes?: string;
}

export interface BenchOptions {
  quick: boolean;
  /** Progress lines for long runs (the CLI prints them on stderr). */
  progress?: (msg: string) => void;
}

export interface BenchModule {
  name: string;
  run(opts: BenchOptions): Promise<BenchFigure[]>;
}

export function stat(samples: number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const median = n === 0 ? NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { median, min: s[0] ?? NaN, max: s[n - 1] ?? NaN, reps: n };
}

export function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}
