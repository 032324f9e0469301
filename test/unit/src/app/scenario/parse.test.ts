/**
 * Scenario parsing and validation: the example scenarios are valid; every kind of mistake is
 * reported at its file:line:col and path, and nothing malformed gets through.
 */
import { describe, it, expect } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { formatIssues, loadScenario, parseScenario, type ScenarioIssue } from '../../../../../src/app/scenario/parse.js';
import type { DmaStep, ExpectStep, MapStep } from '../../../../../src/app/scenario/schema.js';

const HEAD = `name: t
vms:
  - { name: vtd0, viommu: vtd }
  - { name: vio0, viommu: virtio, devices: [{ bdf: '00:04.0' }] }
steps:
`;

function issues(text: string): ScenarioIssue[] {
  const r = parseScenario(text, 'x.yaml');
  if (r.ok) throw new Error('expected the scenario to be rejected');
  return r.issues;
}

function only(text: string): ScenarioIssue {
  const list = issues(text);
  expect(list, formatIssues(list)).toHaveLength(1);
  return list[0]!;
}

describe('example scenarios', () => {
  const dir = 'scenarios';
  const files = readdirSync(dir).filter((f) => /\.(ya?ml|json)$/.test(f));
  it('the repository ships the five required examples', () => {
    expect(files.length).toBeGreaterThanOrEqual(5);
  });
  for (const f of files) {
    it(`${f} is valid`, () => {
      const r = loadScenario(join(dir, f));
      expect(r.ok ? [] : formatIssues(r.issues)).toEqual([]);
    });
  }
});

describe('valid scenarios', () => {
  it('fills defaults and keeps 64-bit addresses exact', () => {
    const r = parseScenario(
      HEAD +
        `  - process: { vm: vtd0, name: p }
  - map: { process: p, va: 0xffffff8000000000, pages: 2 }
`,
      'x.yaml',
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const sc = r.scenario;
    expect(sc.host).toEqual({ pasidBits: 20, spawn: false });
    expect(sc.stepTimeoutMs).toBe(10_000);
    expect(sc.vms[0]).toMatchObject({ name: 'vtd0', viommu: 'vtd', memory: 64 << 20, pasidQuota: 1024, vcmd: '3.1', devices: [{ bdf: '00:03.0', kind: 'pf' }], pageRequests: 'serve' });
    expect(sc.vms[1]!.vcmd).toBe(false);
    const map = sc.steps[1] as MapStep;
    expect(map.va).toBe(0xffffff8000000000n);
    expect(map).toMatchObject({ pages: 2, size: '4K', write: true, user: true, exec: false });
    expect(map.loc).toEqual({ file: 'x.yaml', line: 7, col: 5 });
  });

  it('reads JSON too, with locations', () => {
    const json = JSON.stringify(
      { name: 'j', vms: [{ name: 'v', viommu: 'vtd', memory: '32M' }], steps: [{ alloc: { vm: 'v', as: 'A' } }, { free: { vm: 'v', pasid: '$A' } }] },
      null,
      2,
    );
    const r = parseScenario(json, 'x.json');
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.scenario.vms[0]!.memory).toBe(32 << 20);
    const bad = json.replace('"free"', '"frees"');
    const i = only(bad);
    expect(i.path).toBe('steps[1]');
    expect(i.loc.line).toBe(bad.split('\n').findIndex((l) => l.includes('"frees"')));
  });

  it('accepts hex strings for integers, errors as names or mappings, scalar shorthands', () => {
    const r = parseScenario(
      HEAD +
        `  - alloc: { vm: vtd0, error: ENOSPC }
  - alloc: { vm: vtd0, error: { errno: ENOSPC, message: quota } }
  - virtio-unmap: { vm: vio0, domain: 1, iova: '0x1000', length: 4K, error: RANGE }
  - wait: vtd0
  - sleep: 5
`,
      'x.yaml',
    );
    expect(r.ok ? 'ok' : formatIssues(r.issues)).toBe('ok');
    if (!r.ok) return;
    expect(r.scenario.steps.map((s) => s.error)).toEqual([{ errno: 'ENOSPC' }, { errno: 'ENOSPC', message: 'quota' }, { status: 'RANGE' }, undefined, undefined]);
    expect(r.scenario.steps[2]).toMatchObject({ iova: 0x1000n, length: 4096 });
    expect(r.scenario.steps[4]).toMatchObject({ op: 'sleep', ms: 5 });
  });

  it('parses DMA and expect steps into their typed forms', () => {
    const r = parseScenario(
      HEAD +
        `  - process: { vm: vtd0, name: p }
  - bind: { process: p, device: '00:03.0', as: A }
  - dma: { process: p, device: '00:03.0', op: copy, src: 0x1000, dst: 0x2000, length: 8K }
  - dma: { vm: vtd0, device: '00:03.0', pasid: $A, op: read, va: 0x1000, length: 2, expect: { hex: 'ab cd' }, fault: { reason: 0x5a } }
  - expect:
      vm: vtd0
      pasid: [{ gpasid: $A, hpasid: { not: 3 }, refs: 2, users: [iommu, kvm], save: { hpasid: H } }]
      memory: { process: p, va: 0x2000, length: 16, equals: { process: p, va: 0x1000 } }
  - expect: { vm: vtd0, pasid: { hpasid: $H, state: { not: idle } } }
`,
      'x.yaml',
    );
    expect(r.ok ? 'ok' : formatIssues(r.issues)).toBe('ok');
    if (!r.ok) return;
    const [, , copy, read, exp] = r.scenario.steps as [unknown, unknown, DmaStep, DmaStep, ExpectStep];
    expect(copy).toMatchObject({ kind: 'copy', src: 0x1000n, addr: 0x2000n, length: 8192, check: true, process: 'p', vm: 'vtd0' });
    expect(read).toMatchObject({ kind: 'read', pasid: { ref: 'A' }, expectData: { hex: 'abcd' }, fault: { reason: 0x5a }, check: false });
    expect(exp.vmChecks[0]!.rows[0]).toMatchObject({ gpasid: { eq: { ref: 'A' } }, hpasid: { not: 3 }, refs: { eq: 2 }, users: ['iommu', 'kvm'], save: { hpasid: 'H' } });
    expect(exp.memory[0]).toMatchObject({ at: { vm: 'vtd0', process: 'p', va: 0x2000n }, equals: { sameAs: { process: 'p', va: 0x1000n }, length: 16 } });
  });
});

describe('malformed scenarios', () => {
  it('points at a YAML syntax error', () => {
    const i = issues('name: t\nvms: [\n')[0]!;
    expect(i.message).toMatch(/^syntax:/);
    expect(i.loc.file).toBe('x.yaml');
  });

  it('reports an unknown key at its line and column', () => {
    const i = only(HEAD + `  - process: { vm: vtd0, name: p, level: 5 }\n`);
    expect(i).toMatchObject({ path: 'steps[0].process.level', loc: { line: 6, col: 35 } });
    expect(i.message).toContain("unknown key 'level'");
  });

  it('reports an unknown action with the list of actions', () => {
    const i = only(HEAD + `  - bnid: { process: p }\n`);
    expect(i.path).toBe('steps[0]');
    expect(i.message).toMatch(/unknown: bnid/);
  });

  it('refuses a variable no earlier step defines', () => {
    const i = only(HEAD + `  - free: { vm: vtd0, pasid: $A }\n  - alloc: { vm: vtd0, as: A }\n`);
    expect(i.path).toBe('steps[0].free.pasid');
    expect(i.message).toContain('$A is not defined by an earlier step');
  });

  it('refuses unknown VMs, processes and devices', () => {
    const list = issues(
      HEAD +
        `  - alloc: { vm: nope }
  - map: { process: ghost, va: 0x1000 }
  - process: { vm: vtd0, name: p }
  - bind: { process: p, device: '00:04.0' }
  - exit: { process: p }
  - unbind: { process: p, device: '00:03.0' }
`,
    );
    expect(list.map((i) => i.path)).toEqual(['steps[0].alloc.vm', 'steps[1].map.process', 'steps[3].bind.device', 'steps[5].unbind.process']);
    expect(list[0]!.message).toContain("no VM named 'nope' (VMs: vtd0, vio0)");
    expect(list[2]!.message).toContain("VM 'vtd0' has no device 00:04.0");
    expect(list[3]!.message).toContain("no live process named 'p'");
  });

  it('refuses actions the VM’s vIOMMU does not have', () => {
    const list = issues(HEAD + `  - flush: { vm: vio0, cache: pasid }\n  - virtio-attach: { vm: vtd0, device: '00:03.0', domain: 1 }\n  - vms: 1\n`);
    expect(list[0]).toMatchObject({ path: 'steps[0].flush.vm' });
    expect(list[0]!.message).toContain('needs VT-d');
    expect(list[1]!.message).toContain('needs virtio-iommu');
    expect(list[2]!.path).toBe('steps[2]');
  });

  it('checks types and ranges', () => {
    const list = issues(
      HEAD.replace('{ name: vtd0, viommu: vtd }', '{ name: vtd0, viommu: vtd, memory: 12345, pasidQuota: -1, vcmd: "3.2" }') +
        `  - alloc: { vm: vtd0, count: 2, as: X }
  - free: { vm: vtd0, pasid: 0x100000 }
  - process: { vm: vtd0, name: p, levels: 3 }
`,
    );
    expect(list.map((i) => i.path)).toEqual(['vms[0].memory', 'vms[0].pasidQuota', 'vms[0].vcmd', 'steps[0].alloc.as', 'steps[1].free.pasid', 'steps[2].process.levels']);
    expect(list[4]!.message).toBe('pasid 1048576 is out of range 0..1048575');
  });

  it('checks DMA and expect steps for contradictions', () => {
    const list = issues(
      HEAD +
        `  - process: { vm: vtd0, name: p }
  - dma: { process: p, device: '00:03.0', op: copy, va: 0x1000, length: 16 }
  - dma: { vm: vtd0, device: '00:03.0', op: read, addr: 0x1000, length: 4, expect: { hex: 'aabbccddee' } }
  - dma: { vm: vtd0, device: '00:03.0', op: fill, addr: 0x1000, length: 4, check: true }
  - expect: { used: 3 }
  - expect: { vm: vtd0, pasid: { refs: 1 } }
`,
    );
    expect(list.map((i) => i.path)).toEqual(['steps[1].dma.va', 'steps[2].dma.expect', 'steps[3].dma.check', 'steps[4].expect', 'steps[5].expect.pasid']);
    expect(list[3]!.message).toContain("need 'vm'");
    expect(list[4]!.message).toContain('needs gpasid or hpasid');
  });

  it('reports a missing file as one issue', () => {
    const r = loadScenario('/nonexistent/s.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(formatIssues(r.issues)).toMatch(/^\/nonexistent\/s\.yaml:1:1: cannot read the scenario/);
  });
});

describe('docs/scenarios.md', () => {
  it('documents every action and every example', async () => {
    const { readFileSync } = await import('node:fs');
    const { STEP_OPS } = await import('../../../../../src/app/scenario/schema.js');
    const doc = readFileSync('docs/scenarios.md', 'utf8');
    for (const op of STEP_OPS) expect(doc.includes(`| \`${op}\` |`) || doc.includes(`- ${op}:`), op).toBe(true);
    for (const f of readdirSync('scenarios')) expect(doc, f).toContain(`scenarios/${f}`);
  });
});
