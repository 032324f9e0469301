/**
 * Fault timing of device DMA (docs/conformance.md, "DMA fault visibility"): when a guest's
 * `dma()` resolves with a fault, the fault the IOMMU recorded for it is already in the vIOMMU
 * model — FRCD/FSTS for VT-d, the fault event for virtio-iommu — as a qtest user of QEMU
 * expects, where the device model records the fault before the DMA access returns.
 *
 * The host sends FAULT on the backend channel (a connection of its own, docs/protocol.md §10.11)
 * before it answers DEVICE_DMA on the request channel, but the two connections are read
 * independently, so the FAULT may be processed after the reply. The guest half therefore holds
 * a DMA's fault result until the model has processed the FAULT of that DMA:
 * - the FAULT is matched by the reply's fault fields — requester id, fault address, reason,
 *   PASID-valid and PASID — among the FAULTs processed since the DMA was sent (a sequence mark
 *   taken before DEVICE_DMA), each FAULT satisfying one DMA;
 * - no FAULT is awaited when the reply's reason is 0 (no memory behind the address: the host
 *   records no IOMMU fault), nor when a PAGE_REQUEST of the device was processed while the DMA
 *   was out (PRI: the translation was an ATS request that records no fault; the page request
 *   itself was processed before the DMA could complete, since the DMA waited for its response);
 * - the wait is bounded by FAULT_WAIT_MS: a FAULT the host could not send (no backend channel)
 *   does not hold the DMA for ever; the DMA then resolves with the fault in its result only.
 */
import { FaultFlag, type FaultMessage } from '../vhost/messages/backend.js';
import { DEVICE_DMA_RESULT_PASID_VALID, type DeviceDmaReply } from '../vhost/messages/device-dma.js';
import type { BackendEvent } from '../vhost/roles/frontend.js';

/** Longest a faulted DMA waits for its FAULT to be processed (ms). */
export const FAULT_WAIT_MS = 500;
/** FAULTs kept for matching (older ones can no longer satisfy a DMA). */
const RECENT_FAULTS = 256;

/** Where the backend event stream stood when a DMA was sent. */
export interface DmaMark {
  readonly faultSeq: number;
  readonly pageRequests: number;
}

interface ProcessedFault {
  readonly seq: number;
  readonly msg: FaultMessage;
  claimed: boolean;
}

interface Waiter {
  readonly rid: number;
  readonly mark: DmaMark;
  readonly reply: DeviceDmaReply;
  readonly done: () => void;
}

export class DmaFaultSync {
  private faultSeq = 0;
  private readonly recent: ProcessedFault[] = [];
  private readonly pageRequests = new Map<number, number>();
  private readonly waiters = new Set<Waiter>();
  /** DMAs whose FAULT was matched, and those that gave up at the deadline. */
  readonly counters = { matched: 0, timedOut: 0 };

  /** Take the mark before sending a DMA of device `rid`. */
  mark(rid: number): DmaMark {
    return { faultSeq: this.faultSeq, pageRequests: this.pageRequests.get(rid) ?? 0 };
  }

  /** The model has processed `ev` (called after the model, in the same serialised step). */
  processed(ev: BackendEvent): void {
    if (ev.name === 'PAGE_REQUEST') {
      this.pageRequests.set(ev.msg.rid, (this.pageRequests.get(ev.msg.rid) ?? 0) + 1);
      return;
    }
    if (ev.name !== 'FAULT') return;
    const f: ProcessedFault = { seq: ++this.faultSeq, msg: ev.msg, claimed: false };
    this.recent.push(f);
    if (this.recent.length > RECENT_FAULTS) this.recent.shift();
    for (const w of this.waiters) {
      if (f.seq > w.mark.faultSeq && matches(f.msg, w.rid, w.reply)) {
        f.claimed = true;
        this.waiters.delete(w);
        w.done();
        return;
      }
    }
  }

  /**
   * Resolve once the FAULT of a DMA of device `rid` sent at `mark` that ended with the fault
   * `reply` has been processed, at once when none is to come, or after FAULT_WAIT_MS.
   */
  settle(rid: number, mark: DmaMark, reply: DeviceDmaReply): Promise<void> | undefined {
    if (reply.reason === 0) return undefined;
    if ((this.pageRequests.get(rid) ?? 0) !== mark.pageRequests) return undefined;
    for (const f of this.recent) {
      if (!f.claimed && f.seq > mark.faultSeq && matches(f.msg, rid, reply)) {
        f.claimed = true;
        this.counters.matched++;
        return undefined;
      }
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        this.counters.timedOut++;
        resolve();
      }, FAULT_WAIT_MS);
      const w: Waiter = {
        rid,
        mark,
        reply,
        done: () => {
          clearTimeout(timer);
          this.counters.matched++;
          resolve();
        },
      };
      this.waiters.add(w);
    });
  }
}

function matches(m: FaultMessage, rid: number, r: DeviceDmaReply): boolean {
  const pv = (m.flags & FaultFlag.PASID_VALID) !== 0;
  return m.rid === rid && m.addr === r.fault_addr && m.reason === r.reason && pv === ((r.flags & DEVICE_DMA_RESULT_PASID_VALID) !== 0) && (!pv || m.pasid === r.pasid);
}
