/**
 * The example scenarios in scenarios/ run against a real (in-process) host with real VT-d and
 * virtio-iommu guests and pass; wrong expectations fail with a report that shows expected vs
 * actual and where; `vsva run` exits 0 / 1 / 2 for pass / fail / malformed or unreadable.
 */
import { describe, it, expect } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadScenario } from '../../../src/app/scenario/parse.js';
import { runScenario } from '../../../src/app/scenario/runner.js';
import { renderReport } from '../../../src/app/scenario/report.js';
import type { Scenario } from '../../../src/app/scenario/schema.js';
import { STEP_DEFS } from '../../../src/app/scenario/steps.js';

function load(file: string): Scenario {
  const r = loadScenario(file);
  if (!r.ok) throw new Error(`${file} is malformed`);
  return r.scenario;
}

const examples = readdirSync('scenarios').filter((f) => /\.(ya?ml|json)$/.test(f));

describe('example scenarios', () => {
  it.each(examples)('%s passes', async (f) => {
    const r = await runScenario(load(join('scenarios', f)));
    expect(r.passed, renderReport(r)).toBe(true);
    expect(r.steps.every((s) => s.status === 'pass')).toBe(true);
  });

  it('covers the required flows', () => {
    const all = examples.map((f) => load(join('scenarios', f)));
    const ops = (sc: Scenario) => new Set(sc.steps.map((s) => s.op));
    expect(all.some((s) => s.vms.some((v) => v.viommu === 'vtd') && ops(s).has('bind') && ops(s).has('dma') && ops(s).has('unbind'))).toBe(true);
    expect(all.some((s) => s.steps.some((st) => st.op === 'alloc' && st.error?.errno === 'ENOSPC'))).toBe(true);
    expect(all.some((s) => s.steps.some((st) => st.op === 'page-requests'))).toBe(true);
    expect(all.some((s) => ops(s).has('virtio-map') && ops(s).has('virtio-unmap'))).toBe(true);
    expect(all.some((s) => new Set(s.vms.map((v) => v.viommu)).size === 2)).toBe(true);
  });
});

/**
 * Examples whose expectations name what only the VFIO SVA uAPI records in a PASID row (the guest
 * PASID as the row's SPID, the row's bindings): on iommufd the row of a VCMD PASID has no SPID
 * and its routes are iommufd attachments (docs/protocol.md §13).
 */
const VFIO_SVA_ROW_EXPECTATIONS = new Set(['two-vms-same-gpasid.yaml', 'vtd-sva-bind-dma.yaml']);

describe('example scenarios on iommufd (vsva run --uapi iommufd)', () => {
  it.each(examples.filter((f) => !VFIO_SVA_ROW_EXPECTATIONS.has(f)))('%s passes', async (f) => {
    const r = await runScenario(load(join('scenarios', f)), { uapi: 'iommufd' });
    expect(r.passed, renderReport(r)).toBe(true);
  });

  it("a VM's `uapi` key selects its uAPI; an unknown one makes the scenario malformed", async () => {
    const sc = load('test/integration/scenario/fixtures/iommufd-uapi.yaml');
    expect(sc.vms[0]!.uapi).toBe('iommufd');
    const r = await runScenario(sc);
    expect(r.passed, renderReport(r)).toBe(true);
    const bad = loadScenario('test/integration/scenario/fixtures/bad-uapi.yaml');
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.issues.map((i) => i.message).join('\n')).toMatch(/uapi/);
  });
});

describe('failing scenarios', () => {
  it('a wrong PASID-table expectation fails at its step with expected vs actual', async () => {
    const sc = load('test/integration/scenario/fixtures/wrong-refs.yaml');
    const r = await runScenario(sc);
    expect(r.passed).toBe(false);
    expect(r.steps.map((s) => s.status)).toEqual(['pass', 'pass', 'pass', 'fail', 'skip']);
    const bad = r.steps[3]!;
    expect(bad.mismatch).toEqual({ what: `VM vtd0 PASID row (gpasid 1): users`, expected: '["iommu","kvm","vdcm"]', actual: '["iommu","kvm"]' });
    const text = renderReport(r);
    expect(text).toContain('✗ 4 expect vtd0 (test/integration/scenario/fixtures/wrong-refs.yaml:9)');
    expect(text).toContain('expected: ["iommu","kvm","vdcm"]');
    expect(text).toContain('actual:   ["iommu","kvm"]');
    expect(text).toContain('· 5 unbind app from 00:03.0 (not run)');
    expect(text).toMatch(/FAIL 3\/5 steps passed in [0-9.]+ s; first failure: step 4 at test\/integration\/scenario\/fixtures\/wrong-refs\.yaml:9$/);
    // Everything was released even though the scenario stopped early.
    expect(r.teardownError).toBeUndefined();
  });

  it('wrong data in guest memory names the first differing byte', async () => {
    const r = await runScenario(load('test/integration/scenario/fixtures/wrong-data.json'));
    expect(r.passed).toBe(false);
    expect(r.steps[4]!.mismatch).toMatchObject({ what: expect.stringContaining('memory at app VA 0x400000, byte 0'), expected: expect.stringMatching(/^12 12 12/), actual: expect.stringMatching(/^11 11 11/) });
  });

  it('a step that should fail but succeeds is a failure', async () => {
    const r = await runScenario(load('test/integration/scenario/fixtures/unexpected-success.yaml'));
    expect(r.passed).toBe(false);
    expect(r.steps[0]!.mismatch).toMatchObject({ what: 'outcome', expected: 'an error (ENOSPC)', actual: 'success (PASID 1)' });
  });
});

describe('vsva run', () => {
  const run = (...files: string[]) => spawnSync(process.execPath, ['bin/vsva.js', 'run', '--no-color', ...files], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, VSVA_LOG: 'silent' } });

  it('exits 0 and prints the report for a passing scenario', () => {
    const r = run('scenarios/virtio-map-unmap.yaml');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('scenario: virtio-iommu map and unmap');
    expect(r.stdout).toMatch(/PASS 10\/10 steps/);
  });

  it('exits 1 with the first mismatch for a failing scenario', () => {
    const r = run('test/integration/scenario/fixtures/wrong-refs.yaml');
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('expected: ["iommu","kvm","vdcm"]');
    expect(r.stdout).toMatch(/FAIL 3\/5/);
  });

  it('exits 2 with file:line:col issues for a malformed scenario, running nothing', () => {
    const r = run('test/integration/scenario/fixtures/malformed.yaml', 'scenarios/virtio-map-unmap.yaml');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('malformed scenario (2 problems)');
    expect(r.stderr).toContain("test/integration/scenario/fixtures/malformed.yaml:5:22: steps[0].bind.process: no live process named 'ghost' at this step");
    expect(r.stderr).toContain('test/integration/scenario/fixtures/malformed.yaml:6:30: steps[1].free.pasid: variable $NOPE is not defined by an earlier step');
  });

  it('names a misspelled key and an undefined variable once each, and nothing that follows from them', () => {
    const f = 'test/integration/scenario/fixtures/misspelled.yaml';
    const r = run('--check', f);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      [
        `${f}: malformed scenario (2 problems)`,
        `${f}:6:37: steps[0].process.levle: unknown key 'levle' in step 1 (did you mean 'levels'?)`,
        `${f}:9:30: steps[3].free.pasid: variable $PP is not defined by an earlier step (did you mean $P?)`,
        '',
      ].join('\n'),
    );
  });

  it('exits 2 with one line for a missing file: no such file, not a malformed scenario', () => {
    const r = run('test/integration/scenario/fixtures/no-such-file.yaml', 'scenarios/virtio-map-unmap.yaml');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('vsva: ENOENT: no such file: test/integration/scenario/fixtures/no-such-file.yaml\n');
  });

  it('lists the step actions in its help, from the step registry', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const d of STEP_DEFS) expect(r.stdout).toContain(`${d.op.padEnd(13)}  ${d.summary}`);
  });
});
