/**
 * The VFIO-style container of one VM (docs/design.md §4, "Container per VM"; the VFIO SVA uAPI
 * of Yi L. Liu's "vfio: support Shared Virtual Addressing" series, 2019, with Linux's errno
 * conventions): PASID_REQUEST (alloc / free of a range, charged to the VM's IOASID set),
 * BIND/UNBIND of guest first-level tables nested over the VM's GPA domain, CACHE_INVALIDATE
 * arrays, DMA_MAP/UNMAP, devices and their attachments, nesting info, page responses and the
 * test devices' DMA. It calls HostIommu directly.
 *
 * VfioContainer is one object whose parts live in one file per concern, each part a class
 * extending the one before, so every uAPI entry keeps its one name:
 *   container-state.ts   state (devices, domains and mappings, PASID routes, counters), lookups
 *   pasid-requests.ts    PASID_ALLOC / PASID_FREE
 *   bindings.ts          BIND_GPASID / UNBIND_GPASID, the FREE notifier
 *   cache-invalidate.ts  CACHE_INVALIDATE
 *   dma-map.ts           DOMAIN_ALLOC / DOMAIN_FREE, DMA_MAP / DMA_UNMAP
 *   container.ts         devices, ATTACH / DETACH, nesting info, page responses, DEVICE_DMA,
 *                        state for the snapshot, teardown
 *
 * Everything the container is given uses the guest's names (guest RIDs, container-local domain
 * ids, host PASIDs the VM owns); below it only host RIDs, host DIDs and host PASIDs exist.
 * Domain 0 is the VM's GPA domain (second level GPA → HPA), created with the container.
 *
 * Rules every call follows: check, then mutate; roll back partial work; nothing of another VM is
 * reachable — a host PASID of another VM (or none) is ENOENT, a GPA outside the memory table is
 * EFAULT, a device or domain of another VM does not exist for this one (ENOENT).
 *
 * Reference counts: a nested binding or a RID+PASID attachment holds one 'iommu' reference per
 * device route (bindings.ts says when BIND / UNBIND fire).
 *
 * Caps on guest-controlled growth (ENOSPC past them): MAX_DEVICES devices, MAX_DOMAINS domains,
 * MAX_MAPPINGS DMA mappings per VM.
 *
 * Duplicates are successes (docs/reliability.md §3: a front-end may resend a request after a
 * reconnect without knowing whether the first one took effect): BIND_GPASID of a binding
 * identical to the one in place (same device, PASID, guest PASID, table, width and flags),
 * ATTACH of a RID to the domain it is attached to or of a RID+PASID to the domain and PGTT it
 * is attached with, and DMA_MAP of a mapping identical to an existing one (same domain, iova,
 * size, gpa, flags) change nothing and return 0. A different request for the same object keeps
 * its error (EEXIST / EBUSY).
 */
import { fail } from '../../src/errors.js';
import { formatBdf } from '../../src/pci.js';
import type { DeviceKind, PasidBindingSnapshot } from '../../src/api/types.js';
import { ATTACH_PASID_VALID, AttachPgtt, DeviceCap, DeviceKind as WireDeviceKind, IOMMU_NESTING_FEAT, type AttachRequest, type DeviceAddRequest, type NestingInfo } from '../../vhost/messages/device.js';
import { DeviceConfigFlag, type DeviceConfigRequest } from '../../vhost/messages/device-config.js';
import { IOMMU_PASID_FORMAT_INTEL_VTD } from '../../vhost/messages/pasid.js';
import { PAGE_RESPONSE_PASID_VALID, type PageResponseRequest } from '../../vhost/messages/page.js';
import type { DeviceDmaReply, DeviceDmaRequest } from '../../vhost/messages/device-dma.js';
import { DmaTestDevice, type DeviceCaps } from '../devices/dma-device.js';
import { GPA_DOMAIN, IOMMU_USER } from './container-state.js';
import { ContainerDmaMap } from './dma-map.js';
import { sliceTimer } from './slice-budget.js';

export { GPA_DOMAIN, IOMMU_USER, type ContainerCounters, type ContainerEnv } from './container-state.js';
export { MAX_DOMAINS, MAX_MAPPINGS } from './dma-map.js';
export const MAX_DEVICES = 32;
/**
 * PASID routes one release step undoes at most before the host yields (0.12–0.3 ms at today's
 * warm cost of a route: IOMMU unbind with its PASID-cache and IOTLB flushes, UNBIND
 * notification, put); a step also ends once it has run SLICE_BUDGET_MS (slice-budget.ts).
 */
export const RELEASE_STEP_ROUTES = 32;

export class VfioContainer extends ContainerDmaMap {

  // ------------------------------------------------------------------ devices

  /** DEVICE_ADD: a test device of this VM, attached (RID) to the GPA domain. */
  deviceAdd(r: DeviceAddRequest): void {
    if (this.devices.has(r.rid)) fail('EEXIST', `DEVICE_ADD: device ${formatBdf(r.rid)} already exists`);
    if (this.devices.size >= MAX_DEVICES) fail('ENOSPC', `DEVICE_ADD: ${this.vmName} has ${MAX_DEVICES} devices (the cap)`);
    const kind: DeviceKind = r.kind === WireDeviceKind.ADI ? 'adi' : 'pf';
    const caps: DeviceCaps = { pasidBits: r.pasid_width, ats: (r.caps & DeviceCap.ATS) !== 0, pri: (r.caps & DeviceCap.PRI) !== 0 };
    if (kind === 'adi' && caps.pasidBits === 0) fail('EINVAL', 'DEVICE_ADD: an ADI needs the PASID capability');
    const bdf = formatBdf(r.rid);
    const hostRid = this.env.allocHostRid();
    const gpa = this.domains.get(GPA_DOMAIN)!;
    let step = 0;
    try {
      // ATS starts disabled: the guest enables it (DEVICE_CONFIG ATS_ENABLE → setAtsEnabled).
      this.iommu.addDevice({ rid: hostRid, name: `${this.vmName} ${bdf}`, pasidBits: caps.pasidBits, ats: caps.ats, atsEnabled: false, pri: caps.pri });
      step = 1;
      this.iommu.attachDevice(hostRid, gpa.did);
      step = 2;
      if (kind === 'adi') this.vdcm.addAdi(r.rid);
    } catch (e) {
      if (step >= 2) this.iommu.detachDevice(hostRid);
      if (step >= 1) this.iommu.removeDevice(hostRid);
      this.env.freeHostRid(hostRid);
      throw e;
    }
    gpa.rids.add(r.rid);
    this.devices.set(r.rid, new DmaTestDevice(kind, r.rid, hostRid, bdf, caps, this));
  }

  /** DEVICE_CONFIG: PRI / ATS enables. EINVAL: an enable without its capability. */
  deviceConfig(r: DeviceConfigRequest): void {
    const dev = this.device(r.rid);
    const pri = (r.flags & DeviceConfigFlag.PRI_ENABLE) !== 0;
    const ats = (r.flags & DeviceConfigFlag.ATS_ENABLE) !== 0;
    if (pri && !dev.caps.pri) fail('EINVAL', `DEVICE_CONFIG: ${dev.bdf} has no PRI capability`);
    if (ats && !dev.caps.ats) fail('EINVAL', `DEVICE_CONFIG: ${dev.bdf} has no ATS capability`);
    dev.priEnabled = pri;
    if (dev.caps.ats) this.iommu.setAtsEnabled(dev.hostRid, ats);
    dev.atsEnabled = ats;
  }

  /**
   * ATTACH a RID (requests without PASID) or a RID+PASID to a domain. A guest's pass-through
   * PASID (PGTT 4) means "untranslated = GPA": on the host that is second level through the VM's
   * GPA domain, never host pass-through — so it needs domain 0, and both PGTTs attach second level.
   */
  attach(r: AttachRequest): void {
    const dev = this.device(r.rid);
    const d = this.domain(r.domain);
    if ((r.flags & ATTACH_PASID_VALID) === 0) {
      const curr = this.ridDomain(dev.guestRid);
      if (curr === d) return; // attached there already: done
      if (curr !== undefined) fail('EBUSY', `ATTACH: ${dev.bdf} is attached to domain ${curr.id}; detach it first`);
      this.iommu.attachDevice(dev.hostRid, d.did);
      d.rids.add(dev.guestRid);
      return;
    }
    const pasid = r.pasid;
    this.checkDevicePasid(dev, pasid);
    this.requireLivePasid(pasid);
    const passThrough = r.pgtt === AttachPgtt.PASS_THROUGH;
    if (passThrough && d.id !== GPA_DOMAIN) fail('EINVAL', 'ATTACH: pass-through (pgtt 4) means GPA = IOVA and needs domain 0');
    const kind: PasidBindingSnapshot['pgtt'] = passThrough ? 'pt' : 'sl';
    const cur = this.routes.get(pasid)?.get(dev.guestRid);
    if (cur && cur.kind === kind && cur.domain === d.id) return; // attached so already: done
    if (cur) fail('EBUSY', `ATTACH: PASID ${pasid} of ${dev.bdf} is already ${cur.kind === 'nested' ? 'bound' : `attached to domain ${cur.domain}`}`);
    this.iommuCall(() => this.iommu.attachPasid(dev.hostRid, pasid, d.did));
    try {
      this.core.get(this.set, pasid, IOMMU_USER);
    } catch (e) {
      this.iommu.detachPasid(dev.hostRid, pasid);
      throw e;
    }
    this.setRoute(pasid, dev.guestRid, { kind, domain: d.id });
  }

  /** DETACH what ATTACH made. ENOENT: not attached there; EINVAL: a nested binding (use UNBIND_GPASID). */
  detach(r: AttachRequest): void {
    const dev = this.device(r.rid);
    const d = this.domain(r.domain);
    if ((r.flags & ATTACH_PASID_VALID) === 0) {
      if (!d.rids.has(dev.guestRid)) fail('ENOENT', `DETACH: ${dev.bdf} is not attached to domain ${d.id}`);
      this.iommu.detachDevice(dev.hostRid);
      d.rids.delete(dev.guestRid);
      return;
    }
    const pasid = r.pasid;
    this.requirePasid(pasid);
    const cur = this.routes.get(pasid)?.get(dev.guestRid);
    if (!cur || cur.domain !== d.id) fail('ENOENT', `DETACH: PASID ${pasid} of ${dev.bdf} is not attached to domain ${d.id}`);
    if (cur.kind === 'nested') fail('EINVAL', `DETACH: PASID ${pasid} of ${dev.bdf} is a nested binding; use UNBIND_GPASID`);
    this.releaseRoute(pasid, dev, cur, false);
  }

  /** GET_NESTING_INFO (iommu_nesting_info of Yi L. Liu's "iommu: Report domain nesting info"). */
  nestingInfo(): NestingInfo {
    const { cap, ecap } = this.iommu.capabilities();
    return {
      format: IOMMU_PASID_FORMAT_INTEL_VTD,
      features: IOMMU_NESTING_FEAT.SYSWIDE_PASID | IOMMU_NESTING_FEAT.BIND_PGTBL | IOMMU_NESTING_FEAT.CACHE_INVLD | IOMMU_NESTING_FEAT.PAGE_RESP,
      addr_width: this.iommu.haw,
      pasid_bits: this.core.pasidBits,
      cap_reg: cap,
      ecap_reg: ecap,
    };
  }

  /** PAGE_RESPONSE: complete the device's outstanding page request. ENOENT: unknown device; EINVAL: nothing matches. */
  pageResponse(r: PageResponseRequest): void {
    const dev = this.device(r.rid);
    const pasid = (r.flags & PAGE_RESPONSE_PASID_VALID) !== 0 ? r.pasid : null;
    this.channel.pageRequests.respond(dev.guestRid, pasid, r.grpid, r.code);
  }

  /** DEVICE_DMA: one DMA by a test device; a promise only while it waits for a page response. */
  /** `into`: where a READ stores its bytes (DEVICE_DMA's staged data; host/server/staged-dma.ts). */
  deviceDma(r: DeviceDmaRequest, into?: Uint8Array): DeviceDmaReply | Promise<DeviceDmaReply> {
    return this.device(r.rid).dma(r, into);
  }

  // ------------------------------------------------------------------ state

  /** The bindings/attachments of `hpasid` for the snapshot. */
  bindingsOf(hpasid: number): PasidBindingSnapshot[] {
    const rs = this.routes.get(hpasid);
    if (!rs) return [];
    const out: PasidBindingSnapshot[] = [];
    const rids = rs.size === 1 ? rs.keys() : [...rs.keys()].sort((a, b) => a - b);
    for (const rid of rids) {
      const r = rs.get(rid)!;
      const b: PasidBindingSnapshot = { bdf: this.devices.get(rid)?.bdf ?? formatBdf(rid), pgtt: r.kind };
      if (r.flptrHex !== undefined) b.flptr = r.flptrHex;
      out.push(b);
    }
    return out;
  }

  listDevices(): { bdf: string; kind: DeviceKind; hostBdf: string; pri: boolean; ats: boolean }[] {
    return [...this.devices.values()]
      .sort((a, b) => a.guestRid - b.guestRid)
      .map((d) => ({ bdf: d.bdf, kind: d.kind, hostBdf: formatBdf(d.hostRid), pri: d.priEnabled, ats: d.atsEnabled }));
  }

  listDomains(): { id: number; did: number; mappings: number; mappedBytes: number; rids: string[] }[] {
    return [...this.domains.values()].map((d) => ({
      id: d.id,
      did: d.did,
      mappings: d.mappings.length,
      mappedBytes: d.mappings.reduce((n, m) => n + m.size, 0),
      rids: [...d.rids].sort((a, b) => a - b).map(formatBdf),
    }));
  }

  get mappings(): number {
    return this.mappingCount;
  }

  /**
   * Release everything (VM teardown), in dependency order: PASID routes (with their references
   * and UNBIND notifications), RID attachments, devices, mappings, domains, the notifier.
   * PASIDs themselves are freed by the caller (free_all_in_set). Idempotent; finishes a
   * release that `releaseSteps` started.
   */
  close(): void {
    const steps = this.releaseSteps();
    while (!steps.next().done);
  }

  /**
   * `close()` in bounded steps, for a caller that yields to other VMs between them (VM release,
   * docs/protocol.md "Disconnect"): each `next()` releases at most RELEASE_STEP_ROUTES PASID
   * routes (fewer once the step has run SLICE_BUDGET_MS), or one device, or one domain. From
   * the first step on the container counts as released: a sliced DMA_UNMAP in progress stops
   * (ENOTCONN). The steps are shared: calling
   * `releaseSteps()` or `close()` again continues the same release.
   */
  releaseSteps(): Generator<void, void, void> {
    this.release ??= this.releaseGen();
    return this.release;
  }

  private release: Generator<void, void, void> | null = null;

  private *releaseGen(): Generator<void, void, void> {
    this.released = true;
    let n = 0;
    const step = sliceTimer();
    for (const pasid of [...this.routes.keys()]) {
      // Routes released by an earlier step (a FREE notifier) or meanwhile are gone from the map;
      // the first remaining route of the PASID is taken each time (no per-PASID copies: a
      // release allocates little, docs/performance.md "Where the release's long turns were").
      for (let m = this.routes.get(pasid); m !== undefined && m.size > 0; m = this.routes.get(pasid)) {
        const rid: number = m.keys().next().value!;
        this.releaseRoute(pasid, this.devices.get(rid)!, m.get(rid)!, true);
        if (++n === RELEASE_STEP_ROUTES || step.spent()) {
          n = 0;
          yield;
          step.restart();
        }
      }
    }
    for (const dev of [...this.devices.values()]) {
      yield;
      const d = this.ridDomain(dev.guestRid);
      if (d) {
        this.iommu.detachDevice(dev.hostRid);
        d.rids.delete(dev.guestRid);
      }
      this.iommu.removeDevice(dev.hostRid);
      this.env.freeHostRid(dev.hostRid);
      this.devices.delete(dev.guestRid);
    }
    for (const d of [...this.domains.values()]) {
      yield;
      this.releaseDomain(d.did);
      this.mappingCount -= d.mappings.length;
      this.domains.delete(d.id);
    }
    this.mappingCount = 0;
    if (this.core.isSetValid(this.set)) this.core.unregisterNotifier(this.set, this.notifier);
  }
}
