/**
 * Per-requester translation state: one context per (device, PASID or "no PASID"). It holds the
 * PASID-cache entry for the request's PASID entry and direct references to the IOTLB bucket
 * (DID, PASID) and device-TLB bucket the request uses, so an IOTLB hit costs one Map lookup.
 */
import { RID_PASID } from './constants.js';
import type { IommuDevice } from './device.js';
import type { CachedPasidEntry } from './pasid-cache.js';
import { TlbBucket } from './tlb.js';

/** A bucket that is never filled: what a context points at while its PASID entry is not cached. */
export const EMPTY_BUCKET = new TlbBucket(-1, -1);

export class RequestContext {
  /** PASID-cache entry, or null when not cached. */
  pe: CachedPasidEntry | null = null;
  /** IOTLB bucket (pe.did, peIndex) while `pe` is cached. */
  iotlb: TlbBucket = EMPTY_BUCKET;
  /** First cache the request looks in: the device-TLB bucket for ATS devices, else `iotlb`. */
  first: TlbBucket = EMPTY_BUCKET;
  /** Device-TLB bucket (ATS devices), fixed for the context's life. */
  readonly dtlb: TlbBucket | null;
  /** PASID entry index: the PASID, or RID_PASID for requests without PASID. */
  readonly peIndex: number;

  constructor(
    readonly device: IommuDevice,
    /** PASID of the requests, −1 for requests without PASID. */
    readonly pasid: number,
  ) {
    this.peIndex = pasid < 0 ? RID_PASID : pasid;
    this.dtlb = device.devTlb === null ? null : device.devTlb.bucket(pasid);
  }

  /** Drop the cached PASID entry (PASID-cache invalidation). */
  dropPasidEntry(): void {
    this.pe = null;
    this.iotlb = EMPTY_BUCKET;
    this.first = EMPTY_BUCKET;
  }
}
