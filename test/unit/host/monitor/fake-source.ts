/**
 * A MonitorSource for tests: a snapshot the test mutates, counters it bumps, a trace bus it
 * emits on, and a record of control calls.
 */
import type { HostSnapshot, PasidSnapshot, VmSnapshot } from '../../../../src/api/types.js';
import { TraceBus } from '../../../../src/trace/bus.js';
import type { CounterSet, MonitorControlAction, MonitorSource, MonitorStats } from '../../../../host/monitor/types.js';
import { zeroCounters } from '../../../../host/monitor/summary.js';

export function pasid(hpasid: number, gpasid: number | null, bound = true): PasidSnapshot {
  return {
    hpasid,
    gpasid,
    state: bound ? 'active' : 'idle',
    refs: bound ? 2 : 1,
    users: bound ? ['iommu', 'kvm'] : ['iommu'],
    bindings: bound ? [{ bdf: '00:03.0', pgtt: 'nested', flptr: '0x' + (0x10_0000 + hpasid * 0x1000).toString(16) }] : [],
  };
}

export function vm(name: string, pasids: PasidSnapshot[], quota = 1024): VmSnapshot {
  return {
    name,
    connected: true,
    set: { quota, used: pasids.length },
    devices: [{ bdf: '00:03.0', kind: 'pf' }],
    pasids,
  };
}

export class FakeSource implements MonitorSource {
  readonly events = new TraceBus();
  snap: HostSnapshot;
  counters: MonitorStats | null = null;
  snapshotCalls = 0;
  failSnapshot = false;
  readonly controlCalls: { action: MonitorControlAction; vm?: string }[] = [];
  control?: (action: MonitorControlAction, vm?: string) => Promise<unknown>;

  constructor(vms: VmSnapshot[] = [vm('vm-a', [pasid(1, 10), pasid(2, null, false)]), vm('vm-b', [pasid(3, 10)])], withControl = true) {
    this.snap = { pasidBits: 20, capacity: { total: 2 ** 20 - 1, available: 2 ** 20 - 1 - 3 }, vms };
    if (withControl) {
      this.control = async (action, vmName) => {
        this.controlCalls.push({ action, vm: vmName });
        return { done: true };
      };
    }
  }

  snapshot(): HostSnapshot {
    this.snapshotCalls++;
    if (this.failSnapshot) throw new Error('snapshot failed on purpose');
    return structuredClone(this.snap);
  }

  /** Add a PASID to a VM (and charge it to the set and the host capacity). */
  addPasid(vmName: string, p: PasidSnapshot): void {
    const v = this.snap.vms.find((x) => x.name === vmName);
    if (!v) throw new Error(`no VM ${vmName}`);
    v.pasids.push(p);
    v.set.used++;
    this.snap.capacity.available--;
  }

  bump(vmName: string, key: keyof CounterSet, n = 1): void {
    this.counters ??= { total: zeroCounters(), vms: {} };
    const c = (this.counters.vms[vmName] ??= zeroCounters());
    c[key] = (c[key] ?? 0) + n;
    this.counters.total[key] = (this.counters.total[key] ?? 0) + n;
  }
}

/** A FakeSource that reports counters through stats(). */
export class FakeSourceWithStats extends FakeSource {
  stats(): MonitorStats {
    return structuredClone(this.counters ?? { total: zeroCounters(), vms: {} });
  }
}
