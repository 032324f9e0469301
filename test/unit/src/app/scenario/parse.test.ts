/**
 * Scenario parsing and validation: the example scenarios are valid; every kind of mistake is
 * reported at its file:line:col and path, once (no issue follows from another), and nothing
 * malformed gets through; docs/scenarios.md lists exactly the registry's actions.
 */
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isVsvaError } from '../../../../../src/errors.js';
import { formatIssues, loadScenario, parseScenario, type ScenarioIssue } from '../../../../../src/app/scenario/parse.js';
import { STEP_OPS, type DmaStep, type ExpectStep, type MapStep } from '../../../../../src/app/scenario/schema.js';
import { STEP_DEFS } from '../../../../../src/app/scenario/steps.js';

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

  it('reports an unknown action with the one it most likely meant, else the list of actions', () => {
    const i = only(HEAD + `  - bnid: { process: p }\n`);
    expect(i.path).toBe('steps[0]');
    expect(i.message).toBe("unknown action 'bnid' in step 1 (did you mean 'bind'?)");
    const j = only(HEAD + `  - zzz: { process: p }\n`);
    expect(j.message).toBe(`unknown action 'zzz' in step 1 (actions: ${STEP_OPS.join(', ')})`);
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

  it('refuses a missing file as ENOENT "no such file", not as a malformed scenario', () => {
    let err: unknown;
    try {
      loadScenario('/nonexistent/s.yaml');
    } catch (e) {
      err = e;
    }
    expect(isVsvaError(err, 'ENOENT')).toBe(true);
    expect((err as Error).message).toBe('ENOENT: no such file: /nonexistent/s.yaml');
  });

  it('refuses a file it cannot read (a directory) as EIO', () => {
    expect(() => loadScenario('scenarios')).toThrow(/^EIO: cannot read scenarios: EISDIR/);
  });
});

describe('one mistake, one issue (no cascade)', () => {
  it('names a misspelled step key with the key it meant, at the key, and reads its value under that key', () => {
    const list = issues(HEAD + `  - process: { vm: vtd0, nmae: p }\n  - map: { process: p, va: 0x1000 }\n  - bind: { process: p, device: '00:03.0', as: P }\n  - free: { vm: vtd0, pasid: $P }\n`);
    expect(list).toEqual([{ loc: { file: 'x.yaml', line: 6, col: 26 }, path: 'steps[0].process.nmae', message: "unknown key 'nmae' in step 1 (did you mean 'name'?)" }]);
  });

  it('lists the allowed keys when no key is close', () => {
    const i = only(HEAD + `  - alloc: { vm: vtd0, colour: blue }\n`);
    expect(i.message).toBe("unknown key 'colour' in step 1 (allowed: vm, count, as, label, error)");
  });

  it('does not report the value of a misspelled key (it may not be meant for the key guessed)', () => {
    const i = only(HEAD + `  - process: { vm: vtd0, name: p, levle: 7 }\n`);
    expect(i.message).toBe("unknown key 'levle' in step 1 (did you mean 'levels'?)");
  });

  it('a misspelled `as` still defines its variable', () => {
    const i = only(HEAD + `  - alloc: { vm: vtd0, ass: A }\n  - free: { vm: vtd0, pasid: $A }\n`);
    expect(i).toMatchObject({ path: 'steps[0].alloc.ass', message: "unknown key 'ass' in step 1 (did you mean 'as'?)" });
  });

  it('a misspelled action still defines what the action would', () => {
    const i = only(HEAD + `  - alloc: { vm: vtd0, as: A }\n  - procss: { vm: vtd0, name: p }\n  - bind: { process: p, device: '00:03.0', pasid: $A }\n`);
    expect(i.message).toBe("unknown action 'procss' in step 2 (did you mean 'process'?)");
  });

  it('a step missing a required key still defines its names', () => {
    const i = only(HEAD + `  - process: { name: p }\n  - exit: { process: p }\n`);
    expect(i).toMatchObject({ path: 'steps[0].process', message: "'process' needs 'vm'" });
  });

  it('arguments written beside the action are named as such', () => {
    const i = only(HEAD + `  - alloc:\n    vm: vtd0\n    as: A\n  - free: { vm: vtd0, pasid: $A }\n`);
    expect(i).toMatchObject({ path: 'steps[0]', message: "step 1 has one action, 'alloc'; 'vm', 'as' belong to it: indent them under 'alloc:'" });
  });

  it('a VM with a wrong or misspelled field still defines its name', () => {
    const wrong = issues(HEAD.replace('{ name: vtd0, viommu: vtd }', '{ name: vtd0, viommu: vdt }') + `  - alloc: { vm: vtd0 }\n  - process: { vm: vtd0, name: p }\n`);
    expect(wrong.map((i) => i.path)).toEqual(['vms[0].viommu']);
    const typo = only(HEAD.replace('{ name: vtd0, viommu: vtd }', '{ name: vtd0, viomu: vtd }') + `  - flush: { vm: vtd0, cache: iotlb }\n`);
    expect(typo).toMatchObject({ path: 'vms[0].viomu', message: "unknown key 'viomu' in a VM (did you mean 'viommu'?)" });
  });

  it('names misspelled top-level and nested keys', () => {
    const top = only(HEAD.replace('name: t', 'nmae: t') + `  - sleep: 1\n`);
    expect(top).toMatchObject({ path: 'nmae', message: "unknown key 'nmae' in the scenario (did you mean 'name'?)" });
    const nested = only(HEAD + `  - dma: { vm: vtd0, device: '00:03.0', op: read, iova: 0x1000, length: 4, fault: { reasn: 0x71 } }\n`);
    expect(nested).toMatchObject({ path: 'steps[0].dma.fault.reasn', message: "unknown key 'reasn' in fault of step 1 (did you mean 'reason'?)" });
  });

  it('an unknown process in a DMA is one issue', () => {
    const i = only(HEAD + `  - dma: { process: ghost, device: '00:03.0', op: read, va: 0x1000, length: 4 }\n`);
    expect(i.message).toBe("no live process named 'ghost' at this step (create it with a 'process' step)");
  });

  it('reports an undefined variable at its value, with the variable it most likely meant', () => {
    const list = issues(HEAD + `  - alloc: { vm: vtd0, as: PASID_A }\n  - free: { vm: vtd0, pasid: $PASID_B }\n  - free: { vm: vtd0, pasid: $Q }\n`);
    expect(list).toEqual([
      { loc: { file: 'x.yaml', line: 7, col: 30 }, path: 'steps[1].free.pasid', message: 'variable $PASID_B is not defined by an earlier step (did you mean $PASID_A?)' },
      { loc: { file: 'x.yaml', line: 8, col: 30 }, path: 'steps[2].free.pasid', message: "variable $Q is not defined by an earlier step (define it with 'as:' or 'save:')" },
    ]);
  });

  it('suggests the VM or process a misspelled name most likely meant', () => {
    const list = issues(HEAD + `  - process: { vm: vdt0, name: app }\n  - process: { vm: vtd0, name: app }\n  - exit: { process: ap }\n`);
    expect(list.map((i) => i.message)).toEqual(["no VM named 'vdt0' (did you mean 'vtd0'?)", "no live process named 'ap' at this step (did you mean 'app'?)"]);
  });
});

describe('docs/scenarios.md', () => {
  const doc = readFileSync('docs/scenarios.md', 'utf8');

  it('documents exactly the registry’s actions', () => {
    // Actions are the first cells of the tables headed `| action |`, and the `- action:` examples.
    const documented = new Set<string>();
    let inActionTable = false;
    let inYaml = false;
    for (const line of doc.split('\n')) {
      if (line.startsWith('```')) inYaml = line === '```yaml';
      else if (inYaml) {
        const m = /^- ([a-z][a-z-]*):/.exec(line);
        if (m) documented.add(m[1]!);
      }
      if (!line.startsWith('|')) inActionTable = false;
      else if (line.startsWith('| action |')) inActionTable = true;
      else if (inActionTable) {
        const m = /^\| `([a-z][a-z-]*)` \|/.exec(line);
        if (m) documented.add(m[1]!);
      }
    }
    expect([...documented].sort()).toEqual([...STEP_OPS].sort());
  });

  it('lists every example', () => {
    for (const f of readdirSync('scenarios')) expect(doc, f).toContain(`scenarios/${f}`);
  });
});

describe('the step registry', () => {
  it('has one record per action, each summed up in one short line', () => {
    expect(new Set(STEP_DEFS.map((d) => d.op)).size).toBe(STEP_DEFS.length);
    for (const d of STEP_DEFS) {
      expect(d.summary.length, d.op).toBeLessThanOrEqual(80);
      const keys = [...d.args.required, ...(d.args.optional ?? [])];
      expect(new Set(keys).size, `${d.op} names a key twice`).toBe(keys.length);
    }
  });
});
