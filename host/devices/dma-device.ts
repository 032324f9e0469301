/**
 * DMA test devices (docs/design.md §4, "DMA test devices"): an assigned device that performs one
 * read or write when the guest asks (DEVICE_DMA), through the host IOMMU's translation engine
 * into host memory.
 *
 * PASID handling by kind:
 * - 'pf'  tags the request with the PASID as programmed: a host PASID of this VM (identity
 *         allocation through VCMD; a VMM with guest-private PASIDs programs the pf with the
 *         host PASID, so the guest half translates before sending).
 * - 'adi' a SIOV interface: the guest programs a guest PASID, which the VDCM translates with
 *         find_by_spid (and holds a 'vdcm' reference while programmed). An ADI's DMA always
 *         carries a PASID (EINVAL otherwise).
 * A PASID with no host PASID of this VM behind it — another VM's, unallocated, being freed, or
 * (ADI) a guest PASID no bound ID carries — has no entry in the device's PASID table, so the
 * request ends as the IOMMU ends it on hardware: a translation fault, reason 0x59 (SPT.2,
 * PASID-table entry not present) at the request's address, with the PASID as the guest gave
 * it; FAULT goes on the backend channel and no page request is made even with PRI enabled
 * (there is no PASID entry to fault a page into). Nothing is translated, so no other VM's memory
 * is reached. Malformed requests stay errors: a PASID on a device without the PASID capability,
 * an ADI request without PASID (EINVAL).
 *
 * Faults: with PRI disabled, a translation fault is reported as FAULT on the backend channel
 * and returned in the DMA reply. With PRI enabled (DEVICE_CONFIG PRI_ENABLE), the translation is
 * an ATS request that records no fault; the device sends PAGE_REQUEST and waits for the
 * matching PAGE_RESPONSE (or the timeout): SUCCESS → the access is retried once; INVALID,
 * FAILURE, timeout, or a failed retry → the DMA fails with the fault in the reply. A host
 * physical address that no memory backs (reason 0) is never a page request.
 *
 * The DMA path has one request and one fault shape: the device builds one TranslationRequest
 * from the DEVICE_DMA request, HostIommu answers with an IommuFault on a fault, and the device
 * turns that record into the DEVICE_DMA reply, the FAULT message and the PAGE_REQUEST. `dma`
 * returns the reply itself; only a DMA that must wait for a page response returns a promise.
 *
 * PASIDs the guest sees in FAULT / PAGE_REQUEST / the reply are the ones it used: the guest
 * PASID for an ADI, the programmed PASID for a pf.
 *
 * ATS: only while the guest has ATS enabled (DEVICE_CONFIG ATS_ENABLE → the IOMMU device's ATS
 * Enable, HostIommu.setAtsEnabled) does the device cache translations in its device-TLB (and
 * need device-TLB invalidations); otherwise every request is translated by the IOMMU (its
 * IOTLB and paging caches).
 */
import type { DeviceKind } from '../../src/api/types.js';
import { fail, isVsvaError } from '../../src/errors.js';
import { FaultReason } from '../../src/vtd/fault.js';
import { childLogger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { FaultFlag, PageRequestFlag, type FaultMessage, type PageRequestMessage } from '../../vhost/messages/backend.js';
import { DeviceDmaFlag, DeviceDmaOp, DeviceDmaStatus, DEVICE_DMA_RESULT_PASID_VALID, type DeviceDmaReply, type DeviceDmaRequest } from '../../vhost/messages/device-dma.js';
import { ACCESS_EXEC, ACCESS_PRIV, ACCESS_WRITE, DMA_UNBACKED_HPA, faultRecord, type HostIommu, type IommuDmaResult, type IommuFault, type TranslationRequest } from '../iommu/index.js';
import type { VdcmVm } from '../vdcm/vdcm.js';
import type { PageRequestOutcome, PageRequestTracker } from './page-requests.js';

const log = childLogger('dma-device');

/** What DEVICE_ADD gave the device. */
export interface DeviceCaps {
  /** PASID width in bits; 0 = no PASID capability. */
  pasidBits: number;
  ats: boolean;
  pri: boolean;
}

/** The backend channel of the device's VM, and the page requests waiting there for an answer. */
export interface DeviceChannel {
  readonly pageRequests: PageRequestTracker;
  /** Send FAULT (best effort: dropped while the VM has no backend channel). */
  sendFault(msg: FaultMessage): void;
  /** Send PAGE_REQUEST; rejects when there is no channel. */
  sendPageRequest(msg: PageRequestMessage): Promise<void>;
}

/** The counters a device bumps (its VM's statistics). */
export interface DeviceCounters {
  dmas: number;
  faults: number;
  pageRequests: number;
}

/** What a device needs from the container of its VM (VfioContainer implements it). */
export interface DeviceContainer {
  readonly vmName: string;
  readonly iommu: HostIommu;
  readonly vdcm: VdcmVm;
  readonly channel: DeviceChannel;
  readonly trace: TraceBus | undefined;
  readonly counters: DeviceCounters;
  /** Whether `hpasid` is a live (allocated, not free-pending) PASID of this VM. */
  ownsLivePasid(hpasid: number): boolean;
}

export class DmaTestDevice {
  /** PRI enabled by the guest (context-entry PRE / virtio page-request enable). */
  priEnabled = false;
  /** ATS enabled by the guest. */
  atsEnabled = false;

  constructor(
    readonly kind: DeviceKind,
    /** Requester id the guest knows the device by. */
    readonly guestRid: number,
    /** Requester id in the host IOMMU. */
    readonly hostRid: number,
    readonly bdf: string,
    readonly caps: DeviceCaps,
    private readonly container: DeviceContainer,
  ) {}

  /**
   * Perform one DMA (DEVICE_DMA). Control-path problems throw; translation faults are results.
   * The reply itself, or — only when a page request must be answered first — a promise of it.
   */
  /** `into`: a READ stores its bytes there (at least `length` long; DEVICE_DMA's staged data) instead of a fresh array. */
  dma(req: DeviceDmaRequest, into?: Uint8Array): DeviceDmaReply | Promise<DeviceDmaReply> {
    const pasidValid = (req.flags & DeviceDmaFlag.PASID_VALID) !== 0;
    let hpasid: number | null = null;
    if (pasidValid) {
      if (this.caps.pasidBits === 0) fail('EINVAL', `device ${this.bdf} has no PASID capability`);
      hpasid = this.hostPasid(req.pasid);
    } else if (this.kind === 'adi') {
      fail('EINVAL', `ADI ${this.bdf} performs DMA only with a PASID`);
    }
    const access: TranslationRequest = {
      rid: this.hostRid,
      addr: req.addr,
      write: req.op === DeviceDmaOp.WRITE,
      priv: (req.flags & DeviceDmaFlag.PRIV) !== 0,
      exec: (req.flags & DeviceDmaFlag.EXEC) !== 0,
      noReport: this.priEnabled,
    };
    const guestPasid = pasidValid ? req.pasid : null;
    const counters = this.container.counters;
    counters.dmas++;
    if (pasidValid && hpasid === null) return this.pasidEntryAbsent(req, access, req.pasid);
    if (hpasid !== null) access.pasid = hpasid;
    const r = this.attempt(access, req, into);
    if (r.ok) return this.finish(req, r, guestPasid);
    // Reason 0 (no memory behind the HPA) is not a VT-d fault: no page request, nothing to record.
    if (this.priEnabled && r.fault.reason !== DMA_UNBACKED_HPA) return this.pageRequestAndRetry(access, req, guestPasid, r.fault, into);
    counters.faults++;
    if (r.fault.reason !== DMA_UNBACKED_HPA) this.container.channel.sendFault(this.faultMessage(r.fault, guestPasid));
    return this.finish(req, r, guestPasid);
  }

  /**
   * The host PASID the device tags a request with guest-given `pasid`, or null when this VM has
   * none behind it (pf: not a live PASID of this VM; adi: no bound ID carries the guest PASID).
   */
  private hostPasid(pasid: number): number | null {
    if (this.kind === 'pf') return this.container.ownsLivePasid(pasid) ? pasid : null;
    try {
      return this.container.vdcm.program(this.guestRid, pasid);
    } catch (e) {
      if (isVsvaError(e, 'ENOENT')) return null;
      throw e;
    }
  }

  /** A request whose PASID has no PASID-table entry: fault 0x59 (SPT.2), nothing translated. */
  private pasidEntryAbsent(req: DeviceDmaRequest, access: TranslationRequest, guestPasid: number): DeviceDmaReply {
    const flags = (access.write === true ? ACCESS_WRITE : 0) | (access.priv === true ? ACCESS_PRIV : 0) | (access.exec === true ? ACCESS_EXEC : 0);
    const fault = faultRecord(FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT, this.hostRid, guestPasid, req.addr, flags);
    this.container.counters.faults++;
    this.container.channel.sendFault(this.faultMessage(fault, guestPasid));
    return this.finish(req, { ok: false, done: 0, fault }, guestPasid);
  }

  private attempt(access: TranslationRequest, req: DeviceDmaRequest, into?: Uint8Array): IommuDmaResult & { data?: Uint8Array } {
    const iommu = this.container.iommu;
    return access.write === true ? iommu.dmaWrite(access, req.data!) : iommu.dmaRead(access, req.length, into);
  }

  /** PRI: send PAGE_REQUEST for the fault, wait for the response; on SUCCESS retry the access once. */
  private async pageRequestAndRetry(access: TranslationRequest, req: DeviceDmaRequest, guestPasid: number | null, fault: IommuFault, into?: Uint8Array): Promise<DeviceDmaReply> {
    let r: IommuDmaResult & { data?: Uint8Array } = { ok: false, done: 0, fault };
    if ((await this.pageRequest(fault, guestPasid)) === 'success') r = this.attempt(access, req, into);
    if (!r.ok) this.container.counters.faults++;
    return this.finish(req, r, guestPasid);
  }

  private async pageRequest(fault: IommuFault, guestPasid: number | null): Promise<PageRequestOutcome> {
    const { vmName, channel, trace } = this.container;
    const { prgi, outcome } = channel.pageRequests.open(this.guestRid, guestPasid);
    this.container.counters.pageRequests++;
    let flags = PageRequestFlag.LPIG | (fault.write ? PageRequestFlag.WRITE : PageRequestFlag.READ);
    if (guestPasid !== null) flags |= PageRequestFlag.PASID_VALID;
    if (fault.exec) flags |= PageRequestFlag.EXEC;
    if (fault.priv) flags |= PageRequestFlag.PRIV;
    const msg: PageRequestMessage = { rid: this.guestRid, prgi, flags, pasid: guestPasid ?? 0, addr: fault.addr & ~0xfffn };
    if (trace?.active) {
      trace.emit({ kind: 'page-request', side: 'host', vm: vmName, name: 'PAGE_REQUEST', args: { bdf: this.bdf, pasid: guestPasid, prgi, addr: `0x${msg.addr.toString(16)}` } });
    }
    channel.sendPageRequest(msg).catch((e: unknown) => {
      log.debug({ vm: vmName, bdf: this.bdf, err: isVsvaError(e) ? e.code : String(e) }, 'PAGE_REQUEST could not be sent');
      channel.pageRequests.abandon(this.guestRid, guestPasid, prgi, 'failure');
    });
    const o = await outcome;
    if (trace?.active) {
      trace.emit({ kind: 'page-response', side: 'host', vm: vmName, name: `page response ${o}`, args: { bdf: this.bdf, pasid: guestPasid, prgi } });
    }
    return o;
  }

  /** FAULT for the guest: the fault's request type, address and reason, with the guest's PASID. */
  private faultMessage(fault: IommuFault, guestPasid: number | null): FaultMessage {
    let flags = 0;
    if (guestPasid !== null) flags |= FaultFlag.PASID_VALID;
    if (fault.write) flags |= FaultFlag.WRITE;
    if (fault.priv) flags |= FaultFlag.PRIV;
    if (fault.exec) flags |= FaultFlag.EXEC;
    return { rid: this.guestRid, flags, pasid: guestPasid ?? 0, reason: fault.reason, addr: fault.addr };
  }

  /** Trace the DMA and build its reply (the wire layout of vhost/messages/device-dma.ts). */
  private finish(req: DeviceDmaRequest, r: IommuDmaResult & { data?: Uint8Array }, guestPasid: number | null): DeviceDmaReply {
    const { trace, vmName } = this.container;
    if (trace?.active) {
      trace.emit({
        kind: 'dma', side: 'host', vm: vmName, name: `${this.kind} ${req.op === DeviceDmaOp.WRITE ? 'write' : 'read'}`,
        args: { bdf: this.bdf, pasid: guestPasid, addr: `0x${req.addr.toString(16)}`, length: req.length, ok: r.ok, reason: r.ok ? null : r.fault.reason },
      });
    }
    if (r.ok) {
      const ok: DeviceDmaReply = { status: DeviceDmaStatus.OK, reason: 0, flags: 0, pasid: 0, fault_addr: 0n };
      if (r.data !== undefined && r.data.length > 0) ok.data = r.data;
      return ok;
    }
    return {
      status: DeviceDmaStatus.FAULT,
      reason: r.fault.reason,
      flags: guestPasid !== null ? DEVICE_DMA_RESULT_PASID_VALID : 0,
      pasid: guestPasid ?? 0,
      fault_addr: r.fault.addr,
    };
  }
}
