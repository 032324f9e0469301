/**
 * Outstanding PRI page requests of one VM (docs/design.md §4, "DMA test devices"; docs/protocol.md
 * §5.6–5.7). A device whose translation faults with PRI enabled sends a PAGE_REQUEST on the
 * backend channel and waits here for the PAGE_RESPONSE with the same (RID, PASID, PRGI).
 *
 * Bounds: at most `max` requests are outstanding per VM (a device that would exceed it gets
 * EAGAIN and its DMA fails; nothing is queued without bound); each waits at most `timeoutMs`,
 * then resolves as 'timeout'. PRGIs are 9 bits and allocated per device, skipping ones in use.
 *
 * A PAGE_RESPONSE that matches nothing outstanding is EINVAL (iommufd fault queue: an unknown
 * or already-used cookie is EINVAL, Linux drivers/iommu/iommufd/fault.c iommufd_fault_fops_write).
 */
import { fail } from '../../src/errors.js';

/** Default cap of outstanding page requests per VM. */
export const DEFAULT_MAX_PENDING_PAGE_REQUESTS = 64;
/** Default wait for a PAGE_RESPONSE (ms). */
export const DEFAULT_PAGE_REQUEST_TIMEOUT_MS = 5000;
const PRGI_COUNT = 512;

/** How a page request ended: a PAGE_RESPONSE code, or no answer in time, or the VM went away. */
export type PageRequestOutcome = 'success' | 'invalid' | 'failure' | 'timeout' | 'cancelled';

const CODE_OUTCOME: Record<number, PageRequestOutcome> = { 0: 'success', 1: 'invalid', 2: 'failure' };

interface Pending {
  resolve(o: PageRequestOutcome): void;
  timer: NodeJS.Timeout;
}

function key(rid: number, pasid: number | null, prgi: number): string {
  return `${rid}/${pasid ?? '-'}/${prgi}`;
}

export class PageRequestTracker {
  private readonly pending = new Map<string, Pending>();
  private readonly nextPrgi = new Map<number, number>();

  constructor(
    readonly max = DEFAULT_MAX_PENDING_PAGE_REQUESTS,
    readonly timeoutMs = DEFAULT_PAGE_REQUEST_TIMEOUT_MS,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /**
   * Reserve a PRGI for a request of (rid, pasid) and return it with a promise of the outcome.
   * EAGAIN: the VM has `max` requests outstanding, or the device has all 512 PRGIs in use.
   */
  open(rid: number, pasid: number | null): { prgi: number; outcome: Promise<PageRequestOutcome> } {
    if (this.pending.size >= this.max) fail('EAGAIN', `${this.pending.size} page requests are already outstanding (cap ${this.max})`);
    let prgi = this.nextPrgi.get(rid) ?? 0;
    let tries = 0;
    while (this.pending.has(key(rid, pasid, prgi))) {
      prgi = (prgi + 1) % PRGI_COUNT;
      if (++tries === PRGI_COUNT) fail('EAGAIN', `device ${rid} has every page request group index in use`);
    }
    this.nextPrgi.set(rid, (prgi + 1) % PRGI_COUNT);
    const k = key(rid, pasid, prgi);
    const outcome = new Promise<PageRequestOutcome>((resolve) => {
      const timer = setTimeout(() => this.settle(k, 'timeout'), this.timeoutMs);
      timer.unref?.();
      this.pending.set(k, { resolve, timer });
    });
    return { prgi, outcome };
  }

  /** PAGE_RESPONSE: settle the matching request. EINVAL: nothing outstanding matches. */
  respond(rid: number, pasid: number | null, prgi: number, code: number): void {
    const k = key(rid, pasid, prgi);
    if (!this.pending.has(k)) fail('EINVAL', `no page request outstanding for RID ${rid}, PASID ${pasid ?? 'none'}, PRGI ${prgi}`);
    this.settle(k, CODE_OUTCOME[code] ?? 'failure');
  }

  /** Settle the request (rid, pasid, prgi) as `o` (e.g. its PAGE_REQUEST could not be sent). */
  abandon(rid: number, pasid: number | null, prgi: number, o: PageRequestOutcome): void {
    this.settle(key(rid, pasid, prgi), o);
  }

  /** Settle every outstanding request as 'cancelled' (disconnect, teardown). */
  cancelAll(): void {
    for (const k of [...this.pending.keys()]) this.settle(k, 'cancelled');
  }

  private settle(k: string, o: PageRequestOutcome): void {
    const p = this.pending.get(k);
    if (!p) return;
    this.pending.delete(k);
    clearTimeout(p.timer);
    p.resolve(o);
  }
}
