/**
 * What the dashboard sends instead of the whole snapshot (docs/design.md §6; the scale target
 * of §9): a per-VM summary for everyone, and one page of one VM's PASID table for clients that
 * asked. Both are pure functions of a snapshot, so the server builds each once per tick and shares
 * the serialized text among clients.
 */
import type { HostSnapshot, PasidSnapshot, VmSnapshot } from '../../src/api/types.js';
import type { CounterSet, MonitorStats } from './types.js';
import type { DashboardSummary, PasidPage, VmCounts, VmSummary } from './protocol.js';
import { buildTopology, topologyCounts, type Topology } from './topology.js';

export function zeroCounters(): CounterSet {
  return { allocs: 0, frees: 0, binds: 0, unbinds: 0, invalidations: 0, faults: 0, pageRequests: 0, iotlbHits: null, iotlbMisses: null };
}

export function countPasids(pasids: readonly PasidSnapshot[]): VmCounts {
  const c: VmCounts = { pasids: pasids.length, active: 0, idle: 0, freePending: 0, bound: 0, bindings: 0 };
  for (const p of pasids) {
    if (p.state === 'active') c.active++;
    else if (p.state === 'idle') c.idle++;
    else c.freePending++;
    const n = p.bindings.length;
    if (n > 0) {
      c.bound++;
      c.bindings += n;
    }
  }
  return c;
}

/** The summary of a snapshot: O(total PASIDs), no per-PASID allocation. */
export function buildSummary(snap: HostSnapshot, stats: MonitorStats | undefined): DashboardSummary {
  const vms: VmSummary[] = new Array(snap.vms.length);
  let connectedCount = 0;
  for (let i = 0; i < snap.vms.length; i++) {
    const vm = snap.vms[i]!;
    if (vm.connected) connectedCount++;
    vms[i] = {
      name: vm.name,
      connected: vm.connected,
      quota: vm.set.quota,
      used: vm.set.used,
      devices: vm.devices,
      counts: countPasids(vm.pasids),
      stats: stats?.vms[vm.name] ?? zeroCounters(),
      uapi: vm.uapi ?? 'vfio-sva',
      iommufd: vm.iommufd ? topologyCounts(vm.iommufd) : null,
    };
  }
  return {
    pasidBits: snap.pasidBits,
    capacity: { total: snap.capacity.total, available: snap.capacity.available },
    vmCount: snap.vms.length,
    connectedCount,
    totals: stats?.total ?? zeroCounters(),
    vms,
  };
}

function sortedByHpasid(pasids: readonly PasidSnapshot[]): readonly PasidSnapshot[] {
  for (let i = 1; i < pasids.length; i++) {
    if (pasids[i - 1]!.hpasid > pasids[i]!.hpasid) return [...pasids].sort((a, b) => a.hpasid - b.hpasid);
  }
  return pasids;
}

/** Rows [offset, offset + limit) of a VM's PASID table in hPASID order. */
export function buildPasidPage(vm: VmSnapshot, offset: number, limit: number): PasidPage {
  const rows = sortedByHpasid(vm.pasids);
  return { total: rows.length, offset, limit, rows: rows.slice(offset, offset + limit) };
}

/** The iommufd topology of a VM (topology.ts); null for a VM without iommufd objects (VFIO SVA uAPI). */
export function buildVmTopology(vm: VmSnapshot): Topology | null {
  return vm.iommufd ? buildTopology(vm.iommufd) : null;
}
