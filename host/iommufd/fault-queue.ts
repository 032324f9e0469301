/**
 * A fault queue (IOMMU_FAULT_QUEUE_ALLOC; drivers/iommu/iommufd/eventq.c): the page requests of
 * devices attached to HWPTs allocated with IOMMU_HWPT_FAULT_ID_VALID, as groups of
 * `struct iommu_hwpt_pgfault` records, each group with a cookie; the user answers a group by its
 * cookie with `struct iommu_hwpt_page_response`.
 *
 * - A group becomes readable when its last page (LAST_PAGE) arrives; read returns whole groups
 *   only, as many as fit in `max` records (a group that does not fit stays queued). With a
 *   `deliver` hook (the VM's backend channel, docs/protocol.md §13.10) a complete group is
 *   pushed at once instead and counts as read.
 * - A read group waits for its response; respond with an unknown or already-used cookie, or a
 *   code other than SUCCESS (0) / INVALID (1), is EINVAL (iommufd_fault_fops_write).
 * - Destroying the queue answers every queued and unanswered group with INVALID
 *   (iommufd_fault_destroy); DESTROY is EBUSY while a HWPT uses the queue.
 */
import { fail } from '../../src/errors.js';
import { IOMMU_PGFAULT_FLAGS, IOMMUFD_PAGE_RESP, type HwptPgfault } from '../../vhost/messages/iommufd.js';
import type { IommufdObject } from './object-table.js';

/** Records waiting in one queue (a cap on guest-uncontrolled growth: more is answered INVALID at once). */
export const MAX_QUEUED_RECORDS = 4096;

/** Where a group's answer goes (the host IOMMU's page response for that device / PASID / PRGI). */
export type GroupResponder = (code: (typeof IOMMUFD_PAGE_RESP)[keyof typeof IOMMUFD_PAGE_RESP]) => void;

interface FaultGroup {
  cookie: number;
  records: HwptPgfault[];
  respond: GroupResponder;
}

export class FaultQueue implements IommufdObject {
  readonly kind = 'fault' as const;
  users = 0;
  private nextCookie = 1;
  /** Groups still collecting pages, by (dev_id, PASID, group). */
  private readonly partial = new Map<string, FaultGroup>();
  private readonly readable: FaultGroup[] = [];
  /** Read, waiting for a response, by cookie. */
  private readonly awaiting = new Map<number, FaultGroup>();
  private queuedRecords = 0;

  /**
   * Delivers a complete group to the front-end at once (the backend channel); true when sent,
   * and the group then waits for its response as if read. Null or false: it waits for read().
   */
  constructor(
    readonly id: number,
    private readonly deliver: ((records: HwptPgfault[]) => boolean) | null = null,
  ) {}

  get queued(): number {
    return this.readable.length;
  }

  get unanswered(): number {
    return this.awaiting.size;
  }

  /** A page request of `rec` (cookie assigned here); `respond` completes the device's request. */
  push(rec: Omit<HwptPgfault, 'cookie'>, respond: GroupResponder): void {
    if (this.queuedRecords >= MAX_QUEUED_RECORDS) {
      respond(IOMMUFD_PAGE_RESP.INVALID);
      return;
    }
    const key = `${rec.dev_id}/${(rec.flags & IOMMU_PGFAULT_FLAGS.PASID_VALID) !== 0 ? rec.pasid : -1}/${rec.grpid}`;
    let g = this.partial.get(key);
    if (g === undefined) {
      g = { cookie: this.takeCookie(), records: [], respond };
      this.partial.set(key, g);
    }
    g.records.push({ ...rec, cookie: g.cookie });
    this.queuedRecords++;
    if ((rec.flags & IOMMU_PGFAULT_FLAGS.LAST_PAGE) !== 0) {
      this.partial.delete(key);
      if (this.deliver !== null && this.deliver(g.records)) {
        this.queuedRecords -= g.records.length;
        this.awaiting.set(g.cookie, g);
      } else {
        this.readable.push(g);
      }
    }
  }

  /** read(): whole groups, at most `max` records. */
  read(max: number): HwptPgfault[] {
    const out: HwptPgfault[] = [];
    while (this.readable.length > 0 && out.length + this.readable[0]!.records.length <= max) {
      const g = this.readable.shift()!;
      out.push(...g.records);
      this.queuedRecords -= g.records.length;
      this.awaiting.set(g.cookie, g);
    }
    return out;
  }

  /** write() of one page response. EINVAL: bad code, or a cookie not waiting for a response. */
  respond(cookie: number, code: number, what: string): void {
    if (code !== IOMMUFD_PAGE_RESP.SUCCESS && code !== IOMMUFD_PAGE_RESP.INVALID) fail('EINVAL', `${what}: response code ${code} is not SUCCESS (0) or INVALID (1)`);
    const g = this.awaiting.get(cookie);
    if (g === undefined) fail('EINVAL', `${what}: no group with cookie ${cookie} waits for a response`);
    this.awaiting.delete(cookie);
    g.respond(code as 0 | 1);
  }

  /** Answer every group of `devId` still here with INVALID (the device is unbound). */
  dropDevice(devId: number): void {
    const mine = (g: FaultGroup) => g.records[0]?.dev_id === devId;
    for (const [k, g] of [...this.partial]) if (mine(g)) { this.partial.delete(k); this.queuedRecords -= g.records.length; g.respond(IOMMUFD_PAGE_RESP.INVALID); }
    for (let i = this.readable.length - 1; i >= 0; i--) {
      const g = this.readable[i]!;
      if (mine(g)) { this.readable.splice(i, 1); this.queuedRecords -= g.records.length; g.respond(IOMMUFD_PAGE_RESP.INVALID); }
    }
    for (const [c, g] of [...this.awaiting]) if (mine(g)) { this.awaiting.delete(c); g.respond(IOMMUFD_PAGE_RESP.INVALID); }
  }

  /** Destroy: answer everything still here with INVALID. */
  close(): void {
    const all = [...this.partial.values(), ...this.readable, ...this.awaiting.values()];
    this.partial.clear();
    this.readable.length = 0;
    this.awaiting.clear();
    this.queuedRecords = 0;
    for (const g of all) g.respond(IOMMUFD_PAGE_RESP.INVALID);
  }

  private takeCookie(): number {
    const c = this.nextCookie;
    this.nextCookie = c >= 0xffff_ffff ? 1 : c + 1;
    return c;
  }
}
