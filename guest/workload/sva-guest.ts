/**
 * A VM as the workloads, the scenario runner and the demo see it: guest processes that bind to
 * assigned devices with SVA, DMA through their PASIDs, and a guest kernel that services page
 * requests by faulting pages into the process (Linux iommu_sva + handle_mm_fault, in spirit).
 *
 * `SvaGuest` holds what both vIOMMU kinds share — the processes, the PASID ↔ process bindings,
 * the page-request policy and what the driver observed (faults, page requests) — and leaves the
 * vIOMMU-specific half (how a PASID is allocated, how a bind reaches the device, how an IOTLB is
 * flushed) to `VtdSvaGuest` (vtd-sva.ts) and `VirtioSvaGuest` (virtio-sva.ts).
 *
 * Contracts:
 * - bind(proc, bdf) gives the process one PASID per device (EEXIST when already bound there);
 *   unbind undoes it (ENOENT when not bound). A PASID a bind allocated is freed by its unbind.
 * - unmap(proc, va) clears the leaf and flushes the IOTLB of every PASID the process is bound
 *   with (as the mmu notifier does), unless `flush: false` asks to leave the IOTLB stale.
 * - exit(proc) unbinds the process everywhere and frees its page tables and pages.
 * - Page requests: policy 'serve' maps a fresh zeroed page at the faulting address of the
 *   process bound with that PASID and answers Success (Invalid Request when no process has the
 *   PASID or the address is not canonical); 'refuse' answers Invalid Request; 'ignore' does not
 *   answer (the device then times out). Each request is counted in `pageRequests`.
 */
import type { GuestHandle } from '../../src/api/types.js';
import { fail } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { GuestProcess, type FlushRange, type FlLevels, type MapOptions } from '../driver/guest-process.js';
import { PAGE_SIZE } from '../driver/guest-memory.js';
import { PageAllocator } from '../driver/page-allocator.js';

export type PageRequestPolicy = 'serve' | 'refuse' | 'ignore';

/** A fault the guest driver took from the fault recording registers or the eventq. */
export interface RecordedFault {
  reason: number;
  addr: bigint;
  pasid?: number;
  /** Requester (device) ID. */
  rid?: number;
}

export interface PageRequestInfo {
  rid: number;
  /** The guest's PASID. */
  pasid: number | undefined;
  addr: bigint;
  write: boolean;
}

export type PageResponse = 'success' | 'invalid' | 'failure' | 'none';

export interface Binding {
  proc: GuestProcess;
  bdf: string;
  pasid: number;
}

/** Where guest page allocations start: the first 1 MiB is left alone, as on a PC. */
export const GUEST_ALLOC_BASE = 0x10_0000n;

export abstract class SvaGuest {
  abstract readonly kind: 'vtd' | 'virtio';
  readonly processes = new Map<string, GuestProcess>();
  readonly faults: RecordedFault[] = [];
  pageRequests = 0;
  policy: PageRequestPolicy = 'serve';
  private readonly bindings: Binding[] = [];

  protected constructor(
    readonly handle: GuestHandle,
    readonly pages: PageAllocator,
    protected readonly log: Logger,
  ) {}

  get name(): string {
    return this.handle.name;
  }

  // --- vIOMMU-specific half ------------------------------------------------------------------

  /** Allocate a PASID (VT-d: VCMD ALLOC_PASID; virtio: guest-private). */
  abstract allocPasid(): Promise<number>;
  abstract freePasid(pasid: number): Promise<void>;
  /** Make `proc`'s first-level table the device's translation for `pasid` (PASID entry + flush / ATTACH_TABLE). */
  protected abstract attachProcess(proc: GuestProcess, bdf: string, pasid: number): Promise<void>;
  protected abstract detachProcess(proc: GuestProcess, bdf: string, pasid: number): Promise<void>;
  /** Invalidate cached translations of `range` for `pasid` on `bdf` (after an unmap). */
  protected abstract flushRange(bdf: string, pasid: number, range: FlushRange): Promise<void>;
  /** Release the driver (the VM stays up). */
  protected abstract shutdown(): Promise<void>;

  // --- processes ---------------------------------------------------------------------------

  async createProcess(name: string, levels: FlLevels = 4): Promise<GuestProcess> {
    if (this.processes.has(name)) fail('EEXIST', `${this.name}: a process named '${name}' exists`);
    const proc = await GuestProcess.create(this.handle, this.pages, { levels, name });
    this.processes.set(name, proc);
    return proc;
  }

  process(name: string): GuestProcess {
    const p = this.processes.get(name);
    if (!p) fail('ENOENT', `${this.name}: no process named '${name}'`);
    return p;
  }

  /** Map `pages` fresh zeroed pages of `size` at `va` (2M/1G pages are contiguous, aligned runs). */
  async mapPages(proc: GuestProcess, va: bigint, pages: number, opts: MapOptions = {}): Promise<bigint[]> {
    const size = opts.size ?? '4K';
    if (size === '4K') return proc.mapNew(va, pages * PAGE_SIZE, opts);
    const per = size === '2M' ? 512 : 512 * 512;
    const out: bigint[] = [];
    for (let i = 0; i < pages; i++) {
      const gpa = await this.pages.alloc(per, { align: per });
      try {
        await proc.map(va + BigInt(i * per * PAGE_SIZE), gpa, opts);
      } catch (e) {
        this.pages.free(gpa);
        throw e;
      }
      out.push(gpa);
    }
    return out;
  }

  /**
   * Unmap the leaves covering `pages` 4 KiB pages at `va`, then flush every binding's IOTLB, one
   * page-selective flush per leaf (each leaf's range is naturally aligned, so the flush covers
   * exactly it).
   */
  async unmapPages(proc: GuestProcess, va: bigint, pages: number, flush = true): Promise<void> {
    const end = va + BigInt(pages * PAGE_SIZE);
    const ranges: FlushRange[] = [];
    let cur = va;
    while (cur < end) {
      const r = await proc.unmap(cur);
      ranges.push(r.flush);
      const next = r.va + BigInt(r.flush.npages * PAGE_SIZE);
      cur = next > cur ? next : cur + BigInt(PAGE_SIZE);
    }
    if (!flush) return;
    for (const b of this.bindingsOf(proc)) for (const range of ranges) await this.flushRange(b.bdf, b.pasid, range);
  }

  /** The process exits: unbind everywhere, free its tables and pages. */
  async exit(proc: GuestProcess): Promise<void> {
    for (const b of this.bindingsOf(proc)) await this.unbind(proc, b.bdf);
    await proc.destroy();
    this.processes.delete(proc.name);
  }

  // --- SVA bind ----------------------------------------------------------------------------

  bindingsOf(proc: GuestProcess): Binding[] {
    return this.bindings.filter((b) => b.proc === proc);
  }

  binding(proc: GuestProcess, bdf: string): Binding | undefined {
    return this.bindings.find((b) => b.proc === proc && b.bdf === bdf);
  }

  /** The process bound with `pasid` (on any device). */
  processOfPasid(pasid: number): GuestProcess | undefined {
    return this.bindings.find((b) => b.pasid === pasid)?.proc;
  }

  /**
   * Bind `proc` to `bdf`; returns the PASID. A process has one PASID (its mm's), shared by every
   * device it binds to, as Linux's iommu_sva: the first bind takes `pasid` or allocates one, later
   * binds reuse it (EINVAL when `pasid` names another).
   */
  async bind(proc: GuestProcess, bdf: string, pasid?: number): Promise<number> {
    if (this.binding(proc, bdf)) fail('EEXIST', `${proc.name} is already bound to ${bdf}`);
    const mine = this.procPasid.get(proc);
    if (mine && pasid !== undefined && pasid !== mine.pasid) fail('EINVAL', `${proc.name} already uses PASID ${mine.pasid}, not ${pasid}`);
    const other = pasid === undefined ? undefined : this.bindings.find((b) => b.pasid === pasid && b.proc !== proc);
    if (other) fail('EBUSY', `PASID ${pasid} is bound to process ${other.proc.name}`);
    const owns = !mine && pasid === undefined;
    const id = mine?.pasid ?? pasid ?? (await this.allocPasid());
    try {
      await this.attachProcess(proc, bdf, id);
    } catch (e) {
      if (owns) await this.freePasid(id).catch((err: unknown) => this.log.warn({ err }, 'freeing the PASID of a failed bind failed'));
      throw e;
    }
    if (!mine) this.procPasid.set(proc, { pasid: id, owned: owns });
    this.bindings.push({ proc, bdf, pasid: id });
    return id;
  }

  /** Unbind `proc` from `bdf`; the last unbind of the process frees a PASID a bind allocated. */
  async unbind(proc: GuestProcess, bdf: string): Promise<void> {
    const b = this.binding(proc, bdf);
    if (!b) fail('ENOENT', `${proc.name} is not bound to ${bdf}`);
    await this.detachProcess(proc, bdf, b.pasid);
    this.bindings.splice(this.bindings.indexOf(b), 1);
    if (this.bindingsOf(proc).length > 0) return;
    const mine = this.procPasid.get(proc);
    this.procPasid.delete(proc);
    if (mine?.owned) await this.freePasid(mine.pasid);
  }

  /** Each bound process's PASID, and whether a bind allocated it. */
  private readonly procPasid = new Map<GuestProcess, { pasid: number; owned: boolean }>();

  // --- page requests and faults ----------------------------------------------------------------

  /** Decide and perform the guest's answer to one page request (counts it). */
  protected async handlePageRequest(req: PageRequestInfo): Promise<PageResponse> {
    this.pageRequests++;
    if (this.policy === 'ignore') return 'none';
    if (this.policy === 'refuse') return 'invalid';
    const proc = req.pasid === undefined ? undefined : this.processOfPasid(req.pasid);
    if (!proc) return 'invalid';
    const page = req.addr & ~BigInt(PAGE_SIZE - 1);
    try {
      const t = await proc.translate(page);
      if (t === undefined) await proc.mapNew(page, PAGE_SIZE);
      else if (req.write && !t.writable) return 'invalid';
      return 'success';
    } catch (e) {
      this.log.debug({ err: e, addr: page }, 'page request: cannot fault the page in');
      return 'invalid';
    }
  }

  protected recordFault(f: RecordedFault): void {
    this.faults.push(f);
    if (this.faults.length > 1000) this.faults.splice(0, this.faults.length - 1000);
  }

  /** Exit every process, then release the driver. The VM itself is closed by its owner. */
  async close(): Promise<void> {
    for (const p of [...this.processes.values()]) {
      try {
        await this.exit(p);
      } catch (e) {
        this.log.warn({ err: e, process: p.name }, 'process exit failed while closing');
      }
    }
    await this.shutdown();
  }
}

/** A page allocator over the guest RAM above GUEST_ALLOC_BASE. */
export function guestPageAllocator(handle: GuestHandle, memory: number): PageAllocator {
  const size = BigInt(memory) - GUEST_ALLOC_BASE;
  if (size <= 0n) fail('EINVAL', `guest memory ${memory} is too small for a page allocator`);
  return new PageAllocator(handle, { base: GUEST_ALLOC_BASE, size });
}
