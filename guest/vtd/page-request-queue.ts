/**
 * The page request queue in guest RAM (VT-d spec rev. 5.10 §7.4.1 "Handling of Page Requests",
 * §11.4.11 "Page Request Queue Interface"): PQA (base, PQS),
 * PQH (software's head) and PQT (hardware's tail), 32-byte page request descriptors, PRS.PPR /
 * PRS.PRO and the page request event (PECTL).
 *
 * - A request is written at PQA + PQT, PQT advances by 32 (wrapping at 4 KiB << PQS), PRS.PPR is
 *   set and the page request event raised when PPR was clear (§11.4.11.5 PECTL.IP: setting PPR
 *   while it is already set is not a new interrupt condition; Linux `prq_event_thread` clears
 *   PPR before it reads PQT, so requests written after that raise a new event).
 * - The queue is full when advancing PQT would make it equal PQH: the request is not written,
 *   PRS.PRO is set (RW1C) and the caller answers the group itself (hardware auto-responds).
 * - While PRO is set further requests are dropped the same way (the spec stops writing until
 *   software clears PRO).
 * - Requests are remembered by (RID, PASID, PRGI) until a page group response answers them.
 */
import type { TraceBus } from '../../src/trace/bus.js';
import { getField, hex64, wordsToBytes } from '../../src/vtd/layout.js';
import { encodePageRequest, PAGE_REQ_DSC_SIZE } from '../../src/vtd/page-request.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { PQA_REG, PRS, VTD_PQ_PTR_MASK } from '../../src/vtd/registers.js';
import { PageRequestFlag, type PageRequestMessage } from '../../vhost/messages/backend.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { EventInterrupts } from './interrupts.js';
import type { RegisterFile } from './register-file.js';

export type PageRequestOutcome = 'queued' | 'overflow' | 'not-configured';

export function pageRequestKey(rid: number, pasid: number | undefined, prgi: number): string {
  return `${rid}:${pasid ?? -1}:${prgi}`;
}

export class PageRequestQueue {
  readonly counters = { queued: 0, overflow: 0, notConfigured: 0, answered: 0, unmatched: 0 };
  private readonly pending = new Map<string, PageRequestMessage>();

  constructor(
    private readonly regs: RegisterFile,
    private readonly ram: GuestRam,
    private readonly interrupts: EventInterrupts,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  /** Requests written to the queue and not yet answered. */
  get outstanding(): number {
    return this.pending.size;
  }

  deliver(m: PageRequestMessage): PageRequestOutcome {
    const hasPasid = (m.flags & PageRequestFlag.PASID_VALID) !== 0;
    const args = { rid: m.rid, pasid: hasPasid ? m.pasid : null, prgi: m.prgi, addr: hex64(m.addr) };
    const pqa = this.regs.get('PQA');
    const base = getField(pqa, PQA_REG.field.PQA) << 12n;
    if (pqa === 0n) {
      this.counters.notConfigured++;
      this.trace.emit({ kind: 'page-request', side: 'guest', vm: this.vm, name: 'page request: no queue', args });
      return 'not-configured';
    }
    const size = PAGE_SIZE << getField(pqa, PQA_REG.field.PQS);
    const tail = this.regs.get('PQT') & VTD_PQ_PTR_MASK;
    const head = this.regs.get('PQH') & VTD_PQ_PTR_MASK;
    const next = (tail + BigInt(PAGE_REQ_DSC_SIZE)) % size;
    const full = next === head % size;
    if (full || (this.regs.getN('PRS') & PRS.PRO) !== 0 || base + size > BigInt(this.ram.size)) {
      this.regs.update('PRS', BigInt(PRS.PRO));
      this.counters.overflow++;
      this.trace.emit({ kind: 'page-request', side: 'guest', vm: this.vm, name: 'page request overflow (PRO)', args });
      return 'overflow';
    }
    const words = encodePageRequest({
      PP: hasPasid,
      RID: m.rid,
      PASID: hasPasid ? m.pasid : 0,
      ER: (m.flags & PageRequestFlag.EXEC) !== 0,
      PMR: (m.flags & PageRequestFlag.PRIV) !== 0,
      RDR: (m.flags & PageRequestFlag.READ) !== 0,
      WRR: (m.flags & PageRequestFlag.WRITE) !== 0,
      LPIG: (m.flags & PageRequestFlag.LPIG) !== 0,
      PRGI: m.prgi,
      ADDR: BigInt.asUintN(64, m.addr) >> 12n,
    });
    this.ram.write(Number(base + tail), wordsToBytes(words));
    this.regs.set('PQT', next);
    const pprWasSet = (this.regs.getN('PRS') & PRS.PPR) !== 0;
    this.regs.update('PRS', BigInt(PRS.PPR));
    this.pending.set(pageRequestKey(m.rid, hasPasid ? m.pasid : undefined, m.prgi), m);
    this.counters.queued++;
    this.trace.emit({ kind: 'page-request', side: 'guest', vm: this.vm, name: 'page request queued', args: { ...args, pqt: Number(next) } });
    if (!pprWasSet) this.interrupts.raise('page-request');
    return 'queued';
  }

  /** The outstanding request a page group response answers (and forget it), if any. */
  take(rid: number, pasid: number | undefined, prgi: number): PageRequestMessage | undefined {
    const key = pageRequestKey(rid, pasid, prgi);
    const m = this.pending.get(key);
    if (m === undefined) {
      this.counters.unmatched++;
      return undefined;
    }
    this.pending.delete(key);
    this.counters.answered++;
    return m;
  }

  /** After software wrote PRS: clearing PPR services the page request event. */
  afterStatusWrite(): void {
    if ((this.regs.getN('PRS') & PRS.PPR) === 0) this.interrupts.serviced('page-request');
  }

  /** Forget outstanding requests of a device (e.g. its context entry lost PRE). */
  drop(rid: number): PageRequestMessage[] {
    const out: PageRequestMessage[] = [];
    for (const [k, m] of this.pending) if (m.rid === rid) (out.push(m), this.pending.delete(k));
    return out;
  }
}
