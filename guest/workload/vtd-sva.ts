/**
 * SVA on a VT-d VM, on the intel-iommu-like driver of guest/driver/vtd-driver.ts:
 *
 * - start: the driver's init (root table, invalidation queue, page request queue, TE), then every
 *   assigned device attached in scalable mode with PRI enabled (context PRE), as a guest kernel
 *   does for devices that may use SVA.
 * - PASIDs come from the virtual command interface (VCMD ALLOC_PASID / FREE_PASID), so guest
 *   and host PASID are one number; a VM without VCMD numbers its PASIDs itself.
 * - bind = first-level PASID entry + pasid_flush_caches; unbind = entry teardown + flushes; an
 *   unmap in a bound process is followed by a page-selective PASID-based IOTLB flush.
 * - A background poller services the page request queue (PRS.PPR) through the SvaGuest policy
 *   and reads the fault recording registers (FSTS.PPF).
 *
 * Every driver operation runs under one lock, as Linux's qi->q_lock: the invalidation queue's
 * tail and the page request queue's head belong to one caller at a time.
 */
import type { GuestHandle } from '../../src/api/types.js';
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { encodeDescriptor, InvDescType, IOTLB_G, PC_G, PIOTLB_G } from '../../src/vtd/descriptors.js';
import { parseBdf } from '../../src/pci.js';
import { DMAR, FSTS, PRS } from '../../src/vtd/registers.js';
import type { FlushRange, GuestProcess } from '../driver/guest-process.js';
import { SVA_DID, VtdDriver, pasidDevTlbDescriptor } from '../driver/vtd-driver.js';
import { PASID_LIMIT } from '../../src/vtd/pasid-entry.js';
import { BackgroundPoll } from './background-poll.js';
import { SvaGuest, guestPageAllocator } from './sva-guest.js';

/** How often the page request queue and fault registers are polled (ms). */
const POLL_MS = 2;

export interface VtdSvaOptions {
  memory: number;
  devices: { bdf: string }[];
  vcmd?: '3.1' | '3.3' | false;
}

/** A promise-chain mutex. */
class Lock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.tail.then(fn);
    this.tail = r.catch(() => undefined);
    return r;
  }
}

export class VtdSvaGuest extends SvaGuest {
  readonly kind = 'vtd' as const;
  driver!: VtdDriver;
  private readonly lock = new Lock();
  private readonly localPasids = new Set<number>();
  private readonly poller = new BackgroundPoll(() => this.lock.run(() => this.pollOnce()), this.log, 'VT-d page request / fault poll');

  private constructor(handle: GuestHandle, opts: VtdSvaOptions) {
    super(handle, guestPageAllocator(handle, opts.memory), childLogger('workload', { vm: handle.name, viommu: 'vtd' }));
  }

  static async start(handle: GuestHandle, opts: VtdSvaOptions): Promise<VtdSvaGuest> {
    const g = new VtdSvaGuest(handle, opts);
    g.driver = await VtdDriver.init(handle, g.pages, opts.vcmd ? { vcmd: opts.vcmd } : {});
    for (const d of opts.devices) await g.driver.attachDevice(d.bdf, { pri: g.driver.hasPrs });
    g.poller.start(POLL_MS);
    return g;
  }

  /** Service the page request queue (PRS.PPR / PRO) and the fault recording registers (FSTS.PPF / PFO). */
  private async pollOnce(): Promise<void> {
    const prs = await this.handle.readl(DMAR.PRS);
    if (prs & (PRS.PPR | PRS.PRO)) {
      await this.driver.servicePageRequests((req) => this.handlePageRequest({ rid: req.rid, pasid: req.pasid, addr: req.addr, write: req.write }).then((a) => (a === 'success' ? 'success' : 'invalid')));
    }
    const fsts = await this.handle.readl(DMAR.FSTS);
    if (fsts & (FSTS.PPF | FSTS.PFO)) {
      for (const f of await this.driver.readFaults()) this.recordFault({ reason: f.reason, addr: f.addr, rid: f.sid, ...(f.pasid !== undefined ? { pasid: f.pasid } : {}) });
    }
  }

  /** Run pending page-request and fault servicing now (tests and steps that want it settled). */
  poll(): Promise<void> {
    return this.poller.now();
  }

  // --- PASIDs ----------------------------------------------------------------------------------

  async allocPasid(): Promise<number> {
    if (this.driver.hasVcmd) return this.lock.run(() => this.driver.allocPasid());
    for (let p = 1; p < PASID_LIMIT; p++) {
      if (!this.localPasids.has(p)) {
        this.localPasids.add(p);
        return p;
      }
    }
    fail('ENOSPC', `${this.name}: no free PASID`);
  }

  async freePasid(pasid: number): Promise<void> {
    if (this.driver.hasVcmd) return this.lock.run(() => this.driver.freePasid(pasid));
    if (!this.localPasids.delete(pasid)) fail('EINVAL', `${this.name}: PASID ${pasid} is not allocated`);
  }

  // --- SVA -------------------------------------------------------------------------------------

  protected async attachProcess(proc: GuestProcess, bdf: string, pasid: number): Promise<void> {
    await this.lock.run(() => this.driver.bindProcess(bdf, proc, { pasid }));
  }

  protected async detachProcess(_proc: GuestProcess, bdf: string, pasid: number): Promise<void> {
    // The SvaGuest frees the PASID itself (after the last binding of the process goes).
    await this.lock.run(() => this.driver.unbind(bdf, pasid, { free: false }));
  }

  /** After an unmap: the driver's PIOTLB page flush plus the device-TLB flush of ATS devices. */
  protected async flushRange(_bdf: string, pasid: number, range: FlushRange): Promise<void> {
    await this.lock.run(() => this.driver.flushRange(pasid, range));
  }

  // --- explicit invalidations (scenario 'flush' / 'wait') ------------------------------------------

  /** PASID-cache invalidation: PASID-selective, or global without a PASID. */
  flushPasidCache(pasid?: number): Promise<void> {
    const d = pasid === undefined ? encodeDescriptor(InvDescType.PC, { G: PC_G.GLOBAL }, 1) : encodeDescriptor(InvDescType.PC, { G: PC_G.PASID_SI, DID: SVA_DID, PASID: pasid }, 1);
    return this.lock.run(() => this.driver.submit([d]));
  }

  /** PASID-based IOTLB invalidation: all in PASID, or page-selective for a range. */
  flushPiotlb(pasid: number, range?: FlushRange): Promise<void> {
    const d = range
      ? encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.PSI_IN_PASID, DID: SVA_DID, PASID: pasid, AM: range.am, ADDR: range.addr >> 12n }, 1)
      : encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.ALL_IN_PASID, DID: SVA_DID, PASID: pasid }, 1);
    return this.lock.run(() => this.driver.submit([d]));
  }

  /** PASID-based device-TLB invalidation of `bdf`: a range, or all of the PASID's (the whole address space). */
  flushDevTlb(bdf: string, pasid: number, range?: FlushRange): Promise<void> {
    // Linux flushes a whole PASID with the maximal range: ADDR all ones below bit 63, S = 1.
    const r = range ?? { addr: 0n, npages: 0, am: 52 };
    return this.lock.run(() => this.driver.submit([pasidDevTlbDescriptor(parseBdf(bdf), pasid, r)]));
  }

  /** Global IOTLB invalidation. */
  flushIotlb(): Promise<void> {
    return this.lock.run(() => this.driver.submit([encodeDescriptor(InvDescType.IOTLB, { G: IOTLB_G.GLOBAL, DR: 1, DW: 1 }, 1)]));
  }

  /** An invalidation wait descriptor alone: returns once the queue has drained. */
  waitQueue(): Promise<void> {
    return this.lock.run(() => this.driver.submit([]));
  }

  protected async shutdown(): Promise<void> {
    await this.poller.stop();
    await this.lock.run(() => this.driver.disableTranslation()).catch((err: unknown) => this.log.debug({ err }, 'disabling translation failed'));
  }
}

