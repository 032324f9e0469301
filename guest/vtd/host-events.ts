/**
 * What the host reports to a VT-d guest (the backend channel, docs/protocol.md §10.11–§10.13),
 * and the PASIDs a device is seen with.
 *
 * - FAULT → a fault record (fault-recorder.ts) with the guest's own fault reason and FPD
 *   (`guestVerdict`): the host only knows what the model forwarded, so where the guest's
 *   structures are what fails, their reason is the one recorded — an invalid entry the model
 *   left unbound (its 0x5a / 0x5b, a context or RID_PASID fault); for a PASID the shadow does
 *   not hold, the guest's own context / directory / table walk (tables.ts
 *   `pasidRequestVerdict`: 0x45 PASIDE clear, 0x46 beyond PDTS, 0x50–0x52 directory entry,
 *   0x58–0x5b table entry); under an SL-shadowed entry, the reason of the guest SL entry the
 *   shadow skipped (sl-shadow.ts: 0x7a reserved bit, 0x78 table outside RAM). FPD of the
 *   context, directory or table entry suppresses the qualified reasons (VT-d spec §7.1.3).
 * - PAGE_REQUEST → the page request queue (page-request-queue.ts), or an automatic page
 *   response when the IOMMU does not take page requests from the device (context PRE clear),
 *   the queue is not configured, or it overflowed on the last request of a group (VT-d spec
 *   §7.4.1 "Handling of Page Requests": the IOMMU answers such a group itself).
 * - PASID_FREED → the VCMD view and the PASID shadow forget the PASID.
 *
 * PASIDs: with VCMD a guest PASID is the host PASID (identity). With `vcmd: false` the model
 * maps each bound guest PASID to a host PASID of its own (guest-private-pasids.ts): a pf device
 * is programmed with the host PASID (`devicePasid`), so the PASID of its faults and page requests
 * is translated back to the guest PASID here, and page responses go out with the PASID the host
 * reported. An adi is programmed with the guest PASID and reports it (the host VDCM translates
 * with find_by_spid), so nothing is translated for it.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { FaultReason, FaultRequestType, isQualifiedFault } from '../../src/vtd/fault.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { FaultFlag, PageRequestFlag, type FaultMessage, type PageRequestMessage } from '../../vhost/messages/backend.js';
import { IOMMU_PAGE_RESP } from '../../vhost/messages/page.js';
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { GuestDevice } from '../viommu.js';
import type { HostUapi } from '../uapi/host-uapi.js';
import type { ContextCache } from './context-cache.js';
import type { FaultRecorder } from './fault-recorder.js';
import type { GuestPrivatePasids } from './guest-private-pasids.js';
import type { PageRequestQueue } from './page-request-queue.js';
import type { PasidShadow } from './pasid-shadow.js';
import { pasidRequestVerdict } from './tables.js';
import type { VirtualCommands } from './virtual-commands.js';

/** How page requests are answered on the guest's behalf (used by the invalidation handler too). */
export interface PageResponder {
  /** Answer a page request group without the guest (queue full, no queue, PRE clear). */
  respondToHost(m: PageRequestMessage, code: number): void;
  /** The PASID to answer a page request with: the one the host reported it with. */
  reportedPasid(m: PageRequestMessage): number;
}

export class HostEvents implements PageResponder {
  /** devicePasid's stand-in for an unbound guest PASID whose value is a host PASID. */
  private unboundAlias = { hpasid: -1, gpasid: -1 };
  /** Page requests delivered to the guest with a translated PASID → the PASID the host reported. */
  private readonly hostReportedPasid = new WeakMap<PageRequestMessage, number>();

  constructor(
    private readonly devices: readonly GuestDevice[],
    /** Guest-private PASIDs (no VCMD), else null (identity). */
    private readonly privatePasids: GuestPrivatePasids | null,
    private readonly vcmd: VirtualCommands | null,
    private readonly shadow: PasidShadow,
    private readonly contexts: ContextCache,
    private readonly faults: FaultRecorder,
    private readonly pageRequests: PageRequestQueue,
    private readonly uapi: HostUapi,
    private readonly ram: GuestRam,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  onBackendMessage(ev: BackendEvent): void {
    switch (ev.name) {
      case 'FAULT':
        this.hostFault(ev.msg);
        break;
      case 'PAGE_REQUEST':
        this.hostPageRequest(ev.msg);
        break;
      case 'PASID_FREED': {
        // Guest-private: the host freed the host PASID of a guest PASID; the shadow knows the latter.
        const g = this.privatePasids === null ? ev.msg.pasid : this.privatePasids.forget(ev.msg.pasid);
        this.vcmd?.hostFreed(ev.msg.pasid);
        if (g !== undefined) void this.shadow.pasidFreed(g);
        this.trace.emit({ kind: 'free', side: 'guest', vm: this.vm, name: 'host freed PASID', args: { pasid: ev.msg.pasid, reason: ev.msg.reason } });
        break;
      }
    }
  }

  /**
   * The PASID a pf device is programmed with for guest PASID `gpasid` (ViommuModel.devicePasid):
   * identity with VCMD; without VCMD the host PASID the model allocated for it. A guest PASID
   * with no host PASID (not bound) is programmed as is unless that value is one of the VM's host
   * PASIDs — then as the highest PASID that is not, so the DMA cannot reach another guest PASID's
   * tables; either way the host has no PASID entry for it and the DMA faults (reported back as
   * `gpasid`). An adi is programmed with the guest PASID (the VDCM translates it).
   */
  devicePasid(rid: number, gpasid: number): number {
    const pp = this.privatePasids;
    if (pp === null || !this.isPf(rid)) return gpasid;
    const h = pp.hostOf(gpasid);
    if (h !== undefined) return h;
    if (pp.guestOf(gpasid) === undefined) return gpasid;
    let v = PASID_MAX;
    while (pp.guestOf(v) !== undefined) v--;
    this.unboundAlias = { hpasid: v, gpasid };
    return v;
  }

  /** The fault reason the guest sees for a DMA fault the host reported (`guestVerdict`). */
  dmaFaultReason(rid: number, pasid: number | undefined, hostReason: number, addr?: bigint): number {
    return this.guestVerdict(rid, pasid ?? null, hostReason, addr).reason;
  }

  /**
   * The guest's reason for a fault the host reported on a request of device `rid` (with guest
   * PASID `pasid`, or null) at `addr`, and whether FPD suppresses its recording.
   */
  private guestVerdict(rid: number, pasid: number | null, hostReason: number, addr: bigint | undefined): { reason: number; fpd: boolean } {
    const e = this.shadow.get(rid, pasid);
    const c = this.contexts.peek(rid);
    const ctxFpd = c.ok && c.value.fpd;
    if (e !== undefined) {
      let reason = hostReason;
      if (e.binding.kind === 'invalid') reason = e.binding.reason;
      else if (addr !== undefined) reason = this.shadow.slFaultReason(e, addr) ?? hostReason;
      return { reason, fpd: (e.fpd || ctxFpd) && isQualifiedFault(reason) };
    }
    if (pasid === null) return { reason: hostReason, fpd: ctxFpd };
    // No scalable-mode root table latched yet: nothing of the guest's to walk, the host's reason stands.
    if (!c.ok) return { reason: c.reason === FaultReason.RTA_1_INVALID_ROOT_TABLE_ADDRESS ? hostReason : c.reason, fpd: false };
    const v = pasidRequestVerdict(this.ram, c.value, pasid);
    if (v.reason === null) return { reason: hostReason, fpd: v.fpd };
    return { reason: v.reason, fpd: v.fpd && isQualifiedFault(v.reason) };
  }

  reportedPasid(m: PageRequestMessage): number {
    return this.hostReportedPasid.get(m) ?? m.pasid;
  }

  respondToHost(m: PageRequestMessage, code: number): void {
    const pp = (m.flags & PageRequestFlag.PASID_VALID) !== 0;
    // Not awaited: the host may wait for this backend message's ack before answering.
    this.uapi
      .pageResponse({ rid: m.rid, pasid: pp ? this.reportedPasid(m) : null, prgi: m.prgi, code })
      .catch((e: unknown) => this.log.warn({ err: e, rid: m.rid }, 'automatic PAGE_RESPONSE refused by the host'));
    this.trace.emit({ kind: 'page-response', side: 'guest', vm: this.vm, name: 'automatic page response', args: { rid: m.rid, prgi: m.prgi, code } });
  }

  private isPf(rid: number): boolean {
    return this.devices.some((d) => d.rid === rid && d.kind === 'pf');
  }

  /** The guest PASID behind a PASID the host reported for device `rid`. */
  private guestPasidOf(rid: number, pasid: number): number {
    const pp = this.privatePasids;
    if (pp === null || !this.isPf(rid)) return pasid;
    const g = pp.guestOf(pasid);
    if (g !== undefined) return g;
    return pasid === this.unboundAlias.hpasid ? this.unboundAlias.gpasid : pasid;
  }

  private hostFault(m: FaultMessage): void {
    const hasPasid = (m.flags & FaultFlag.PASID_VALID) !== 0;
    const pasid = hasPasid ? this.guestPasidOf(m.rid, m.pasid) : null;
    const { reason, fpd } = this.guestVerdict(m.rid, pasid, m.reason, m.addr);
    this.faults.record(
      {
        addr: m.addr,
        sid: m.rid,
        reason,
        type: (m.flags & FaultFlag.WRITE) !== 0 ? FaultRequestType.WRITE : FaultRequestType.READ,
        ...(pasid !== null ? { pasid } : {}),
        priv: (m.flags & FaultFlag.PRIV) !== 0,
        exe: (m.flags & FaultFlag.EXEC) !== 0,
      },
      fpd,
    );
  }

  private hostPageRequest(hm: PageRequestMessage): void {
    let m = hm;
    if ((hm.flags & PageRequestFlag.PASID_VALID) !== 0) {
      const g = this.guestPasidOf(hm.rid, hm.pasid);
      if (g !== hm.pasid) {
        m = { ...hm, pasid: g };
        this.hostReportedPasid.set(m, hm.pasid);
      }
    }
    const c = this.contexts.peek(m.rid);
    if (!(c.ok && c.value.pre)) {
      // PRE clear: the IOMMU does not accept page requests from this device.
      this.respondToHost(m, IOMMU_PAGE_RESP.INVALID);
      return;
    }
    const out = this.pageRequests.deliver(m);
    if (out === 'overflow' && (m.flags & PageRequestFlag.LPIG) !== 0) this.respondToHost(m, IOMMU_PAGE_RESP.SUCCESS);
    else if (out === 'not-configured') this.respondToHost(m, IOMMU_PAGE_RESP.INVALID);
  }
}
