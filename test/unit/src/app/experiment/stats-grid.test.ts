import { describe, it, expect } from 'vitest';
import { cdfPoints, distribution, jainIndex } from '../../../../../src/app/experiment/stats.js';
import { buildGrid, fairnessPlan, FULL_AXES, QUICK_AXES } from '../../../../../src/app/experiment/grid.js';
import { mdTable } from '../../../../../src/app/experiment/markdown.js';
import { ProgressBar } from '../../../../../src/app/experiment/progress.js';
import { VsvaError } from '../../../../../src/errors.js';

const code = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as VsvaError).code;
  }
  return undefined;
};

describe("Jain's fairness index", () => {
  it('is 1 for equal shares and 1/n when one VM gets everything', () => {
    expect(jainIndex([5, 5, 5, 5])).toBe(1);
    expect(jainIndex([8, 0, 0, 0])).toBe(0.25);
    expect(jainIndex([0, 0])).toBe(1);
    expect(jainIndex([1, 3])).toBeCloseTo(16 / 20);
  });
  it('rejects empty and negative input (EINVAL)', () => {
    expect(code(() => jainIndex([]))).toBe('EINVAL');
    expect(code(() => jainIndex([1, -1]))).toBe('EINVAL');
  });
});

describe('distribution / cdf', () => {
  it('summarises samples', () => {
    const d = distribution([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(d).toMatchObject({ n: 10, mean: 5.5, p50: 5, p90: 9, p99: 10, min: 1, max: 10 });
    expect(distribution([]).n).toBe(0);
  });
  it('cdf ends at 1 and is monotone', () => {
    const pts = cdfPoints([3, 1, 2, 5, 4], 3);
    expect(pts[pts.length - 1]).toEqual([5, 1]);
    for (let i = 1; i < pts.length; i++) expect(pts[i]![0]).toBeGreaterThanOrEqual(pts[i - 1]![0]);
  });
});

describe('experiment grid', () => {
  it('expands the quick grid into scheme × VMs × PASIDs × quota points', () => {
    const g = buildGrid(QUICK_AXES);
    expect(g.alloc).toHaveLength(3 * 2 * 1 * 2);
    expect(g.alloc.filter((p) => p.quota < p.pasidsPerVm)).toHaveLength(6);
    expect(g.fairness).toHaveLength(1 * 2 * 2);
    expect(g.dma).toHaveLength(4);
    expect(g.dma.map((p) => `${p.scheme}/${p.device}`)).toEqual(['vcmd-identity/pf', 'vcmd-identity/adi', 'spid-vtd/adi', 'virtio-spid/pf']);
  });
  it('the full grid covers every scheme and policy', () => {
    const g = buildGrid(FULL_AXES);
    expect(new Set(g.alloc.map((p) => p.scheme)).size).toBe(3);
    expect(new Set(g.fairness.map((p) => p.policy)).size).toBe(3);
  });
  it('rejects bad axes (EINVAL)', () => {
    expect(code(() => buildGrid({ ...QUICK_AXES, vms: [0] }))).toBe('EINVAL');
    expect(code(() => buildGrid({ ...QUICK_AXES, quotaFactors: [1.5] }))).toBe('EINVAL');
    expect(code(() => buildGrid({ ...QUICK_AXES, schemes: ['nope' as never] }))).toBe('EINVAL');
    expect(code(() => buildGrid({ ...QUICK_AXES, pasidBits: 30 }))).toBe('EINVAL');
  });
  it('plans quotas per policy', () => {
    const p = { kind: 'fairness' as const, scheme: 'vcmd-identity' as const, vms: 4, pasidBits: 10, oversubscription: 2 };
    expect(fairnessPlan({ ...p, policy: 'demand' }, 1023)).toEqual({ quota: 512, demand: 512 });
    expect(fairnessPlan({ ...p, policy: 'fair-share' }, 1023)).toEqual({ quota: 255, demand: 512 });
    expect(fairnessPlan({ ...p, policy: 'unlimited' }, 1023)).toEqual({ quota: 0, demand: 512 });
  });
});

describe('markdown table', () => {
  it('right-aligns numeric columns and escapes pipes', () => {
    expect(mdTable(['scheme', 'p50 (µs)'], [['a|b', 1.23456], ['c', NaN]])).toBe('| scheme | p50 (µs) |\n| --- | ---: |\n| a\\|b | 1.23 |\n| c | – |\n');
    expect(code(() => mdTable(['a'], [[1, 2]]))).toBe('EINVAL');
  });
});

describe('progress bar', () => {
  it('writes plain lines when not a TTY, and the final line on finish', () => {
    const out: string[] = [];
    const bar = new ProgressBar(4, { write: (s: string) => out.push(s), isTTY: false }, 10, 60_000);
    bar.tick('a');
    bar.tick('b');
    bar.finish();
    expect(out).toHaveLength(2);
    expect(out[0]).toMatch(/^\[==>\s+\]\s+25% 1\/4 .* a\n$/);
    expect(out[1]).toMatch(/100% 4\/4 .* done\n$/);
  });
  it('redraws in place on a TTY', () => {
    const out: string[] = [];
    const bar = new ProgressBar(2, { write: (s: string) => out.push(s), isTTY: true }, 10);
    bar.tick('x');
    bar.finish();
    expect(out[0]!.startsWith('\r[')).toBe(true);
    expect(out[out.length - 1]).toBe('\n');
  });
});
