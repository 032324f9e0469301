/**
 * Per-requester translation state: one context per (device, PASID or "no PASID"). It holds the
 * PASID-cache entry for the request's PASID entry and direct references to the IOTLB bucket
 * (DID, PASID) and device-TLB bucket the request uses, so an IOTLB hit costs one probe of that
 * bucket's table (page-hash.ts).
 */
import { fail } from '../../src/errors.js';
import { RID_PASID } from './constants.js';
import type { CachedPasidEntry } from './pasid-cache.js';
import { GEN_MASK, NO_GENERATION, NO_SLOTS } from './pasid-cache-slots.js';
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
   * The PASID entry as cached; valid only while `peGen` equals the generation in the PASID-cache
   * slot of its tag (`pcLeaf[pcAt] & GEN_MASK`): a PASID-cache invalidation advances that
   * generation and leaves the context untouched (pasid-cache-slots.ts, pasid-cache-index.ts).
   */
  private cached: CachedPasidEntry | null = null;
  /** Leaf holding the PASID-cache slot of the entry's tag (NO_SLOTS while nothing is cached). */
  pcLeaf: Int32Array = NO_SLOTS;
  /** Index of that slot in `pcLeaf`. */
  pcAt = 0;
  /** The slot's generation when the entry was cached (NO_GENERATION while nothing is cached). */
  peGen = NO_GENERATION;
  /** IOTLB bucket (pe.did, peIndex) while `pe` is cached. */
  iotlb: TlbBucket = EMPTY_BUCKET;
  /** First cache the request looks in: the device-TLB bucket while ATS is enabled, else `iotlb`. */
  first: TlbBucket = EMPTY_BUCKET;
  /** Device-TLB bucket while the device has ATS enabled, else null. */
  dtlb: TlbBucket | null;
  /** PASID entry index: the PASID, or RID_PASID for requests without PASID. */
  readonly peIndex: number;
  /** The device's requester ID (`device.rid`, here so a lookup by (RID, PASID) reads one object). */
  readonly rid: number;
  /** IOTLB / device-TLB hits and misses of this context's requests (per-device statistics). */
  hits = 0;
  misses = 0;

  constructor(
    readonly device: ContextDevice,
    /** PASID of the requests, −1 for requests without PASID. */
    readonly pasid: number,
  ) {
    this.peIndex = pasid < 0 ? RID_PASID : pasid;
    this.rid = device.rid;
    this.dtlb = device.devTlb === null || !device.atsEnabled ? null : device.devTlb.bucket(pasid);
    this.dtlb?.acquire();
  }

  /** PASID-cache entry, or null when not cached (or invalidated since). */
  get pe(): CachedPasidEntry | null {
    return (this.pcLeaf[this.pcAt]! & GEN_MASK) === this.peGen ? this.cached : null;
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

  /**
   * Record the PASID entry `pe`, whose IOTLB entries live in `bucket` (DID pe.did, tag peIndex;
   * registered in the IOTLB, so it has a PASID-cache slot). The hold on the slot is the index's
   * (PasidCacheIndex.load, which calls this).
   */
  cachePasidEntry(pe: CachedPasidEntry, bucket: TlbBucket): void {
    const leaf = bucket.pcSlots;
    if (leaf === null) fail('EINVAL', `IOTLB bucket (DID ${bucket.did}, PASID ${bucket.pasid}) is not registered`);
    this.cached = pe;
    this.iotlb = bucket;
    this.pcLeaf = leaf;
    this.pcAt = bucket.pcAt;
    this.peGen = leaf[bucket.pcAt]! & GEN_MASK;
    this.first = this.dtlb ?? bucket;
  }

  /**
   * Forget the cached PASID entry, valid or invalidated (PasidCacheIndex calls this after it
   * released the entry's hold, so the index stays exact).
   */
  dropPasidEntry(): void {
    this.cached = null;
    this.iotlb = EMPTY_BUCKET;
    this.pcLeaf = NO_SLOTS;
    this.pcAt = 0;
    this.peGen = NO_GENERATION;
    this.first = EMPTY_BUCKET;
  }

  /** The device is going away: release the buckets this context uses (its PASID entry went from the index first). */
  releaseBuckets(): void {
    this.dropPasidEntry();
    this.dtlb?.release();
    this.dtlb = null;
  }
}
