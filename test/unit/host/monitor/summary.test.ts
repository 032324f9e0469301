import { describe, it, expect } from 'vitest';
import { buildPasidPage, buildSummary, countPasids } from '../../../../host/monitor/summary.js';
import { syntheticSnapshot } from '../../../../host/monitor/synthetic.js';
import { pasid, vm } from './fake-source.js';

describe('dashboard summary', () => {
  it('counts states and bindings per VM and carries set, devices and stats', () => {
    const a = vm('a', [pasid(1, 1), pasid(2, null, false), { ...pasid(3, 3), state: 'free-pending', bindings: [] }]);
    a.connected = false;
    const snap = { pasidBits: 20, capacity: { total: 100, available: 97 }, vms: [a, vm('b', [])] };
    const stats = {
      total: { allocs: 5, frees: 1, binds: 2, unbinds: 0, invalidations: 9, faults: 0, pageRequests: 0, iotlbHits: 10, iotlbMisses: 2 },
      vms: { a: { allocs: 5, frees: 1, binds: 2, unbinds: 0, invalidations: 9, faults: 0, pageRequests: 0, iotlbHits: 10, iotlbMisses: 2 } },
    };
    const s = buildSummary(snap, stats);
    expect(s.vmCount).toBe(2);
    expect(s.connectedCount).toBe(1);
    expect(s.capacity).toEqual({ total: 100, available: 97 });
    expect(s.totals.allocs).toBe(5);
    expect(s.vms[0]).toMatchObject({ name: 'a', connected: false, quota: 1024, used: 3, devices: [{ bdf: '00:03.0', kind: 'pf' }] });
    expect(s.vms[0]!.counts).toEqual({ pasids: 3, active: 1, idle: 1, freePending: 1, bound: 1, bindings: 1 });
    expect(s.vms[0]!.stats.iotlbHits).toBe(10);
    // a VM the stats do not know gets zero counters with unknown IOTLB figures
    expect(s.vms[1]!.stats).toMatchObject({ allocs: 0, iotlbHits: null });
    expect(s.vms[1]!.counts.pasids).toBe(0);
  });

  it('has zero totals when there are no stats', () => {
    const s = buildSummary({ pasidBits: 20, capacity: { total: 1, available: 1 }, vms: [] }, undefined);
    expect(s.totals).toMatchObject({ allocs: 0, binds: 0, iotlbHits: null, iotlbMisses: null });
  });

  it('summarises 64 VMs × 1024 PASIDs without carrying the PASID rows', () => {
    const snap = syntheticSnapshot({ vms: 64, pasidsPerVm: 1024 });
    const s = buildSummary(snap, undefined);
    expect(s.vms).toHaveLength(64);
    expect(s.vms.reduce((n, v) => n + v.counts.pasids, 0)).toBe(65536);
    const c = s.vms[5]!.counts;
    expect(c.active + c.idle + c.freePending).toBe(1024);
    expect(countPasids(snap.vms[5]!.pasids)).toEqual(c);
    // the serialized summary stays small: no per-PASID data
    expect(JSON.stringify(s).length).toBeLessThan(64 * 1024);
  });

  it('pages a VM’s PASID table in hPASID order', () => {
    const v = vm('a', [pasid(30, 3), pasid(10, 1), pasid(20, 2)]);
    const page = buildPasidPage(v, 1, 1);
    expect(page).toMatchObject({ total: 3, offset: 1, limit: 1 });
    expect(page.rows.map((r) => r.hpasid)).toEqual([20]);
    expect(buildPasidPage(v, 0, 10).rows.map((r) => r.hpasid)).toEqual([10, 20, 30]);
    expect(buildPasidPage(v, 5, 10).rows).toEqual([]);
    // the snapshot itself is not reordered
    expect(v.pasids.map((r) => r.hpasid)).toEqual([30, 10, 20]);
  });
});
