/** The report text: ✓ / ✗ / · per step, expected vs actual under the failure, the verdict line. */
import { describe, it, expect } from 'vitest';
import { describeStep, renderReport, type ScenarioResult } from '../../../../../src/app/scenario/report.js';
import { parseScenario } from '../../../../../src/app/scenario/parse.js';
import type { Step } from '../../../../../src/app/scenario/schema.js';

function steps(): Step[] {
  const r = parseScenario(
    `name: t
vms: [{ name: vtd0, viommu: vtd }]
steps:
  - process: { vm: vtd0, name: p }
  - bind: { process: p, device: '00:03.0', as: P }
  - dma: { process: p, device: '00:03.0', op: fill, va: 0x1000, length: 4096, value: 0xab, label: 'fill the buffer' }
  - unbind: { process: p, device: '00:03.0' }
`,
    's.yaml',
  );
  if (!r.ok) throw new Error('bad');
  return r.scenario.steps;
}

describe('report', () => {
  it('describes steps from their arguments, or their label', () => {
    const [proc, bind, dma, unbind] = steps();
    expect(describeStep(proc!)).toBe('process p on vtd0 (4-level)');
    expect(describeStep(bind!)).toBe('bind p to 00:03.0 as $P');
    expect(describeStep(dma!)).toBe('fill the buffer');
    expect(describeStep(unbind!)).toBe('unbind p from 00:03.0');
  });

  it('renders a failure with expected vs actual, skipped steps and the location', () => {
    const [a, b, c, d] = steps();
    const r: ScenarioResult = {
      scenario: { name: 't', file: 's.yaml' },
      passed: false,
      ms: 1234,
      steps: [
        { step: a!, status: 'pass', ms: 1 },
        { step: b!, status: 'pass', note: 'PASID 7', ms: 1 },
        { step: c!, status: 'fail', mismatch: { what: 'DMA outcome', expected: 'completed', actual: 'fault reason 0x71 at 0x1000' }, ms: 1 },
        { step: d!, status: 'skip', ms: 0 },
      ],
    };
    expect(renderReport(r)).toBe(
      [
        'scenario: t (s.yaml)',
        '  ✓ 1 process p on vtd0 (4-level)',
        '  ✓ 2 bind p to 00:03.0 as $P — PASID 7',
        '  ✗ 3 fill the buffer (s.yaml:6)',
        '      DMA outcome',
        '        expected: completed',
        '        actual:   fault reason 0x71 at 0x1000',
        '  · 4 unbind p from 00:03.0 (not run)',
        'FAIL 2/4 steps passed in 1.23 s; first failure: step 3 at s.yaml:6',
      ].join('\n'),
    );
  });

  it('renders a pass, and a setup failure', () => {
    const all = steps().map((step) => ({ step, status: 'pass' as const, ms: 1 }));
    expect(renderReport({ scenario: { name: 't', file: 's.yaml' }, passed: true, ms: 500, steps: all }).split('\n').at(-1)).toBe('PASS 4/4 steps in 0.50 s');
    const setup = renderReport({ scenario: { name: 't', file: 's.yaml' }, passed: false, ms: 10, setupError: 'ECONNREFUSED', steps: steps().map((step) => ({ step, status: 'skip' as const, ms: 0 })) });
    expect(setup).toContain('✗ setup failed: ECONNREFUSED');
    expect(setup.split('\n').at(-1)).toBe('FAIL 0/4 steps passed in 0.01 s; setup failed');
  });
});
