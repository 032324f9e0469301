/**
 * The allocation experiment's orchestration and report, run against an in-memory fake system
 * (no processes): grid coverage, quota-exhaustion accounting, fairness, and well-formed output
 * files (CSV headers and row counts, SVG as XML with axes and legend, Markdown sections).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runAllocExperiment, OpFailure, ALLOC_COLUMNS, FAIRNESS_COLUMNS, DMA_COLUMNS, SAMPLE_COLUMNS, SUMMARY_SECTIONS, type ExperimentEnv, type ExperimentHost, type SchemeVm, type AllocResults } from '../../../../../src/app/experiment/alloc/index.js';
import { buildGrid, QUICK_AXES } from '../../../../../src/app/experiment/grid.js';
import { expectCsvTables, parseXml } from './xml-check.js';

/** A fake host: an IOASID capacity with quota reservation at VM set-up, as the real core does. */
function fakeEnv(): ExperimentEnv {
  return {
    async startHost(pasidBits) {
      const total = 2 ** pasidBits - 1;
      let available = total;
      let next = 1;
      const host: ExperimentHost & { reserve(q: number): number; release(q: number): void; nextId(): number } = {
        socket: '/fake',
        pasidBits,
        capacity: async () => ({ total, available }),
        close: async () => {},
        reserve(q) {
          const take = q === 0 ? available : q;
          if (take > available || available === 0) throw new OpFailure('setup', 'ENOSPC');
          available -= take;
          return take;
        },
        release(q) {
          available += q;
        },
        nextId: () => next++,
      };
      return host;
    },
    async startVm(h, scheme, spec) {
      const host = h as ExperimentHost & { reserve(q: number): number; release(q: number): void; nextId(): number };
      const quota = host.reserve(spec.quota);
      let used = 0;
      let guestNext = 1;
      const vm: SchemeVm = {
        name: spec.name,
        async alloc() {
          if (scheme === 'vcmd-identity') {
            if (used >= quota) throw new OpFailure('alloc', 'VCRSP.SC=2');
            used++;
            return host.nextId();
          }
          return guestNext++;
        },
        async bind() {
          if (scheme !== 'vcmd-identity') {
            if (used >= quota) throw new OpFailure('bind', 'ENOSPC');
            used++;
          }
          await new Promise((r) => setImmediate(r));
        },
        async dma() {
          return true;
        },
        async close() {
          host.release(quota);
        },
      };
      return vm;
    },
    translationMicro: () => ({ findBySpidNs: 40, mapGetNs: 10 }),
  };
}

let dir: string;
let results: AllocResults;
let files: string[];
const stderr: string[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-exp-test-'));
  ({ results, files } = await runAllocExperiment({ quick: true, out: dir, env: fakeEnv(), axes: { dmaSamples: 20 }, progressStream: { write: (s: string) => stderr.push(s), isTTY: false } }));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('allocation experiment orchestration (fake system)', () => {
  it('runs every grid point and skips none', () => {
    const g = buildGrid(QUICK_AXES);
    expect(results.skipped).toEqual([]);
    expect(results.alloc).toHaveLength(g.alloc.length);
    expect(results.fairness).toHaveLength(g.fairness.length);
    expect(results.dma).toHaveLength(g.dma.length);
    expect(results.micro).toEqual({ findBySpidNs: 40, mapGetNs: 10 });
  });
  it('counts exactly quota × VMs successes at quota exhaustion, with the refusing op and status', () => {
    const short = results.alloc.filter((r) => r.quota < r.pasids_per_vm);
    expect(short.length).toBeGreaterThan(0);
    for (const r of short) {
      expect(r.succeeded).toBe(r.vms * r.quota);
      expect(r.failed).toBe(r.attempted - r.succeeded);
      expect(r.errors).toBe(r.scheme === 'vcmd-identity' ? 'alloc:VCRSP.SC=2' : 'bind:ENOSPC');
    }
  });
  it('fairness: demand quotas shut late VMs out, fair-share quotas are equal', () => {
    const demand = results.fairness.find((f) => f.policy === 'demand' && f.vms === 4)!;
    // capacity 1023, demand 512 each: 1 VM fits its quota, the others fail at set-up.
    expect(demand.vms_started).toBe(1);
    expect(demand.jain_index).toBeCloseTo(0.25);
    const fair = results.fairness.find((f) => f.policy === 'fair-share' && f.vms === 4)!;
    expect(fair.vms_started).toBe(4);
    expect(fair.jain_index).toBe(1);
    expect(fair.total_bound).toBe(4 * 255);
    expect(results.fairnessVms.filter((v) => v.policy === 'demand' && v.vms === 4 && !v.setup_ok).map((v) => v.status)).toEqual(['setup:ENOSPC', 'setup:ENOSPC', 'setup:ENOSPC']);
  });
  it('drew a progress bar on the given stream and ended at 100 %', () => {
    expect(stderr.length).toBeGreaterThan(0);
    expect(stderr[stderr.length - 1]).toMatch(/100% .*written to/);
  });
});

describe('allocation experiment output files', () => {
  it('writes the CSV files with their headers and one row per record', () => {
    expectCsvTables(dir, [
      ['alloc.csv', ALLOC_COLUMNS, results.alloc.length],
      ['latency-samples.csv', SAMPLE_COLUMNS, results.samples.length],
      ['fairness.csv', FAIRNESS_COLUMNS, results.fairness.length],
      ['dma.csv', DMA_COLUMNS, results.dma.length],
    ]);
  });
  it('writes readable SVG charts: XML, title, labelled axes with units, ticks, legend', () => {
    const svgs = files.filter((f) => f.endsWith('.svg'));
    expect(svgs).toEqual(expect.arrayContaining(['bind-latency-vs-vms.svg', 'throughput-vs-vms.svg', 'quota-exhaustion.svg', 'fairness-jain.svg', 'dma-latency.svg', 'bind-latency-cdf.svg']));
    for (const f of svgs) {
      const x = parseXml(fs.readFileSync(path.join(dir, f), 'utf8'));
      const classes = x.elements.map((e) => e.attrs.class).filter(Boolean);
      expect(classes, f).toEqual(expect.arrayContaining(['title', 'x-label', 'y-label', 'x-axis', 'y-axis', 'legend']));
      const yLabel = x.texts[2]!; // title (in <title>), title text, x label, y label
      expect(x.texts.some((t) => /\(.*\)/.test(t)), `${f} axis label with a unit`).toBe(true);
      expect(yLabel.length).toBeGreaterThan(0);
    }
  });
  it('writes a Markdown summary with every section and numbers in the findings', () => {
    const md = fs.readFileSync(path.join(dir, 'summary.md'), 'utf8');
    for (const s of SUMMARY_SECTIONS) expect(md).toContain(`## ${s}\n`);
    const findings = md.slice(md.indexOf('## Findings'), md.indexOf('## Setup'));
    expect(findings).toMatch(/Jain \d/);
    expect(findings).toMatch(/p50 [\d.]+ µs/);
    for (const f of files.filter((n) => n !== 'summary.md')) expect(md).toContain(`(${f})`);
  });
});
