import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { barChart, escapeXml, formatTick, lineChart, logTicks, niceTicks } from '../../../../../src/app/experiment/svg-chart.js';
import { VsvaError } from '../../../../../src/errors.js';
import { parseXml } from './xml-check.js';

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof VsvaError ? e.code : 'not-a-VsvaError';
  }
  return undefined;
}

describe('niceTicks', () => {
  it('covers the range with 1/2/5 steps', () => {
    expect(niceTicks(0, 97)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(0.3, 0.72)).toEqual([0.3, 0.4, 0.5, 0.6, 0.7, 0.8]);
  });
  it('always brackets the data (property)', () => {
    fc.assert(
      fc.property(fc.double({ min: -1e9, max: 1e9, noNaN: true }), fc.double({ min: -1e9, max: 1e9, noNaN: true }), (a, b) => {
        const t = niceTicks(a, b);
        // Within a millionth of the axis span (the rounding guard in niceTicks).
        const tol = 1e-6 * (t[t.length - 1]! - t[0]!);
        expect(t[0]!).toBeLessThanOrEqual(Math.min(a, b) + tol);
        expect(t[t.length - 1]!).toBeGreaterThanOrEqual(Math.max(a, b) - tol);
        expect(t.length).toBeLessThanOrEqual(12);
      }),
      { numRuns: 300 },
    );
  });
  it('rejects a non-finite range with EINVAL', () => {
    expect(code(() => niceTicks(0, Infinity))).toBe('EINVAL');
  });
});

describe('logTicks / formatTick', () => {
  it('gives one tick per decade', () => {
    expect(logTicks(3, 4500)).toEqual([1, 10, 100, 1000, 10000]);
    expect(code(() => logTicks(0, 10))).toBe('EINVAL');
  });
  it('formats compactly', () => {
    expect(formatTick(1500)).toBe('1500');
    expect(formatTick(15000)).toBe('15k');
    expect(formatTick(2_000_000)).toBe('2M');
    expect(formatTick(0.25)).toBe('0.25');
    expect(formatTick(0)).toBe('0');
  });
  it('escapes XML specials', () => {
    expect(escapeXml(`a<b & "c" 'd'>`)).toBe('a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;');
  });
});

describe('lineChart', () => {
  const svg = lineChart({
    title: 'Bind latency <p50> & p99',
    xLabel: 'VMs (count)',
    yLabel: 'latency (µs)',
    series: [
      { name: 'VCMD identity', points: [[1, 50], [4, 80], [16, 200]] },
      { name: 'SPID & virtio', points: [[1, 60], [4, NaN], [16, 260]] },
    ],
  });
  it('is well-formed XML with a single svg root', () => {
    const x = parseXml(svg);
    expect(x.elements[0]!.name).toBe('svg');
    expect(x.elements[0]!.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
  });
  it('has title, axis labels with units, ticks and a legend with every series', () => {
    const x = parseXml(svg);
    expect(x.texts).toContain('Bind latency <p50> & p99');
    expect(x.texts).toContain('VMs (count)');
    expect(x.texts).toContain('latency (µs)');
    expect(x.texts).toContain('VCMD identity');
    expect(x.texts).toContain('SPID & virtio');
    for (const t of ['0', '100', '200', '300']) expect(x.texts).toContain(t);
    const groups = x.elements.filter((e) => e.name === 'g').map((e) => e.attrs.class);
    expect(groups).toEqual(expect.arrayContaining(['x-axis', 'y-axis', 'legend', 'series']));
  });
  it('breaks a line at a missing value', () => {
    const x = parseXml(svg);
    // series 2 has points 1 and 3 only, each alone: no polyline drawn for it; series 1 has one.
    expect(x.elements.filter((e) => e.name === 'polyline')).toHaveLength(1);
  });
  it('labels a count axis with whole numbers only', () => {
    const s = lineChart({ title: 'n', xLabel: 'VMs (count)', yLabel: 'µs', xInteger: true, series: [{ name: 'a', points: [[1, 5], [2, 7]] }] });
    const labels = parseXml(s).texts;
    expect(labels).toEqual(expect.arrayContaining(['1', '2']));
    expect(labels).not.toContain('1.2'); // what a plain linear axis over 1..2 would show
    const plain = parseXml(lineChart({ title: 'n', xLabel: 'x', yLabel: 'µs', series: [{ name: 'a', points: [[1, 5], [2, 7]] }] })).texts;
    expect(plain).toContain('1.2');
  });
  it('supports log axes', () => {
    const s = lineChart({ title: 'cdf', xLabel: 'latency (µs)', yLabel: 'fraction', xLog: true, series: [{ name: 'a', points: [[5, 0.1], [500, 1]] }] });
    const x = parseXml(s);
    expect(x.texts).toEqual(expect.arrayContaining(['1', '10', '100', '1000']));
  });
  it('rejects a chart without series or points (EINVAL)', () => {
    expect(code(() => lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [] }))).toBe('EINVAL');
    expect(code(() => lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[NaN, 1]] }] }))).toBe('EINVAL');
  });
});

describe('barChart', () => {
  it('draws one bar per finite value, with legend and category labels', () => {
    const svg = barChart({
      title: 'Successes at quota exhaustion',
      xLabel: 'scheme',
      yLabel: 'PASIDs bound (count)',
      categories: ['vcmd', 'spid', 'virtio'],
      series: [
        { name: 'quota 8', values: [8, 8, 8] },
        { name: 'quota 16', values: [16, NaN, 16] },
      ],
    });
    const x = parseXml(svg);
    expect(x.elements.filter((e) => e.name === 'rect' && e.attrs.fill?.startsWith('#') && e.attrs.width !== '720').length).toBeGreaterThanOrEqual(5);
    expect(x.texts).toEqual(expect.arrayContaining(['vcmd', 'spid', 'virtio', 'quota 8', 'quota 16', 'PASIDs bound (count)', 'scheme']));
  });
  it('rejects mismatched series length with EINVAL', () => {
    expect(code(() => barChart({ title: 't', xLabel: 'x', yLabel: 'y', categories: ['a', 'b'], series: [{ name: 's', values: [1] }] }))).toBe('EINVAL');
  });
});
