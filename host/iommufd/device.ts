/**
 * Devices bound to an iommufd context and their attachments (drivers/iommu/iommufd/device.c:
 * iommufd_device_attach / _replace / _detach, with and without a PASID).
 *
 * A bound device has a dev_id; its DMA is blocked until its RID, or a RID+PASID, is attached to
 * an IOAS (through an automatic paging HWPT) or to a HWPT. On the host IOMMU:
 *   RID → paging HWPT        attachDevice (PASID entry RID_PASID, PGTT 2)
 *   PASID → paging HWPT      attachPasid (PGTT 2)
 *   PASID → nested HWPT      bindPgtablePasid (PGTT 3, the parent's DID and second level)
 *   RID → nested HWPT        EOPNOTSUPP: the host IOMMU model has no nested RID_PASID entry
 *
 * Rules (errno): a PASID on a device without the PASID capability, PASID 0 (IOMMU_NO_PASID) or
 * one beyond the device's width → EINVAL; a PASID attach to a HWPT allocated without
 * IOMMU_HWPT_ALLOC_PASID, or while the RID is attached to such a HWPT, and a RID attach to such
 * a HWPT while PASIDs are attached → EINVAL (the uAPI header's rule for ALLOC_PASID); ATTACH
 * while attached elsewhere → EINVAL (use REPLACE; ATTACH to the same HWPT again is a success,
 * docs/reliability.md §3); REPLACE or DETACH with nothing attached → EINVAL / ENOENT.
 *
 * PASIDs: iommufd has no system PASID allocator — a PASID attach names a PASID of the device's
 * own PASID table. A device that needs a global PASID (ENQCMD, a SIOV ADI) uses one the VM
 * allocated from its IOASID set (PASID_ALLOC, the IOASID core of Jacob Pan's "IOASID extensions
 * for guest SVA", 2021) and attaches it with GLOBAL_PASID: the attach then holds an 'iommufd'
 * reference on that IOASID (ENOENT when the VM's set does not hold it), so a PASID_FREE while it
 * is attached is deferred until the detach drops the reference.
 */
import { fail } from '../../src/errors.js';
import type { IoasidCore, IoasidSet } from '../ioasid/index.js';
import type { HostIommu } from '../iommu/index.js';
import type { Hwpt, HwptPaging } from './hw-pagetable.js';
import { MSI_WINDOW, type Ioas } from './ioas.js';
import type { IommufdObject } from './object-table.js';

/** The IOASID user name of a global PASID's attachment reference. */
export const IOMMUFD_USER = 'iommufd';

export interface DeviceAttachment {
  hwpt: Hwpt;
  /** A global PASID (holds an IOASID reference). */
  global: boolean;
}

export class IommufdDevice implements IommufdObject {
  readonly kind = 'device' as const;
  users = 0;
  rid: DeviceAttachment | null = null;
  readonly pasids = new Map<number, DeviceAttachment>();
  /** IOASes this device's reserved regions are reserved in, with how many attachments go through each. */
  readonly reservedIn = new Map<Ioas, number>();

  constructor(
    readonly id: number,
    readonly guestRid: number,
    readonly hostRid: number,
    readonly bdf: string,
    readonly pasidBits: number,
    readonly ats: boolean,
    readonly pri: boolean,
  ) {}

  get attachmentCount(): number {
    return (this.rid === null ? 0 : 1) + this.pasids.size;
  }
}

export interface AttachEnv {
  readonly iommu: HostIommu;
  readonly core: IoasidCore;
  readonly set: IoasidSet;
  /** An automatic HWPT that lost its last attachment is destroyed. */
  releaseAuto(h: HwptPaging): void;
}

export function ioasOf(h: Hwpt): Ioas {
  return h.kind === 'hwpt-paging' ? h.ioas : h.parent.ioas;
}

function slot(dev: IommufdDevice, pasid: number | null): DeviceAttachment | null {
  return pasid === null ? dev.rid : dev.pasids.get(pasid) ?? null;
}

/** The checks of attaching `pasid` (null: the RID) of `dev` to `h` that do not depend on what is attached there. */
export function checkTarget(dev: IommufdDevice, pasid: number | null, h: Hwpt, global: boolean, what: string): void {
  if (pasid === null) {
    if (global) fail('EINVAL', `${what}: GLOBAL_PASID without PASID`);
    if (h.kind === 'hwpt-nested') fail('EOPNOTSUPP', `${what}: a nested HWPT is attached per PASID on this host (no nested RID_PASID entry)`);
    if (dev.pasids.size > 0 && !h.pasidCapable) fail('EINVAL', `${what}: PASIDs are attached; the RID's HWPT ${h.id} needs IOMMU_HWPT_ALLOC_PASID`);
    return;
  }
  if (dev.pasidBits === 0) fail('EINVAL', `${what}: device ${dev.bdf} has no PASID capability`);
  if (!Number.isInteger(pasid) || pasid <= 0 || pasid >= 2 ** dev.pasidBits) fail('EINVAL', `${what}: PASID ${pasid} is not in 1..${2 ** dev.pasidBits - 1}`);
  if (!h.pasidCapable) fail('EINVAL', `${what}: HWPT ${h.id} was not allocated with IOMMU_HWPT_ALLOC_PASID`);
  if (dev.rid !== null && !dev.rid.hwpt.pasidCapable) fail('EINVAL', `${what}: the RID is attached to HWPT ${dev.rid.hwpt.id}, allocated without IOMMU_HWPT_ALLOC_PASID`);
}

/** Program the host route of `pasid` (null: RID) of `dev` into `h`. */
function route(env: AttachEnv, dev: IommufdDevice, pasid: number | null, h: Hwpt): void {
  if (h.kind === 'hwpt-paging') {
    if (pasid === null) env.iommu.attachDevice(dev.hostRid, h.domain.did);
    else env.iommu.attachPasid(dev.hostRid, pasid, h.domain.did);
    return;
  }
  if (pasid === null) fail('EOPNOTSUPP', 'nested RID attach');
  env.iommu.bindPgtablePasid(dev.hostRid, pasid, h.parent.domain.did, { flptr: h.s1.flptr, levels: h.s1.levels, sre: h.s1.sre, eafe: h.s1.eafe, wpe: h.s1.wpe });
}

function unroute(env: AttachEnv, dev: IommufdDevice, pasid: number | null, h: Hwpt): void {
  if (pasid === null) env.iommu.detachDevice(dev.hostRid);
  else if (h.kind === 'hwpt-nested') env.iommu.unbindPgtablePasid(dev.hostRid, pasid);
  else env.iommu.detachPasid(dev.hostRid, pasid);
}

function reserve(dev: IommufdDevice, ioas: Ioas, what: string): void {
  const n = dev.reservedIn.get(ioas) ?? 0;
  if (n === 0) ioas.reserve(dev.id, [MSI_WINDOW], what);
  dev.reservedIn.set(ioas, n + 1);
}

function unreserve(dev: IommufdDevice, ioas: Ioas): void {
  const n = (dev.reservedIn.get(ioas) ?? 1) - 1;
  if (n > 0) dev.reservedIn.set(ioas, n);
  else {
    dev.reservedIn.delete(ioas);
    ioas.unreserve(dev.id);
  }
}

/** ENOENT unless the VM's IOASID set holds `pasid` (allocated, not being freed). */
function requireGlobalPasid(env: AttachEnv, pasid: number, what: string): void {
  try {
    env.core.find(env.set, pasid);
  } catch {
    fail('ENOENT', `${what}: PASID ${pasid} is not a global PASID of this VM (PASID_ALLOC it first)`);
  }
}

/** ATTACH `pasid` (null: the RID) of `dev` to `h`. */
export function attach(env: AttachEnv, dev: IommufdDevice, pasid: number | null, h: Hwpt, global: boolean, what: string): void {
  checkTarget(dev, pasid, h, global, what);
  const cur = slot(dev, pasid);
  if (cur !== null) {
    if (cur.hwpt === h && cur.global === global) return;
    fail('EINVAL', `${what}: ${pasid === null ? 'the RID' : `PASID ${pasid}`} of ${dev.bdf} is attached to HWPT ${cur.hwpt.id}; use REPLACE`);
  }
  if (global) requireGlobalPasid(env, pasid!, what);
  const ioas = ioasOf(h);
  reserve(dev, ioas, what);
  try {
    route(env, dev, pasid, h);
  } catch (e) {
    unreserve(dev, ioas);
    throw e;
  }
  if (global) {
    try {
      env.core.get(env.set, pasid!, IOMMUFD_USER);
    } catch (e) {
      unroute(env, dev, pasid, h);
      unreserve(dev, ioas);
      throw e;
    }
  }
  const att = { hwpt: h, global };
  if (pasid === null) dev.rid = att;
  else dev.pasids.set(pasid, att);
  h.users++;
}

/** REPLACE what `pasid` (null: the RID) of `dev` is attached to with `h`; the old route is restored on failure. */
export function replace(env: AttachEnv, dev: IommufdDevice, pasid: number | null, h: Hwpt, global: boolean, what: string): void {
  const cur = slot(dev, pasid);
  if (cur === null) fail('EINVAL', `${what}: ${pasid === null ? 'the RID' : `PASID ${pasid}`} of ${dev.bdf} is not attached; use ATTACH`);
  if (cur.global !== global) fail('EINVAL', `${what}: GLOBAL_PASID differs from the attachment's`);
  checkTarget(dev, pasid, h, global, what);
  if (cur.hwpt === h) return;
  const oldIoas = ioasOf(cur.hwpt);
  const newIoas = ioasOf(h);
  reserve(dev, newIoas, what);
  unroute(env, dev, pasid, cur.hwpt);
  try {
    route(env, dev, pasid, h);
  } catch (e) {
    route(env, dev, pasid, cur.hwpt);
    unreserve(dev, newIoas);
    throw e;
  }
  unreserve(dev, oldIoas);
  const old = cur.hwpt;
  cur.hwpt = h;
  h.users++;
  old.users--;
  if (old.kind === 'hwpt-paging' && old.auto && old.users === 0) env.releaseAuto(old);
}

/** DETACH `pasid` (null: the RID) of `dev`. ENOENT: nothing attached there. */
export function detach(env: AttachEnv, dev: IommufdDevice, pasid: number | null, what: string): void {
  const cur = slot(dev, pasid);
  if (cur === null) fail('ENOENT', `${what}: ${pasid === null ? 'the RID' : `PASID ${pasid}`} of ${dev.bdf} is not attached`);
  unroute(env, dev, pasid, cur.hwpt);
  if (cur.global) env.core.put(env.set, pasid!, IOMMUFD_USER);
  if (pasid === null) dev.rid = null;
  else dev.pasids.delete(pasid);
  unreserve(dev, ioasOf(cur.hwpt));
  const h = cur.hwpt;
  h.users--;
  if (h.kind === 'hwpt-paging' && h.auto && h.users === 0) env.releaseAuto(h);
}
