/**
 * Shared helpers of the reliability tests: waiting for a reconnect, a VM's entry in a host
 * snapshot, and the part of it a restart must preserve (PASIDs with their guest PASIDs and
 * bindings, devices), in a canonical order so two snapshots compare with toEqual.
 */
import type { HostSnapshot, IommufdObjectsSnapshot, VmSnapshot } from '../../../src/api/types.js';
import type { GuestVm } from '../../../guest/vm.js';
import { waitFor } from '../../support/wait.js';

export function vmIn(s: HostSnapshot, name: string): VmSnapshot | undefined {
  return s.vms.find((v) => v.name === name);
}

/** What a host restart must not change, as seen in the snapshot. */
export function durableState(vm: VmSnapshot | undefined): unknown {
  if (!vm) return null;
  return {
    devices: [...vm.devices].sort((a, b) => a.bdf.localeCompare(b.bdf)),
    set: vm.set,
    pasids: [...vm.pasids]
      .sort((a, b) => a.hpasid - b.hpasid)
      .map((p) => ({ hpasid: p.hpasid, gpasid: p.gpasid, state: p.state, users: [...p.users].sort(), bindings: [...p.bindings].sort((a, b) => a.bdf.localeCompare(b.bdf)) })),
    ...(vm.iommufd !== undefined ? { iommufd: iommufdRoutes(vm.iommufd) } : {}),
  };
}

/**
 * An iommufd VM's routes without the object IDs (a fresh host gives new ones): per device, what
 * its RID and each PASID are attached to — a nested HWPT with its first-level table, the nest
 * parent, or another paging HWPT — and whether the PASID is global.
 */
export function iommufdRoutes(fd: IommufdObjectsSnapshot): unknown {
  const what = (id: number | null): string => {
    const h = id === null ? undefined : fd.hwpts.find((x) => x.id === id);
    if (h === undefined) return 'blocked';
    return h.kind === 'nested' ? `nested ${h.flptr}` : h.nestParent ? 'nest parent' : 'paging';
  };
  return [...fd.devices]
    .sort((a, b) => a.bdf.localeCompare(b.bdf))
    .map((d) => ({ bdf: d.bdf, rid: what(d.rid), pasids: d.pasids.map((p) => ({ pasid: p.pasid, global: p.global, to: what(p.hwpt) })) }));
}

/**
 * Resolves when the VM's link is up again after a reconnect (`since`: reconnects before);
 * `ms` is the idle-machine deadline, scaled by the run's slowdown factor.
 */
export async function reconnected(vm: GuestVm, since: number, ms = 15_000): Promise<void> {
  await waitFor(() => vm.link.counters.reconnects > since && vm.link.state === 'up', { timeoutMs: ms, what: `${vm.name} reconnected` });
}

/**
 * Invariants of a host snapshot that must hold whatever the guests did (fuzz and load checks):
 * refcounts ≥ 0; every bound PASID's bindings name devices of the VM that holds it; no host
 * PASID appears in two VMs; each VM's `used` equals its PASID count and is within its quota.
 */
export function snapshotInvariants(s: HostSnapshot): string[] {
  const errs: string[] = [];
  const owner = new Map<number, string>();
  for (const vm of s.vms) {
    const bdfs = new Set(vm.devices.map((d) => d.bdf));
    const live = vm.pasids.filter((p) => p.state !== 'free-pending').length;
    if (vm.set.used < live) errs.push(`${vm.name}: set.used ${vm.set.used} < ${live} live PASIDs`);
    if (vm.set.quota !== 0 && vm.set.used > vm.set.quota) errs.push(`${vm.name}: used ${vm.set.used} > quota ${vm.set.quota}`);
    for (const p of vm.pasids) {
      if (!(p.refs >= 0)) errs.push(`${vm.name}: PASID ${p.hpasid} refs ${p.refs}`);
      const prev = owner.get(p.hpasid);
      if (prev !== undefined) errs.push(`PASID ${p.hpasid} is in both ${prev} and ${vm.name}`);
      owner.set(p.hpasid, vm.name);
      for (const b of p.bindings) if (!bdfs.has(b.bdf)) errs.push(`${vm.name}: PASID ${p.hpasid} bound on ${b.bdf}, not a device of this VM`);
    }
  }
  return errs;
}
