/**
 * DMA test devices (DESIGN §4): an assigned device that performs one read or write when the
 * guest asks (DEVICE_DMA), through the host IOMMU's translation engine into host memory.
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
 * PASIDs the guest sees in FAULT / PAGE_REQUEST / the reply are the ones it used: the guest
 * PASID for an ADI, the programmed PASID for a pf.
 *
 * ATS: only while the guest has ATS enabled (DEVICE_CONFIG ATS_ENABLE → the IOMMU device's ATS
 * Enable, HostIommu.setAtsEnabled) does the device cache translations in its device-TLB (and
 * need device-TLB invalidations); otherwise every request is translated by the IOMMU (its
 * IOTLB and paging caches).
 */
import type { DmaResult, DeviceKind } from '../../src/api/types.js';
import { fail, isVsvaError } from '../../src/errors.js';
import { FaultReason } from '../../src/vtd/fault.js';
import { childLogger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { FaultFlag, PageRequestFlag, type FaultMessage, type PageRequestMessage } from '../../vhost/messages/backend.js';
import { DeviceDmaFlag, DeviceDmaOp, DeviceDmaStatus, DEVICE_DMA_RESULT_PASID_VALID, type DeviceDmaReply, type DeviceDmaRequest } from '../../vhost/messages/page.js';
import type { ContainerIommu, DeviceCaps, DmaAccess } from '../vfio/iommu-port.js';
import type { VdcmVm } from '../vdcm/vdcm.js';
import type { PageRequestTracker } from './page-requests.js';

const log = childLogger('dma-device');

/** What a device needs from its VM. */
export interface DmaDeviceEnv {
  readonly vmName: string;
  readonly iommu: ContainerIommu;
  readonly vdcm: VdcmVm;
  readonly pageRequests: PageRequestTracker;
  /** Whether `hpasid` is a live (not free-pending) PASID of this VM. */
  ownsPasid(hpasid: number): boolean;
  /** Send FAULT on the backend channel (best effort). */
  sendFault(msg: FaultMessage): void;
  /** Send PAGE_REQUEST on the backend channel; rejects when there is no channel. */
  sendPageRequest(msg: PageRequestMessage): Promise<void>;
  /** Count an event for the VM's statistics. */
  count(what: 'faults' | 'pageRequests' | 'dmas'): void;
  readonly trace?: TraceBus;
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
    private readonly env: DmaDeviceEnv,
  ) {}

  /** Perform one DMA (DEVICE_DMA). Control-path problems throw; translation faults are results. */
  async dma(req: DeviceDmaRequest): Promise<DeviceDmaReply> {
    const env = this.env;
    const pasidValid = (req.flags & DeviceDmaFlag.PASID_VALID) !== 0;
    let hpasid: number | null = null;
    if (pasidValid) {
      if (this.caps.pasidBits === 0) fail('EINVAL', `device ${this.bdf} has no PASID capability`);
      hpasid = this.hostPasid(req.pasid);
    } else if (this.kind === 'adi') {
      fail('EINVAL', `ADI ${this.bdf} performs DMA only with a PASID`);
    }
    const write = req.op === DeviceDmaOp.WRITE;
    if (pasidValid && hpasid === null) return this.pasidEntryAbsent(req, write);
    const access: DmaAccess = {
      pasid: hpasid,
      addr: req.addr,
      write,
      priv: (req.flags & DeviceDmaFlag.PRIV) !== 0,
      exec: (req.flags & DeviceDmaFlag.EXEC) !== 0,
      noReport: this.priEnabled,
    };
    const guestPasid = pasidValid ? req.pasid : null;
    env.count('dmas');
    let r = this.attempt(access, req);
    if (!r.ok && this.priEnabled && r.fault.reason !== 0) {
      const outcome = await this.pageRequest(access, guestPasid, r.fault.addr);
      if (outcome === 'success') r = this.attempt(access, req);
      if (!r.ok) env.count('faults');
    } else if (!r.ok) {
      env.count('faults');
      // Reason 0 (no memory behind the HPA) is not a VT-d fault: nothing to record.
      if (r.fault.reason !== 0) env.sendFault(this.faultMessage(access, guestPasid, r.fault.reason, r.fault.addr));
    }
    if (env.trace?.active) {
      env.trace.emit({
        kind: 'dma', side: 'host', vm: env.vmName, name: `${this.kind} ${write ? 'write' : 'read'}`,
        args: { bdf: this.bdf, pasid: guestPasid, addr: `0x${req.addr.toString(16)}`, length: req.length, ok: r.ok, reason: r.ok ? null : r.fault.reason },
      });
    }
    return this.reply(r, guestPasid);
  }

  /**
   * The host PASID the device tags a request with guest-given `pasid`, or null when this VM has
   * none behind it (pf: not a live PASID of this VM; adi: no bound ID carries the guest PASID).
   */
  private hostPasid(pasid: number): number | null {
    const env = this.env;
    if (this.kind === 'pf') return env.ownsPasid(pasid) ? pasid : null;
    try {
      return env.vdcm.program(this.guestRid, pasid);
    } catch (e) {
      if (isVsvaError(e, 'ENOENT')) return null;
      throw e;
    }
  }

  /** A request whose PASID has no PASID-table entry: fault 0x59 (SPT.2), nothing translated. */
  private pasidEntryAbsent(req: DeviceDmaRequest, write: boolean): DeviceDmaReply {
    const env = this.env;
    const reason = FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT;
    const access = { write, priv: (req.flags & DeviceDmaFlag.PRIV) !== 0, exec: (req.flags & DeviceDmaFlag.EXEC) !== 0 };
    env.count('dmas');
    env.count('faults');
    env.sendFault(this.faultMessage(access, req.pasid, reason, req.addr));
    if (env.trace?.active) {
      env.trace.emit({
        kind: 'dma', side: 'host', vm: env.vmName, name: `${this.kind} ${write ? 'write' : 'read'}`,
        args: { bdf: this.bdf, pasid: req.pasid, addr: `0x${req.addr.toString(16)}`, length: req.length, ok: false, reason },
      });
    }
    return this.reply({ ok: false, fault: { reason, addr: req.addr, pasid: req.pasid } }, req.pasid);
  }

  private attempt(access: DmaAccess, req: DeviceDmaRequest): DmaResult {
    const iommu = this.env.iommu;
    return access.write ? iommu.dmaWrite(this.hostRid, access, req.data!) : iommu.dmaRead(this.hostRid, access, req.length);
  }

  private async pageRequest(access: DmaAccess, guestPasid: number | null, faultAddr: bigint) {
    const env = this.env;
    const { prgi, outcome } = env.pageRequests.open(this.guestRid, guestPasid);
    env.count('pageRequests');
    let flags = PageRequestFlag.LPIG | (access.write ? PageRequestFlag.WRITE : PageRequestFlag.READ);
    if (guestPasid !== null) flags |= PageRequestFlag.PASID_VALID;
    if (access.exec) flags |= PageRequestFlag.EXEC;
    if (access.priv) flags |= PageRequestFlag.PRIV;
    const msg: PageRequestMessage = { rid: this.guestRid, prgi, flags, pasid: guestPasid ?? 0, addr: faultAddr & ~0xfffn };
    if (env.trace?.active) {
      env.trace.emit({ kind: 'page-request', side: 'host', vm: env.vmName, name: 'PAGE_REQUEST', args: { bdf: this.bdf, pasid: guestPasid, prgi, addr: `0x${msg.addr.toString(16)}` } });
    }
    env.sendPageRequest(msg).catch((e: unknown) => {
      log.debug({ vm: env.vmName, bdf: this.bdf, err: isVsvaError(e) ? e.code : String(e) }, 'PAGE_REQUEST could not be sent');
      env.pageRequests.abandon(this.guestRid, guestPasid, prgi, 'failure');
    });
    const o = await outcome;
    if (env.trace?.active) {
      env.trace.emit({ kind: 'page-response', side: 'host', vm: env.vmName, name: `page response ${o}`, args: { bdf: this.bdf, pasid: guestPasid, prgi } });
    }
    return o;
  }

  private faultMessage(access: Pick<DmaAccess, 'write' | 'priv' | 'exec'>, guestPasid: number | null, reason: number, addr: bigint): FaultMessage {
    let flags = 0;
    if (guestPasid !== null) flags |= FaultFlag.PASID_VALID;
    if (access.write) flags |= FaultFlag.WRITE;
    if (access.priv) flags |= FaultFlag.PRIV;
    if (access.exec) flags |= FaultFlag.EXEC;
    return { rid: this.guestRid, flags, pasid: guestPasid ?? 0, reason, addr };
  }

  private reply(r: DmaResult, guestPasid: number | null): DeviceDmaReply {
    if (r.ok) return { status: DeviceDmaStatus.OK, reason: 0, flags: 0, pasid: 0, fault_addr: 0n, ...(r.data && r.data.length > 0 ? { data: r.data } : {}) };
    return {
      status: DeviceDmaStatus.FAULT,
      reason: r.fault.reason,
      flags: guestPasid !== null ? DEVICE_DMA_RESULT_PASID_VALID : 0,
      pasid: guestPasid ?? 0,
      fault_addr: r.fault.addr,
    };
  }
}
