/**
 * A PCI requester known to the IOMMU: its RID (bus << 8 | devfn), capabilities (PASID width, ATS,
 * PRI), its physical PASID table, the routes attached through it, its device-TLB (ATS), its
 * fault handler and its outstanding page requests.
 *
 * ATS is a capability (`ats`) and a runtime switch (`atsEnabled`, the ATS control register's
 * Enable bit, PCIe ATS 5.1.3): only while it is on does the device cache translations in its
 * device-TLB; with it off every request is translated by the IOMMU. HostIommu.setAtsEnabled
 * flips it (and drops the device-TLB when it goes off).
 *
 * The context entry of the RID is modelled by `pasidDirPtr` (PASIDDIRPTR), `pasidBits` (PDTS /
 * PASID enable) and `pri` (PRE): a request is checked against these before its PASID entry.
 */
import { formatBdf } from '../../src/pci.js';
import type { Attachment } from './domain.js';
import type { FaultHandler } from './fault.js';
import type { PasidTable } from './pasid-table.js';
import type { RequestContext } from './request-context.js';
import { DevTlb } from './tlb.js';

/** Page group response codes (VT-d page group response descriptor, PCIe PRG response). */
export const PageResponseCode = {
  SUCCESS: 0x0,
  INVALID: 0x1,
  FAILURE: 0xf,
} as const;
export type PageResponseCodeValue = (typeof PageResponseCode)[keyof typeof PageResponseCode];

export interface PendingPageRequest {
  readonly pasid: number | null;
  readonly prgi: number;
  resolve(code: PageResponseCodeValue): void;
}

export class IommuDevice {
  readonly bdf: string;
  /** Context-entry PASIDDIRPTR: HPA of the PASID directory the hardware walks. */
  pasidDirPtr: number;
  /** Route for requests without PASID (the default domain), or null. */
  defaultAttachment: Attachment | null = null;
  /** Routes by PASID. */
  readonly pasidAttachments = new Map<number, Attachment>();
  /** Translation contexts by PASID (−1 = without PASID). */
  readonly contexts = new Map<number, RequestContext>();
  readonly devTlb: DevTlb | null;
  faultHandler: FaultHandler | null = null;
  /** ATS Enable: the device-TLB is filled and consulted only while set (needs `ats`). */
  atsEnabled: boolean;
  /** Outstanding page requests by key (pasid + 1) · 512 + prgi. */
  readonly pendingPageRequests = new Map<number, PendingPageRequest>();

  constructor(
    readonly rid: number,
    readonly name: string,
    /** PASID width in bits (0 = no PASID capability). */
    readonly pasidBits: number,
    readonly ats: boolean,
    readonly pri: boolean,
    readonly pasidTable: PasidTable,
    devTlbCapacity: number,
    atsEnabled: boolean,
  ) {
    this.bdf = formatBdf(rid);
    this.pasidDirPtr = pasidTable.dirHpa;
    this.devTlb = ats ? new DevTlb(devTlbCapacity) : null;
    this.atsEnabled = ats && atsEnabled;
  }

  /** Hits and misses of contexts that were dropped (their routes went), so the totals never go back. */
  private retiredHits = 0;
  private retiredMisses = 0;

  /** IOTLB or device-TLB hits of this device's requests (counted per context: nothing extra on the hit path). */
  get iotlbHits(): number {
    let n = this.retiredHits;
    for (const c of this.contexts.values()) n += c.hits;
    return n;
  }

  /** Translations of this device's requests that missed every cache and walked the tables. */
  get iotlbMisses(): number {
    let n = this.retiredMisses;
    for (const c of this.contexts.values()) n += c.misses;
    return n;
  }

  /** Remove the context of `pasid` (−1: requests without PASID), keeping its counts in the totals. */
  retireContext(ctx: RequestContext): void {
    if (this.contexts.get(ctx.pasid) !== ctx) return;
    this.retiredHits += ctx.hits;
    this.retiredMisses += ctx.misses;
    this.contexts.delete(ctx.pasid);
  }

  /** Number of routes attached through this device. */
  get attachmentCount(): number {
    return this.pasidAttachments.size + (this.defaultAttachment === null ? 0 : 1);
  }
}
