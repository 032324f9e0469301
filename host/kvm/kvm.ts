/**
 * KVM's part in guest SVA (docs/design.md §4; the IOASID life cycle of "IOASID Extensions for
 * SIOV", Jacob Pan and Yi L. Liu, LPC 2020): the gPASID → hPASID translation table that
 * ENQCMD-style submissions use (the VMCS PASID translation table), one per VM.
 *
 * The table is maintained from the notifications of the VM's IOASID set only — never by the
 * container directly — as that life cycle draws it:
 *   BIND   (container, after the IOMMU bind took its 'iommu' reference) → KVM ioasid_get
 *          ('kvm' reference) and vmcs_update_atomic (the entry appears);
 *   UNBIND (container, at the last device unbind) → vmcs_update_atomic (the entry goes) and
 *          ioasid_put of the 'kvm' reference;
 *   FREE   (the guest, or teardown, freed the PASID while KVM still held it) → the entry goes
 *          and the reference is put, so the ID can be reclaimed.
 * The notifier has priority CPU, so KVM runs before the IOMMU and device users (Linux
 * ioasid.c notifier priorities of Jacob Pan's IOASID extensions for guest SVA).
 *
 * The guest PASID of an entry is the ID's SPID; an ID bound without a guest PASID (identity
 * allocation through VCMD) is entered as itself.
 */
import { childLogger } from '../../src/log.js';
import type { IoasidCore, IoasidNotifyArgs, IoasidSet } from '../ioasid/index.js';
import { SetUser, SetUsers } from '../ioasid-users/set-user.js';

const log = childLogger('kvm');

/** The reference name KVM holds IDs under. */
export const KVM_USER = 'kvm';

export interface KvmEntry {
  gpasid: number;
  hpasid: number;
}

/** One VM's KVM state: its PASID translation table. */
export class KvmVm extends SetUser {
  /** gPASID → hPASID. */
  private readonly byGpasid = new Map<number, number>();
  /** hPASID → gPASID, for the IDs this VM's KVM holds a reference on. */
  private readonly byHpasid = new Map<number, number>();

  constructor(core: IoasidCore, set: IoasidSet, vmName: string) {
    super(core, set, vmName, 'CPU');
  }

  /** ENQCMD translation: the host PASID for a guest PASID, or undefined when none is bound. */
  translate(gpasid: number): number | undefined {
    return this.byGpasid.get(gpasid);
  }

  /** Whether KVM holds a reference on `hpasid`. */
  holds(hpasid: number): boolean {
    return this.byHpasid.has(hpasid);
  }

  entries(): KvmEntry[] {
    return [...this.byGpasid].map(([gpasid, hpasid]) => ({ gpasid, hpasid })).sort((a, b) => a.gpasid - b.gpasid);
  }

  get size(): number {
    return this.byGpasid.size;
  }

  protected override releaseAll(): void {
    for (const hpasid of [...this.byHpasid.keys()]) this.drop(hpasid);
  }

  protected override onEvent(a: IoasidNotifyArgs): void {
    switch (a.event) {
      case 'BIND': {
        if (this.byHpasid.has(a.id)) return;
        this.core.get(this.set, a.id, KVM_USER);
        const gpasid = a.spid ?? a.id;
        this.byGpasid.set(gpasid, a.id);
        this.byHpasid.set(a.id, gpasid);
        log.debug({ vm: this.vmName, gpasid, hpasid: a.id }, 'PASID translation entry added');
        return;
      }
      case 'UNBIND':
      case 'FREE':
        if (this.byHpasid.has(a.id)) this.drop(a.id);
        return;
      default:
        return;
    }
  }

  private drop(hpasid: number): void {
    const gpasid = this.byHpasid.get(hpasid)!;
    this.byHpasid.delete(hpasid);
    if (this.byGpasid.get(gpasid) === hpasid) this.byGpasid.delete(gpasid);
    this.core.put(this.set, hpasid, KVM_USER);
    log.debug({ vm: this.vmName, gpasid, hpasid }, 'PASID translation entry removed');
  }
}

/** The host's KVM: one KvmVm per VM. */
export class Kvm extends SetUsers<KvmVm> {
  constructor(core: IoasidCore) {
    super((set, vmName) => new KvmVm(core, set, vmName));
  }
}
