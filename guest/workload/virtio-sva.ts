/**
 * SVA and DMA-API use of a virtio-iommu VM, on the guest driver of
 * guest/driver/virtio-iommu-driver.ts (the project's PASID extension, docs/virtio-iommu.md §5):
 *
 * - PASIDs are guest-private: the guest numbers them itself (lowest free from 1); the device
 *   model asks the host for a host PASID at the first ATTACH_TABLE and records the guest's as
 *   its SPID.
 * - bind = ATTACH_TABLE(domain, endpoint, pasid, pgd, addr width, PRI) on the domain the endpoint
 *   is attached to (an endpoint that is not attached yet is attached to a default domain first,
 *   as Linux attaches every endpoint to a default domain at probe); unbind = DETACH_TABLE.
 * - An unmap in a bound process is followed by INVALIDATE (granularity VA, IOTLB + device IOTLB,
 *   the process's PASID, the range).
 * - The eventq is polled in the background: page requests are answered with PAGE_RESP after the
 *   SvaGuest policy decided; faults are recorded.
 * - MAP / UNMAP / ATTACH / DETACH for DMA-API use; a non-OK status becomes a VirtioRequestError
 *   carrying the status and Linux's errno for it (viommu_get_req_errno).
 */
import type { GuestHandle } from '../../src/api/types.js';
import { VsvaError, fail, type ErrnoName } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { parseBdf } from '../../src/pci.js';
import type { FlushRange, GuestProcess } from '../driver/guest-process.js';
import { PAGE_SIZE } from '../driver/guest-memory.js';
import { VirtioIommuDriver } from '../driver/virtio-iommu-driver.js';
import type { EventReport } from '../virtio/events.js';
import { InvalFlag, InvalGran, InvalType, MapFlag, PageRespCode, ReqStatus, STATUS_NAMES } from '../virtio/iommu-spec.js';
import { PASID_LIMIT } from '../../src/vtd/pasid-entry.js';
import { BackgroundPoll } from './background-poll.js';
import { SvaGuest, guestPageAllocator, type PageResponse } from './sva-guest.js';

/** errno for each virtio-iommu status (Linux viommu_get_req_errno). */
const STATUS_ERRNO: Record<number, ErrnoName> = {
  [ReqStatus.IOERR]: 'EIO',
  [ReqStatus.UNSUPP]: 'EOPNOTSUPP',
  [ReqStatus.DEVERR]: 'EIO',
  [ReqStatus.INVAL]: 'EINVAL',
  [ReqStatus.RANGE]: 'ERANGE',
  [ReqStatus.NOENT]: 'ENOENT',
  [ReqStatus.FAULT]: 'EFAULT',
  [ReqStatus.NOMEM]: 'ENOMEM',
};

/** A virtio-iommu request the device answered with a status other than OK. */
export class VirtioRequestError extends VsvaError {
  readonly status: number;
  readonly statusName: string;
  constructor(what: string, status: number) {
    const name = STATUS_NAMES[status] ?? `status ${status}`;
    super(STATUS_ERRNO[status] ?? 'EIO', `virtio-iommu ${what}: ${name}`);
    this.status = status;
    this.statusName = name;
  }
}

function check(what: string, status: number): void {
  if (status !== ReqStatus.OK) throw new VirtioRequestError(what, status);
}

/** How often the eventq is polled (ms): page requests wait at most about this long. */
const EVENT_POLL_MS = 2;

export interface VirtioSvaOptions {
  /** Bytes of guest RAM (for the page allocator). */
  memory: number;
  /** The VM's assigned devices. */
  devices: { bdf: string }[];
}

export class VirtioSvaGuest extends SvaGuest {
  readonly kind = 'virtio' as const;
  private readonly pasids = new Set<number>();
  /** Endpoint (RID) → domain it is attached to, as this driver attached it. */
  private readonly epDomain = new Map<number, number>();
  private readonly defaultDomain = new Map<number, number>();
  private readonly poller = new BackgroundPoll(() => this.driver.pollEvents().then(() => undefined), this.log, 'virtio-iommu eventq poll');
  driver!: VirtioIommuDriver;

  private constructor(handle: GuestHandle, opts: VirtioSvaOptions) {
    super(handle, guestPageAllocator(handle, opts.memory), childLogger('workload', { vm: handle.name, viommu: 'virtio' }));
    this.deviceOrder = opts.devices.map((d) => parseBdf(d.bdf));
  }

  private readonly deviceOrder: number[];

  /** Probe the virtio-iommu device and start servicing its eventq. */
  static async start(handle: GuestHandle, opts: VirtioSvaOptions): Promise<VirtioSvaGuest> {
    const g = new VirtioSvaGuest(handle, opts);
    g.driver = await VirtioIommuDriver.probe(handle, { alloc: g.pages, onEvent: (ev) => g.onEvent(ev) });
    // Default domains at the top of the domain range, one per endpoint, out of a scenario's way.
    const top = g.driver.config.domainRange.end;
    g.deviceOrder.forEach((rid, i) => g.defaultDomain.set(rid, top - i));
    g.poller.start(EVENT_POLL_MS);
    return g;
  }

  private async onEvent(ev: EventReport): Promise<void> {
    if (ev.kind === 'fault') {
      this.recordFault({ reason: ev.reason, addr: ev.address, rid: ev.endpoint, ...(ev.pasid !== undefined ? { pasid: ev.pasid } : {}) });
      return;
    }
    const answer: PageResponse = await this.handlePageRequest({ rid: ev.endpoint, pasid: ev.pasid, addr: ev.address, write: (ev.flags & 2) !== 0 });
    if (answer === 'none') return;
    const code = answer === 'success' ? PageRespCode.SUCCESS : answer === 'invalid' ? PageRespCode.INVALID : PageRespCode.FAILURE;
    const status = await this.driver.pageResponse({ endpoint: ev.endpoint, grpid: ev.grpid, code, ...(ev.pasid !== undefined ? { pasid: ev.pasid } : {}) });
    if (status !== ReqStatus.OK) this.log.warn({ status: STATUS_NAMES[status] }, 'PAGE_RESP refused');
  }

  // --- PASIDs (guest-private) ----------------------------------------------------------------

  async allocPasid(): Promise<number> {
    for (let p = 1; p < PASID_LIMIT; p++) {
      if (!this.pasids.has(p) && this.processOfPasid(p) === undefined) {
        this.pasids.add(p);
        return p;
      }
    }
    fail('ENOSPC', `${this.name}: no free guest PASID`);
  }

  async freePasid(pasid: number): Promise<void> {
    if (!this.pasids.has(pasid)) fail('EINVAL', `${this.name}: guest PASID ${pasid} is not allocated`);
    if (this.processOfPasid(pasid)) fail('EBUSY', `${this.name}: guest PASID ${pasid} is still bound`);
    this.pasids.delete(pasid);
  }

  // --- SVA -----------------------------------------------------------------------------------

  private domainOf(rid: number): number | undefined {
    return this.epDomain.get(rid);
  }

  protected async attachProcess(proc: GuestProcess, bdf: string, pasid: number): Promise<void> {
    const rid = parseBdf(bdf);
    let domain = this.domainOf(rid);
    if (domain === undefined) {
      domain = this.defaultDomain.get(rid);
      if (domain === undefined) fail('ENODEV', `${this.name} has no device ${bdf}`);
      await this.attach(bdf, domain);
    }
    check(`ATTACH_TABLE ${bdf} PASID ${pasid}`, await this.driver.attachTable({ domain, endpoint: rid, pasid, pgd: proc.pgd, addrWidth: proc.addressWidth, pri: true }));
  }

  protected async detachProcess(_proc: GuestProcess, bdf: string, pasid: number): Promise<void> {
    const rid = parseBdf(bdf);
    const domain = this.domainOf(rid);
    if (domain === undefined) return; // the endpoint left its domain; the device dropped the table with it
    check(`DETACH_TABLE ${bdf} PASID ${pasid}`, await this.driver.detachTable(domain, rid, pasid));
  }

  protected async flushRange(bdf: string, pasid: number, range: FlushRange): Promise<void> {
    const domain = this.domainOf(parseBdf(bdf));
    if (domain === undefined) return;
    check(
      `INVALIDATE PASID ${pasid}`,
      await this.driver.invalidate({
        granularity: InvalGran.VA,
        type: InvalType.IOTLB | InvalType.DEV_IOTLB,
        flags: InvalFlag.PASID,
        domain,
        pasid,
        virtStart: range.addr,
        nrPages: 1n << BigInt(range.am),
      }),
    );
  }

  // --- DMA API -------------------------------------------------------------------------------

  async attach(bdf: string, domain: number): Promise<void> {
    const rid = parseBdf(bdf);
    check(`ATTACH ${bdf} to domain ${domain}`, await this.driver.attach(domain, rid));
    this.epDomain.set(rid, domain);
  }

  async detach(bdf: string, domain: number): Promise<void> {
    const rid = parseBdf(bdf);
    check(`DETACH ${bdf} from domain ${domain}`, await this.driver.detach(domain, rid));
    if (this.epDomain.get(rid) === domain) this.epDomain.delete(rid);
  }

  /**
   * MAP [iova, iova + length) → gpa (fresh zeroed, contiguous guest pages when gpa is omitted;
   * they are returned to the allocator if the MAP fails). Returns the GPA.
   */
  async map(domain: number, iova: bigint, length: number, opts: { gpa?: bigint; read?: boolean; write?: boolean } = {}): Promise<bigint> {
    const pages = Math.ceil(length / PAGE_SIZE);
    const gpa = opts.gpa ?? (await this.pages.alloc(pages));
    const flags = (opts.read !== false ? MapFlag.READ : 0) | (opts.write !== false ? MapFlag.WRITE : 0);
    try {
      check(`MAP domain ${domain} 0x${iova.toString(16)}`, await this.driver.map(domain, iova, iova + BigInt(length) - 1n, gpa, flags));
    } catch (e) {
      if (opts.gpa === undefined) this.pages.free(gpa);
      throw e;
    }
    return gpa;
  }

  async unmap(domain: number, iova: bigint, length: number): Promise<void> {
    check(`UNMAP domain ${domain} 0x${iova.toString(16)}`, await this.driver.unmap(domain, iova, iova + BigInt(length) - 1n));
  }

  protected async shutdown(): Promise<void> {
    await this.poller.stop();
    await this.driver.remove();
  }
}
