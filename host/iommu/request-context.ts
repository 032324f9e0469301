/**
 * Per-requester translation state: one context per (device, PASID or "no PASID"). It holds the
 * PASID-cache entry for the request's PASID entry and direct references to the IOTLB bucket
 * (DID, PASID) and device-TLB bucket the request uses, so an IOTLB hit costs one probe of that
 * bucket's table (page-hash.ts).
 */
import { RID_PASID } from './constants.js';
import type { CachedPasidEntry } from './pasid-cache.js';
import { TlbBucket, type DevTlb } from './tlb.js';

/**
 * What a context uses of its device (IommuDevice has all of it): the requester ID, the context
 * entry's PASID directory pointer, and the device-TLB with its ATS Enable.
 */
export interface ContextDevice {
  readonly rid: number;
  readonly pasidDirPtr: number;
  readonly devTlb: DevTlb | null;
  readonly atsEnabled: boolean;
}

/** A bucket that is never filled: what a context points at while its PASID entry is not cached. */
export const EMPTY_BUCKET = new TlbBucket(-1, -1);

export class RequestContext {
  /**
   * The PASID entry as cached; valid only while `peGen` equals the bucket's `pcGen` (a
   * PASID-cache invalidation advances the bucket's and leaves the context untouched:
   * pasid-cache-index.ts).
   */
  private cached: CachedPasidEntry | null = null;
  /** `iotlb.pcGen` when the entry was cached. */
  peGen = 0;
  /** IOTLB bucket (pe.did, peIndex) while `pe` is cached. */
  iotlb: TlbBucket = EMPTY_BUCKET;
  /** First cache the request looks in: the device-TLB bucket while ATS is enabled, else `iotlb`. */
  first: TlbBucket = EMPTY_BUCKET;
  /** Device-TLB bucket while the device has ATS enabled, else null. */
  dtlb: TlbBucket | null;
  /** PASID entry index: the PASID, or RID_PASID for requests without PASID. */
  readonly peIndex: number;
  /** IOTLB / device-TLB hits and misses of this context's requests (per-device statistics). */
  hits = 0;
  misses = 0;

  constructor(
    readonly device: ContextDevice,
    /** PASID of the requests, −1 for requests without PASID. */
    readonly pasid: number,
  ) {
    this.peIndex = pasid < 0 ? RID_PASID : pasid;
    this.dtlb = device.devTlb === null || !device.atsEnabled ? null : device.devTlb.bucket(pasid);
    this.dtlb?.acquire();
  }

  /** PASID-cache entry, or null when not cached (or invalidated since). */
  get pe(): CachedPasidEntry | null {
    return this.peGen === this.iotlb.pcGen ? this.cached : null;
  }

  /** Follow the device's ATS Enable: use its device-TLB bucket (on) or translate through the IOTLB only (off). */
  setAts(on: boolean): void {
    const tlb = this.device.devTlb;
    const old = this.dtlb;
    this.dtlb = on && tlb !== null ? tlb.bucket(this.pasid) : null;
    this.dtlb?.acquire();
    old?.release();
    if (this.pe !== null) this.first = this.dtlb ?? this.iotlb;
  }

  /** Cache the PASID entry `pe`, whose IOTLB entries live in `bucket` (DID pe.did, tag peIndex). */
  cachePasidEntry(pe: CachedPasidEntry, bucket: TlbBucket): void {
    const old = this.iotlb;
    // An invalidated entry's hold on its bucket went with the invalidation.
    const held = this.cached !== null && this.peGen === old.pcGen;
    bucket.acquire();
    if (held) old.release();
    this.cached = pe;
    this.iotlb = bucket;
    this.peGen = bucket.pcGen;
    this.first = this.dtlb ?? bucket;
  }

  /**
   * Drop the cached PASID entry (PASID-cache invalidation; PasidCacheIndex calls this so the
   * index stays exact).
   */
  dropPasidEntry(): void {
    const b = this.iotlb;
    const held = this.cached !== null && this.peGen === b.pcGen;
    this.cached = null;
    this.iotlb = EMPTY_BUCKET;
    this.peGen = EMPTY_BUCKET.pcGen;
    this.first = EMPTY_BUCKET;
    if (held) b.release();
  }

  /** The device is going away: release the buckets this context uses. */
  releaseBuckets(): void {
    this.dropPasidEntry();
    this.dtlb?.release();
    this.dtlb = null;
  }
}
