/**
 * Issue 10 acceptance: the end-to-end bench modules and the allocation experiment run in their
 * quick modes against the real system (spawned host, in-process guests) and produce
 * well-formed output. Nothing here looks at speed — only at the shape and the behaviour a user
 * would notice (every figure has its baseline and ratio; quota exhaustion binds exactly the
 * quota; files parse).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadBenchModules } from '../../../src/app/bench/index.js';
import { renderTable, runBenches, type BenchReport } from '../../../src/app/bench/runner.js';
import { runAllocExperiment, ALLOC_COLUMNS, DMA_COLUMNS, FAIRNESS_COLUMNS, FAIRNESS_VM_COLUMNS, SAMPLE_COLUMNS, SUMMARY_SECTIONS, type AllocResults } from '../../../src/app/experiment/alloc/index.js';
import { expectCsvTables, parseXml } from '../../unit/src/app/experiment/xml-check.js';

describe('vsva bench --quick (e2e-vtd, scale)', () => {
  let report: BenchReport;
  beforeAll(async () => {
    report = await runBenches(await loadBenchModules(['e2e-vtd', 'scale']), { quick: true });
  }, 120_000);

  it('runs both modules without error', () => {
    expect(report.modules.map((m) => [m.name, m.error ?? null])).toEqual([
      ['e2e-vtd', null],
      ['scale', null],
    ]);
    expect(report.quick).toBe(true);
  });

  it('prints every figure beside a same-run baseline with a ratio', () => {
    for (const m of report.modules) {
      for (const f of m.figures) {
        if (f.notes?.includes('skipped')) continue; // e.g. no gcc: the C baseline is absent, said so
        expect(f.unit, f.name).toMatch(/^(us|ms|ops\/s|MiB)$/);
        expect(Number.isFinite(f.value.median), f.name).toBe(true);
        expect(f.value.min).toBeLessThanOrEqual(f.value.max);
        expect(f.baseline?.name, f.name).toBeTruthy();
        expect(Number.isFinite(f.baseline!.value.median), f.name).toBe(true);
        expect(f.ratio).toBeCloseTo(f.value.median / f.baseline!.value.median, 6);
      }
    }
    const table = renderTable(report);
    for (const f of report.modules.flatMap((m) => m.figures)) expect(table).toContain(f.name);
  });

  it('states the docs/design.md §9 targets with met/missed', () => {
    const figs = report.modules.flatMap((m) => m.figures);
    const vcmd = figs.find((f) => f.name.startsWith('VCMD PASID alloc round trip p50 ('))!;
    expect(vcmd.target).toBe('ratio <= 1.25');
    expect(typeof vcmd.met).toBe('boolean');
    const inv = figs.find((f) => f.name.startsWith('batched PIOTLB invalidations'))!;
    expect(inv.target).toBe('>= 500000 ops/s');
    expect(inv.met).toBe(inv.value.median >= 500_000);
    const snap = figs.find((f) => f.name.startsWith('dashboard snapshot at'))!;
    expect(snap.target).toBe('< 50 ms');
    expect(snap.met).toBe(snap.value.median < 50);
    expect(snap.value.reps).toBeGreaterThan(0);
    expect(snap.notes).toContain('quick: scaled down');
  });
});

describe('vsva experiment alloc --quick (real system, reduced grid)', () => {
  let dir: string;
  let results: AllocResults;
  let files: string[];
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-exp-it-'));
    ({ results, files } = await runAllocExperiment({
      quick: true,
      out: dir,
      progressStream: null,
      axes: {
        schemes: ['vcmd-identity', 'virtio-spid'],
        vms: [1, 2],
        pasidsPerVm: [4],
        fairnessSchemes: ['vcmd-identity'],
        fairnessVms: [2],
        pasidBits: 6,
        dmaSamples: 20,
      },
    }));
  }, 120_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('runs every point of the grid', () => {
    expect(results.skipped).toEqual([]);
    expect(results.alloc).toHaveLength(2 * 2 * 1 * 2);
    expect(results.fairness).toHaveLength(2);
    expect(results.dma.map((d) => `${d.scheme}/${d.device}`)).toEqual(['vcmd-identity/pf', 'vcmd-identity/adi', 'virtio-spid/pf']);
    for (const d of results.dma) expect(d.ok).toBe(d.samples);
  });

  it('binds exactly quota × VMs PASIDs when the demand exceeds the quota, and says why the rest failed', () => {
    for (const r of results.alloc) {
      const expected = r.vms * Math.min(r.quota, r.pasids_per_vm);
      expect(r.succeeded, `${r.scheme} vms=${r.vms} quota=${r.quota}`).toBe(expected);
      if (r.quota < r.pasids_per_vm) expect(r.errors).toMatch(r.scheme === 'vcmd-identity' ? /^alloc:VCRSP\.SC=2$/ : /^bind:\w+$/);
      else expect(r.errors).toBe('');
    }
  });

  it('fair-share quotas give every VM the same share of a 6-bit PASID space', () => {
    const fair = results.fairness.find((f) => f.policy === 'fair-share')!;
    expect(fair.capacity).toBe(63);
    expect(fair.vms_started).toBe(2);
    expect(fair.min_share).toBe(31);
    expect(fair.jain_index).toBe(1);
  });

  it('writes well-formed CSV, SVG and Markdown', () => {
    expectCsvTables(dir, [
      ['alloc.csv', ALLOC_COLUMNS, results.alloc.length],
      ['latency-samples.csv', SAMPLE_COLUMNS, results.samples.length],
      ['fairness.csv', FAIRNESS_COLUMNS, results.fairness.length],
      ['fairness-vms.csv', FAIRNESS_VM_COLUMNS, results.fairnessVms.length],
      ['dma.csv', DMA_COLUMNS, results.dma.length],
    ]);
    const svgs = files.filter((f) => f.endsWith('.svg'));
    expect(svgs.length).toBeGreaterThanOrEqual(6);
    for (const f of svgs) {
      const x = parseXml(fs.readFileSync(path.join(dir, f), 'utf8'));
      const classes = new Set(x.elements.map((e) => e.attrs.class));
      for (const c of ['title', 'x-label', 'y-label', 'x-axis', 'y-axis', 'legend']) expect(classes.has(c), `${f} has ${c}`).toBe(true);
    }
    const md = fs.readFileSync(path.join(dir, 'summary.md'), 'utf8');
    for (const s of SUMMARY_SECTIONS) expect(md).toContain(`## ${s}\n`);
    expect(md).toMatch(/Jain 1,/);
    expect(md).toMatch(/bind p50 [\d.]+ µs/);
  });
});
