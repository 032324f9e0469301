/**
 * DEVICE_DMA and DEVICE_CONFIG for the devices of an iommufd VM: each bound device is a DMA test
 * device (host/devices/dma-device.ts) whose requests go through the host IOMMU with the routes
 * its attachments programmed.
 *
 * - A request with a PASID is tagged with that PASID as the device issues it: iommufd PASIDs are
 *   the device's own (device.ts), so a PASID with nothing attached has no PASID-table entry and
 *   faults (reason 0x59), as on hardware.
 * - With PRI enabled, a translation fault becomes a page request queued, as a
 *   `struct iommu_hwpt_pgfault` record, to the fault queue of the HWPT attached at that PASID
 *   (or RID); the device waits for IOMMUFD_FAULT_RESPOND on its cookie (SUCCESS retries the
 *   access once). A HWPT without a fault queue answers INVALID at once (iommufd has nowhere to
 *   report it). Unanswered requests time out as in the VFIO SVA uAPI.
 * - Unrecoverable faults go to the guest as FAULT on the backend channel, as for the VFIO SVA
 *   uAPI (iommufd reports them through a vIOMMU event queue, not modelled here).
 */
import { fail } from '../../src/errors.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { PageRequestFlag, type FaultMessage, type PageRequestMessage } from '../../vhost/messages/backend.js';
import { DeviceConfigFlag, type DeviceConfigRequest } from '../../vhost/messages/device-config.js';
import type { DeviceDmaReply, DeviceDmaRequest } from '../../vhost/messages/device-dma.js';
import { IOMMU_PGFAULT_FLAGS, IOMMU_PGFAULT_PERM, IOMMUFD_PAGE_RESP, type HwptPgfault } from '../../vhost/messages/iommufd.js';
import { DmaTestDevice, type DeviceContainer } from '../devices/dma-device.js';
import { PageRequestTracker } from '../devices/page-requests.js';
import type { HostIommu } from '../iommu/index.js';
import type { VdcmVm } from '../vdcm/vdcm.js';
import type { IommufdDevice } from './device.js';

/** What the DMA paths of an iommufd VM need from the VM. */
export interface IommufdDmaEnv {
  vdcm: VdcmVm;
  trace?: TraceBus;
  /** FAULT on the VM's backend channel (best effort). */
  sendFault(msg: FaultMessage): void;
  pageRequestTimeoutMs?: number;
  maxPendingPageRequests?: number;
  /** Push a fault queue's complete group to the front-end (IOMMUFD_FAULT); false when there is no backend channel. */
  sendFaultRecords?(faultId: number, records: HwptPgfault[]): boolean;
}

/** PCI PRI response codes the page-request tracker understands (PAGE_RESPONSE's). */
const PRI_SUCCESS = 0;
const PRI_INVALID = 1;

export class IommufdDma {
  readonly counters = { dmas: 0, faults: 0, pageRequests: 0 };
  readonly pageRequests: PageRequestTracker;
  private readonly devices = new Map<number, { dev: IommufdDevice; dma: DmaTestDevice }>();

  constructor(
    private readonly vmName: string,
    private readonly iommu: HostIommu,
    private readonly env: IommufdDmaEnv,
  ) {
    this.pageRequests = new PageRequestTracker(env.maxPendingPageRequests, env.pageRequestTimeoutMs);
  }

  /** A bound device becomes able to perform DMA. */
  add(dev: IommufdDevice): void {
    const container: DeviceContainer = {
      vmName: this.vmName,
      iommu: this.iommu,
      vdcm: this.env.vdcm,
      trace: this.env.trace,
      counters: this.counters,
      ownsLivePasid: (pasid) => dev.pasids.has(pasid),
      channel: {
        pageRequests: this.pageRequests,
        sendFault: (msg) => this.env.sendFault(msg),
        sendPageRequest: (msg) => this.queuePageRequest(dev, msg),
      },
    };
    const dma = new DmaTestDevice('pf', dev.guestRid, dev.hostRid, dev.bdf, { pasidBits: dev.pasidBits, ats: dev.ats, pri: dev.pri }, container);
    this.devices.set(dev.guestRid, { dev, dma });
  }

  remove(guestRid: number): void {
    this.devices.delete(guestRid);
  }

  has(guestRid: number): boolean {
    return this.devices.has(guestRid);
  }

  /** DEVICE_DMA (`into`: where a READ stores its bytes, DmaTestDevice.dma). ENOENT: no bound device with that RID. */
  deviceDma(r: DeviceDmaRequest, into?: Uint8Array): DeviceDmaReply | Promise<DeviceDmaReply> {
    return this.entry(r.rid, 'DEVICE_DMA').dma.dma(r, into);
  }

  /** DEVICE_CONFIG: PRI / ATS enables. EINVAL: an enable without its capability. */
  deviceConfig(r: DeviceConfigRequest): void {
    const { dev, dma } = this.entry(r.rid, 'DEVICE_CONFIG');
    const pri = (r.flags & DeviceConfigFlag.PRI_ENABLE) !== 0;
    const ats = (r.flags & DeviceConfigFlag.ATS_ENABLE) !== 0;
    if (pri && !dev.pri) fail('EINVAL', `DEVICE_CONFIG: ${dev.bdf} has no PRI capability`);
    if (ats && !dev.ats) fail('EINVAL', `DEVICE_CONFIG: ${dev.bdf} has no ATS capability`);
    dma.priEnabled = pri;
    if (dev.ats) this.iommu.setAtsEnabled(dev.hostRid, ats);
    dma.atsEnabled = ats;
  }

  /** Teardown: every waiting page request ends 'cancelled'. */
  close(): void {
    this.pageRequests.cancelAll();
    this.devices.clear();
  }

  private entry(rid: number, what: string): { dev: IommufdDevice; dma: DmaTestDevice } {
    const e = this.devices.get(rid);
    if (e === undefined) fail('ENOENT', `${what}: no bound device with RID ${rid}`);
    return e;
  }

  /** The device's page request, to the fault queue of the HWPT it hit (or answered INVALID). */
  private queuePageRequest(dev: IommufdDevice, msg: PageRequestMessage): Promise<void> {
    const pasid = (msg.flags & PageRequestFlag.PASID_VALID) !== 0 ? msg.pasid : null;
    const att = pasid === null ? dev.rid : dev.pasids.get(pasid);
    const queue = att?.hwpt.fault ?? null;
    const answer = (code: number) => {
      try {
        this.pageRequests.respond(dev.guestRid, pasid, msg.prgi, code);
      } catch {
        /* already settled (timeout, teardown) */
      }
    };
    if (queue === null) {
      answer(PRI_INVALID);
      return Promise.resolve();
    }
    const perm =
      ((msg.flags & PageRequestFlag.READ) !== 0 ? IOMMU_PGFAULT_PERM.READ : 0) |
      ((msg.flags & PageRequestFlag.WRITE) !== 0 ? IOMMU_PGFAULT_PERM.WRITE : 0) |
      ((msg.flags & PageRequestFlag.EXEC) !== 0 ? IOMMU_PGFAULT_PERM.EXEC : 0) |
      ((msg.flags & PageRequestFlag.PRIV) !== 0 ? IOMMU_PGFAULT_PERM.PRIV : 0);
    const flags = (pasid !== null ? IOMMU_PGFAULT_FLAGS.PASID_VALID : 0) | ((msg.flags & PageRequestFlag.LPIG) !== 0 ? IOMMU_PGFAULT_FLAGS.LAST_PAGE : 0);
    queue.push({ flags, dev_id: dev.id, pasid: pasid ?? 0, grpid: msg.prgi, perm, addr: msg.addr, length: 4096 }, (code) =>
      answer(code === IOMMUFD_PAGE_RESP.SUCCESS ? PRI_SUCCESS : PRI_INVALID),
    );
    return Promise.resolve();
  }
}
