/**
 * Snapshot expectations against synthetic snapshots: each kind of check passes on matching
 * state and reports the first mismatch as expected vs actual; `save:` stores variables.
 */
import { describe, it, expect } from 'vitest';
import { checkSnapshotExpectations, type GuestObservations } from '../../../../../src/app/scenario/expect.js';
import type { Vars } from '../../../../../src/app/scenario/vars.js';
import { parseScenario } from '../../../../../src/app/scenario/parse.js';
import type { ExpectStep } from '../../../../../src/app/scenario/schema.js';
import type { HostSnapshot } from '../../../../../src/api/types.js';

const snap: HostSnapshot = {
  pasidBits: 20,
  capacity: { total: 1048575, available: 1048572 },
  vms: [
    {
      name: 'vtd0',
      connected: true,
      set: { quota: 8, used: 2 },
      devices: [{ bdf: '00:03.0', kind: 'pf' }],
      pasids: [
        { hpasid: 1, gpasid: 1, state: 'active', refs: 3, users: ['kvm', 'iommu'], bindings: [{ bdf: '00:03.0', pgtt: 'nested', flptr: '0x1000' }] },
        { hpasid: 2, gpasid: null, state: 'idle', refs: 1, users: [], bindings: [] },
      ],
    },
    { name: 'vio0', connected: true, set: { quota: 1024, used: 1 }, devices: [{ bdf: '00:03.0', kind: 'pf' }], pasids: [{ hpasid: 3, gpasid: 1, state: 'active', refs: 3, users: ['iommu', 'kvm'], bindings: [{ bdf: '00:03.0', pgtt: 'nested' }] }] },
  ],
};

const quiet: GuestObservations = { faults: [], pageRequests: 0 };

/** Parse one expect step (after `alloc ... as: A` so $A exists). */
function step(yaml: string): ExpectStep {
  const r = parseScenario(`name: t\nvms: [{ name: vtd0, viommu: vtd }, { name: vio0, viommu: virtio }]\nsteps:\n  - alloc: { vm: vtd0, as: A }\n  - expect: ${yaml}\n`, 't.yaml');
  if (!r.ok) throw new Error(r.issues.map((i) => i.message).join('; '));
  return r.scenario.steps[1] as ExpectStep;
}

function check(yaml: string, vars: Vars = new Map([['A', 1]]), obs: GuestObservations = quiet) {
  return checkSnapshotExpectations(step(yaml), snap, () => obs, vars);
}

describe('expect: host and VM counts', () => {
  it('passes when everything matches', () => {
    expect(check('{ vmCount: 2, capacity: { total: 1048575, available: 1048572 }, vm: vtd0, used: 2, quota: 8, pasids: 2, connected: true }')).toBeUndefined();
  });
  it('reports the first mismatch', () => {
    expect(check('{ vm: vtd0, used: 3 }')).toEqual({ what: 'VM vtd0 IOASID set: PASIDs used', expected: '3', actual: '2' });
    expect(check('{ vmCount: 3 }')).toEqual({ what: 'number of VMs on the host', expected: '3', actual: '2' });
    expect(check('{ vm: vio0, pasids: 0 }')).toEqual({ what: 'VM vio0 PASID table: rows', expected: '0', actual: '1 (gpasid→hpasid: 1→3)' });
  });
});

describe('expect: PASID rows', () => {
  it('selects by gpasid and/or hpasid and checks fields (users in any order)', () => {
    expect(check('{ vm: vtd0, pasid: { gpasid: $A, hpasid: $A, state: active, refs: 3, users: [iommu, kvm], bindings: [{ bdf: "00:03.0", pgtt: nested }] } }')).toBeUndefined();
    expect(check('{ vm: vtd0, pasid: { hpasid: 2, gpasid: null, state: idle, bindings: 0, users: [] } }')).toBeUndefined();
  });
  it('supports not-matchers on the other PASID and on fields', () => {
    expect(check('{ vm: vio0, pasid: { gpasid: $A, hpasid: { not: $A }, state: { not: idle } } }')).toBeUndefined();
    expect(check('{ vm: vtd0, pasid: { gpasid: $A, hpasid: { not: $A } } }')).toEqual({ what: 'VM vtd0 PASID row (gpasid 1): hpasid', expected: 'anything but 1', actual: '1' });
  });
  it('reports a missing row with the rows that exist, and a row that should be absent', () => {
    expect(check('{ vm: vtd0, pasid: { gpasid: 9 } }')).toEqual({ what: 'VM vtd0 PASID row (gpasid 9)', expected: 'a row', actual: 'no such row; rows are (gpasid→hpasid: 1→1, -→2)' });
    expect(check('{ vm: vtd0, pasid: { hpasid: 9, absent: true } }')).toBeUndefined();
    expect(check('{ vm: vtd0, pasid: { hpasid: 2, absent: true } }')?.expected).toBe('no such row');
  });
  it('reports field mismatches as expected vs actual', () => {
    expect(check('{ vm: vtd0, pasid: { gpasid: 1, refs: 2 } }')).toEqual({ what: 'VM vtd0 PASID row (gpasid 1): refs', expected: '2', actual: '3' });
    expect(check('{ vm: vtd0, pasid: { gpasid: 1, users: [iommu] } }')).toEqual({ what: 'VM vtd0 PASID row (gpasid 1): users', expected: '["iommu"]', actual: '["iommu","kvm"]' });
    expect(check('{ vm: vtd0, pasid: { gpasid: 1, bindings: [{ bdf: "00:03.0", pgtt: pt }] } }')?.what).toBe('VM vtd0 PASID row (gpasid 1): bindings');
  });
  it('save: stores the matched row’s PASIDs in variables', () => {
    const vars: Vars = new Map([['A', 1]]);
    const r = parseScenario(`name: t\nvms: [{ name: vio0, viommu: virtio }]\nsteps:\n  - expect: { vm: vio0, pasid: { gpasid: 1, save: { hpasid: H, gpasid: G } } }\n  - free: { vm: vio0, pasid: $H }\n`, 't.yaml');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(checkSnapshotExpectations(r.scenario.steps[0] as ExpectStep, snap, () => quiet, vars)).toBeUndefined();
    expect(vars.get('H')).toBe(3);
    expect(vars.get('G')).toBe(1);
  });
});

describe('expect: what the guest driver observed', () => {
  const obs: GuestObservations = { faults: [{ reason: 0x71, addr: 0x5000n, pasid: 1 }], pageRequests: 2 };
  it('checks the last fault and the page-request count', () => {
    expect(check('{ vm: vtd0, pageRequests: 2, fault: { reason: 0x71, addr: 0x5000, pasid: $A } }', undefined, obs)).toBeUndefined();
    expect(check('{ vm: vtd0, fault: { reason: 0x70 } }', undefined, obs)).toEqual({ what: 'VM vtd0 last fault: reason', expected: '0x70', actual: '0x71' });
    expect(check('{ vm: vtd0, noFaults: true }', undefined, obs)?.actual).toBe('1, the last reason 0x71 at 0x5000');
    expect(check('{ vm: vtd0, fault: {} }')).toEqual({ what: 'VM vtd0 last fault recorded by the guest driver', expected: 'a fault', actual: 'no fault recorded' });
  });
});
