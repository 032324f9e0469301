/**
 * The virtual device composition module (docs/design.md §4; the VDCM of "IOASID Extensions for
 * SIOV", Jacob Pan and Yi L. Liu, LPC 2020): it owns a VM's SIOV
 * assignable device interfaces (ADIs). The guest programs a *guest* PASID into an ADI
 * (mdev_write(gpasid)); the VDCM translates it with find_by_spid on the VM's IOASID set, taking
 * a 'vdcm' reference, and programs the host PASID into the interface (vdev_write(hpasid)). The
 * reference is held while the PASID stays programmed and dropped when it is cleared
 * (mdev_clear / vdev_clear / ioasid_put).
 *
 * A programmed PASID is cleared when: the VM clears it; its ADI is removed; the ID's binding
 * goes away (UNBIND) or the ID is freed (FREE) — the VDCM listens on the set's chain with
 * priority DEVICE, after KVM and the IOMMU (BIND/UNBIND go to KVM and the VDCM, as in Jacob
 * Pan's IOASID extensions for guest SVA).
 *
 * Errors: ENOENT — the ADI is unknown, or no ID of the VM carries that guest PASID (or it is
 * being freed); EEXIST — the ADI already exists.
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import type { IoasidCore, IoasidNotifyArgs, IoasidSet } from '../ioasid/index.js';
import { SetUser, SetUsers } from '../ioasid-users/set-user.js';

const log = childLogger('vdcm');

/** The reference name the VDCM holds IDs under. */
export const VDCM_USER = 'vdcm';

/** One ADI: its programmed guest PASIDs and the host PASIDs they translate to. */
interface AdiState {
  /** Host requester id of the interface. */
  readonly rid: number;
  /** gPASID → hPASID of every programmed PASID. */
  readonly programmed: Map<number, number>;
}

/** One VM's ADIs. */
export class VdcmVm extends SetUser {
  /** Called whenever a programming takes or drops a reference (the owner's snapshot changes). */
  onChange: (() => void) | null = null;
  private readonly adis = new Map<number, AdiState>();

  constructor(core: IoasidCore, set: IoasidSet, vmName: string) {
    super(core, set, vmName, 'DEVICE');
  }

  addAdi(rid: number): void {
    if (this.adis.has(rid)) fail('EEXIST', `ADI ${rid} already exists`);
    this.adis.set(rid, { rid, programmed: new Map() });
  }

  /** Remove an ADI, clearing everything programmed in it. ENOENT: unknown ADI. */
  removeAdi(rid: number): void {
    const adi = this.lookup(rid);
    for (const gpasid of [...adi.programmed.keys()]) this.clearOne(adi, gpasid);
    this.adis.delete(rid);
  }

  /**
   * mdev_write(gpasid): program a guest PASID into the ADI and return the host PASID. Already
   * programmed: the same host PASID, no new reference.
   * ENOENT: unknown ADI, or no live ID of the VM has SPID `gpasid`.
   */
  program(rid: number, gpasid: number): number {
    const adi = this.lookup(rid);
    const cur = adi.programmed.get(gpasid);
    if (cur !== undefined) return cur;
    const hpasid = this.core.findBySpid(this.set, gpasid, VDCM_USER);
    if (hpasid === null) fail('ENOENT', `guest PASID ${gpasid} is not bound for ${this.vmName} (find_by_spid found no host PASID)`);
    adi.programmed.set(gpasid, hpasid);
    this.onChange?.();
    log.debug({ vm: this.vmName, rid, gpasid, hpasid }, 'ADI PASID programmed');
    return hpasid;
  }

  /** mdev_clear(gpasid): drop the programming and its reference. ENOENT: not programmed. */
  clear(rid: number, gpasid: number): void {
    const adi = this.lookup(rid);
    if (!adi.programmed.has(gpasid)) fail('ENOENT', `guest PASID ${gpasid} is not programmed in ADI ${rid}`);
    this.clearOne(adi, gpasid);
  }

  /** The host PASID `gpasid` is programmed to in the ADI, or undefined. */
  programmedHpasid(rid: number, gpasid: number): number | undefined {
    return this.adis.get(rid)?.programmed.get(gpasid);
  }

  /** References the VDCM holds on `hpasid` (one per ADI programming). */
  refsOn(hpasid: number): number {
    let n = 0;
    for (const adi of this.adis.values()) for (const h of adi.programmed.values()) if (h === hpasid) n++;
    return n;
  }

  list(): { rid: number; programmed: { gpasid: number; hpasid: number }[] }[] {
    return [...this.adis.values()].map((a) => ({
      rid: a.rid,
      programmed: [...a.programmed].map(([gpasid, hpasid]) => ({ gpasid, hpasid })),
    }));
  }

  /** Clear every ADI (detach, at VM teardown). */
  protected override releaseAll(): void {
    for (const rid of [...this.adis.keys()]) this.removeAdi(rid);
  }

  private lookup(rid: number): AdiState {
    const adi = this.adis.get(rid);
    if (!adi) fail('ENOENT', `no ADI ${rid} in ${this.vmName}`);
    return adi;
  }

  private clearOne(adi: AdiState, gpasid: number): void {
    const hpasid = adi.programmed.get(gpasid)!;
    adi.programmed.delete(gpasid);
    this.core.put(this.set, hpasid, VDCM_USER);
    this.onChange?.();
    log.debug({ vm: this.vmName, rid: adi.rid, gpasid, hpasid }, 'ADI PASID cleared');
  }

  protected override onEvent(a: IoasidNotifyArgs): void {
    if (a.event !== 'UNBIND' && a.event !== 'FREE') return;
    for (const adi of this.adis.values()) {
      for (const [gpasid, hpasid] of [...adi.programmed]) if (hpasid === a.id) this.clearOne(adi, gpasid);
    }
  }
}

/** The host's VDCM: one VdcmVm per VM. */
export class Vdcm extends SetUsers<VdcmVm> {
  constructor(core: IoasidCore) {
    super((set, vmName) => new VdcmVm(core, set, vmName));
  }
}
