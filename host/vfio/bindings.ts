/**
 * VfioContainer's BIND_GPASID / UNBIND_GPASID (VFIO_IOMMU_NESTING_OP_BIND_PGTBL / UNBIND_PGTBL of
 * the VFIO SVA uAPI, Yi L. Liu 2019–2020): a guest first-level table bound to a host PASID,
 * nested over the VM's GPA domain, with its reference counts and notifications (Jacob Pan and
 * Yi L. Liu, "IOASID Extensions for SIOV", LPC 2020): the first nested binding of a PASID takes
 * an 'iommu' reference per device route, attaches its SPID (the guest PASID, with GPASID_VAL)
 * and fires BIND, on which KVM takes its reference; the last unbind fires UNBIND and detaches
 * the SPID.
 *
 * A PASID freed while routes exist (the guest freed before unbinding) has its routes torn down
 * by the container's FREE notifier (priority IOMMU), which puts their references; the SPID stays
 * until the ID is reclaimed (detach_spid is not allowed in a FREE handler).
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { IOMMU_SVA_VTD_GPASID, type GpasidBindRequest } from '../../vhost/messages/pasid.js';
import type { IoasidNotifier, IoasidNotifyArgs } from '../ioasid/index.js';
import type { BindPgtableOptions } from '../iommu/index.js';
import type { DmaTestDevice } from '../devices/dma-device.js';
import { GPA_DOMAIN, IOMMU_USER, type ContainerEnv, type PasidRoute } from './container-state.js';
import { ContainerPasidRequests } from './pasid-requests.js';
import { checkBindData } from './uapi.js';

const log = childLogger('vfio');

export abstract class ContainerBindings extends ContainerPasidRequests {
  protected readonly notifier: IoasidNotifier;

  constructor(env: ContainerEnv) {
    super(env);
    this.notifier = { priority: 'IOMMU', call: (a) => this.onIoasidEvent(a) };
    env.core.registerNotifier(env.set, this.notifier);
  }

  /** VFIO_IOMMU_NESTING_OP_BIND_PGTBL. */
  bind(req: GpasidBindRequest): void {
    const b = checkBindData(req, 'BIND_GPASID', this.fl5lp);
    const dev = this.device(req.rid);
    this.checkDevicePasid(dev, b.hpasid);
    this.requireLivePasid(b.hpasid);
    const cur = this.routes.get(b.hpasid)?.get(dev.guestRid);
    const bindKey = `${b.gpgd}:${b.levels}:${b.vtdFlags}:${b.pat}:${b.emt}:${b.gpasid}`;
    if (cur?.kind === 'nested' && cur.bindKey === bindKey) return; // identical re-BIND: done
    if (cur?.kind === 'nested') fail('EEXIST', `PASID ${b.hpasid} is already bound on ${dev.bdf}`);
    if (cur) fail('EBUSY', `PASID ${b.hpasid} of ${dev.bdf} is attached to domain ${cur.domain}; detach it first`);
    const core = this.core;
    const nested = this.hasNestedRoute(b.hpasid);
    const spid = core.spidOf(b.hpasid);
    if (nested) {
      if (spid !== b.gpasid) fail('EINVAL', `BIND_GPASID: PASID ${b.hpasid} is bound with guest PASID ${spid ?? 'none'}, not ${b.gpasid ?? 'none'}`);
    } else if (b.gpasid !== null) {
      const other = core.findBySpid(this.set, b.gpasid);
      if (other !== null && other !== b.hpasid) fail('EINVAL', `BIND_GPASID: guest PASID ${b.gpasid} already maps to host PASID ${other}`);
    }
    const flag = (f: bigint): boolean => (b.vtdFlags & f) !== 0n;
    const fl: BindPgtableOptions = {
      flptr: b.gpgd,
      levels: b.levels,
      sre: flag(IOMMU_SVA_VTD_GPASID.SRE),
      eafe: flag(IOMMU_SVA_VTD_GPASID.EAFE),
      pcd: flag(IOMMU_SVA_VTD_GPASID.PCD),
      pwt: flag(IOMMU_SVA_VTD_GPASID.PWT),
      emte: flag(IOMMU_SVA_VTD_GPASID.EMTE),
      cd: flag(IOMMU_SVA_VTD_GPASID.CD),
      wpe: flag(IOMMU_SVA_VTD_GPASID.WPE),
      pat: b.pat,
      emt: b.emt,
      // The guest's first-level table honours XD (x86 EFER.NXE is always on for 64-bit guests).
      nxe: true,
      ere: true,
    };
    const gpa = this.domains.get(GPA_DOMAIN)!;
    // Mutations: the IOMMU bind (checks its own input first), then the reference, SPID, BIND.
    this.iommuCall(() => this.iommu.bindPgtablePasid(dev.hostRid, b.hpasid, gpa.did, fl));
    try {
      core.get(this.set, b.hpasid, IOMMU_USER);
    } catch (e) {
      this.iommu.unbindPgtablePasid(dev.hostRid, b.hpasid);
      throw e;
    }
    this.setRoute(b.hpasid, dev.guestRid, { kind: 'nested', domain: GPA_DOMAIN, flptrHex: `0x${b.gpgd.toString(16)}`, bindKey });
    if (!nested) {
      if (b.gpasid !== null) core.attachSpid(this.set, b.hpasid, b.gpasid);
      core.notify(b.hpasid, 'BIND', { rid: dev.guestRid });
    }
    this.counters.binds++;
    this.emit('bind', 'BIND_GPASID', { bdf: dev.bdf, hpasid: b.hpasid, gpasid: b.gpasid, flptr: `0x${b.gpgd.toString(16)}` });
  }

  /** VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL (uses hpasid). */
  unbind(req: GpasidBindRequest): void {
    const b = checkBindData(req, 'UNBIND_GPASID', this.fl5lp, true);
    const dev = this.device(req.rid);
    this.requirePasid(b.hpasid);
    const cur = this.routes.get(b.hpasid)?.get(dev.guestRid);
    if (!cur || cur.kind !== 'nested') fail('ENOENT', `PASID ${b.hpasid} is not bound on ${dev.bdf}`);
    this.releaseRoute(b.hpasid, dev, cur, true);
    this.counters.unbinds++;
    this.emit('unbind', 'UNBIND_GPASID', { bdf: dev.bdf, hpasid: b.hpasid });
  }

  /**
   * Undo route `r` of `dev` at `pasid`: unbind or detach it in the IOMMU, forget it, put its
   * 'iommu' reference. With `notify`, the last nested binding of the PASID fires UNBIND and
   * detaches the SPID (what unbind and teardown do; a FREE handler must not).
   */
  protected releaseRoute(pasid: number, dev: DmaTestDevice, r: PasidRoute, notify: boolean): void {
    if (r.kind === 'nested') this.iommu.unbindPgtablePasid(dev.hostRid, pasid);
    else this.iommu.detachPasid(dev.hostRid, pasid);
    this.deleteRoute(pasid, dev.guestRid);
    if (notify && r.kind === 'nested' && !this.hasNestedRoute(pasid)) {
      this.core.notify(pasid, 'UNBIND', { rid: dev.guestRid });
      if (this.core.spidOf(pasid) !== null) this.core.detachSpid(this.set, pasid);
    }
    this.core.put(this.set, pasid, IOMMU_USER);
  }

  /** FREE of a PASID that still has routes: tear them down and put their references. */
  private onIoasidEvent(a: IoasidNotifyArgs): void {
    if (a.event !== 'FREE' || a.set !== this.set) return;
    const rs = this.routes.get(a.id);
    if (!rs) return;
    for (const [rid, r] of [...rs]) this.releaseRoute(a.id, this.devices.get(rid)!, r, false);
    log.debug({ vm: this.vmName, pasid: a.id }, 'freed PASID had routes; torn down');
  }
}
