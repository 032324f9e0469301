/**
 * Translation caches: IOTLB entries (with large pages), first-level paging-structure cache
 * entries, and the device-TLB (ATC) of ATS-capable devices.
 *
 * Tagging follows VT-d scalable mode: IOTLB and paging-structure-cache entries are tagged by
 * domain ID and PASID (requests without PASID use RID_PASID), not by requester, so every
 * RID/PASID that uses the same DID and PASID shares entries, exactly as on hardware. A device-TLB
 * belongs to one device and is tagged by the request's PASID (or "no PASID").
 *
 * Entries are never dropped except by an invalidation (or by capacity eviction, which flushes a
 * whole store — hardware may drop any entry at any time, so this is allowed). Hence a missing
 * invalidation is observable: the stale translation is served.
 *
 * Invalidations cost what they touch (docs/performance.md, "Cache invalidation scaling"):
 * - entries live in one bucket per tag (tlb-bucket.ts), so a tag-selective flush (PASID-based
 *   IOTLB all-within-PASID, device-TLB of one PASID) touches that bucket only, and bumps its
 *   generation instead of visiting its entries;
 * - a domain's buckets are indexed by DID, so a domain-selective flush visits that DID's buckets;
 * - within a bucket, range invalidations go through its 2 MiB region index (tlb-bucket.ts);
 * - a bucket that holds nothing and is used by no request context is removed from its store, so
 *   the caches of a PASID, domain or device that goes are freed with it.
 * The hit path is untouched by all of this: a probe of the open-addressing table of the bucket the
 * request context points at (page-hash.ts).
 */
import { fail } from '../../src/errors.js';
import { PasidCacheSlots, slotAt } from './pasid-cache-slots.js';
import { PasidRadix } from './pasid-radix.js';
import { TlbBucket, type BucketOwner } from './tlb-bucket.js';

export { PscEntry, TlbBucket, TlbEntry } from './tlb-bucket.js';

/**
 * A store of buckets with an entry budget: an insert into a full store flushes the whole store
 * first (hardware may drop any entry at any time, so dropping them all is allowed). A bucket that
 * empties while no request context uses it is removed (bucket(…) makes a new one when needed).
 */
export abstract class BucketStore implements BucketOwner {
  /** Translation entries held (paging-structure entries not counted). */
  entries = 0;

  constructor(readonly capacity: number) {}

  insert(b: TlbBucket, vpn: number, level: number, base: number, allow: number): void {
    if (this.entries >= this.capacity) this.invalidateAll();
    if (b.store !== this) this.register(b);
    this.entries += b.insert(vpn, level, base, allow);
  }

  /** Drop every entry and paging-structure entry. */
  invalidateAll(): void {
    for (const b of [...this.allBuckets()]) {
      b.clear();
      this.forgetIfUnused(b);
    }
    this.entries = 0;
  }

  /** Buckets registered (tests and the leak checks count them). */
  abstract get bucketCount(): number;

  /** Every registered bucket. */
  abstract allBuckets(): IterableIterator<TlbBucket>;

  /** Remove `b` when it holds nothing and no context uses it. */
  forgetIfUnused(b: TlbBucket): void {
    if (b.store !== this || !b.unused) return;
    this.unindex(b);
    b.store = null;
  }

  /** Clear `b`, then drop it if unused. Returns live entries removed. */
  protected clearBucket(b: TlbBucket): number {
    const n = b.clear();
    this.entries -= n;
    this.forgetIfUnused(b);
    return n;
  }

  /** Register `b` (made by `bucket`, or removed earlier and used again). */
  protected register(b: TlbBucket): void {
    const cur = this.registered(b);
    if (cur !== undefined && cur !== b) {
      // Only an unused bucket leaves the store, and only a used one is filled: two live buckets
      // for one tag would split its entries.
      fail('EEXIST', `TLB bucket (DID ${b.did}, PASID ${b.pasid}) registered twice`);
    }
    if (cur === undefined) this.index(b);
    b.store = this;
  }

  /** The registered bucket with `b`'s tag, or undefined. */
  protected abstract registered(b: TlbBucket): TlbBucket | undefined;
  /** Add `b` to the store's indexes (its tag is not registered). */
  protected abstract index(b: TlbBucket): void;
  /** Remove `b` (registered) from the store's indexes. */
  protected abstract unindex(b: TlbBucket): void;
}

/**
 * The buckets of one DID: by PASID tag for lookups, in a list for domain-wide flushes, and their
 * PASID-cache slots (pasid-cache-slots.ts).
 */
interface DomainBuckets {
  readonly byPasid: PasidRadix<TlbBucket>;
  readonly slots: PasidCacheSlots;
  /**
   * Every bucket of the DID at its `slot`, and holes (null) where buckets left: removing one
   * touches no other bucket; the list is compacted when a bucket is added and holes are over half.
   */
  readonly list: (TlbBucket | null)[];
  holes: number;
}

/**
 * The IOTLB and paging-structure caches of the IOMMU: buckets by (DID, PASID), with the
 * invalidation granularities of VT-d (VT-d spec §6.5.2: the IOTLB invalidate descriptor 0x2 and
 * the PASID-based-IOTLB invalidate descriptor 0x6).
 */
export class Iotlb extends BucketStore {
  /** Buckets by DID, then PASID tag: domain-selective and page-within-domain flushes visit only a DID's. */
  private readonly byDid = new Map<number, DomainBuckets>();
  private count = 0;

  /** The bucket of (did, pasid), created empty when absent (the caller acquires it). */
  bucket(did: number, pasid: number): TlbBucket {
    let b = this.byDid.get(did)?.byPasid.get(pasid);
    if (b === undefined) {
      b = new TlbBucket(did, pasid);
      this.register(b);
    }
    return b;
  }

  /** The registered bucket of (did, pasid), or undefined (nothing is created). */
  find(did: number, pasid: number): TlbBucket | undefined {
    return this.byDid.get(did)?.byPasid.get(pasid);
  }

  /** The PASID-cache slots of `did`'s buckets, or undefined while `did` has no bucket. */
  slotsOf(did: number): PasidCacheSlots | undefined {
    return this.byDid.get(did)?.slots;
  }

  /** DIDs whose PASID-cache slots hold a cached PASID entry (a snapshot). */
  didsWithHolds(): number[] {
    const out: number[] = [];
    for (const [did, d] of this.byDid) if (d.slots.holds > 0) out.push(did);
    return out;
  }

  get bucketCount(): number {
    return this.count;
  }

  *allBuckets(): IterableIterator<TlbBucket> {
    for (const did of [...this.byDid.keys()]) yield* this.bucketsOf(did);
  }

  /** IOTLB global invalidation, allocation-free: dropping a bucket leaves a hole in its list and moves nothing. */
  override invalidateAll(): void {
    for (const d of this.byDid.values()) {
      const list = d.list;
      for (let i = 0; i < list.length; i++) {
        const b = list[i]!;
        if (b === null) continue;
        b.clear();
        this.forgetIfUnused(b);
      }
    }
    this.entries = 0;
  }

  /** The buckets of `did`, a snapshot (safe to drop buckets while iterating it). */
  bucketsOf(did: number): TlbBucket[] {
    const out: TlbBucket[] = [];
    const list = this.byDid.get(did)?.list;
    if (list !== undefined) for (const b of list) if (b !== null) out.push(b);
    return out;
  }

  /** Buckets of `did` (PASIDs that hold entries or are in use). */
  bucketsOfDomain(did: number): number {
    return this.byDid.get(did)?.byPasid.size ?? 0;
  }

  /** IOTLB domain-selective invalidation: every entry of `did`, all PASIDs. */
  invalidateDomain(did: number): void {
    const list = this.byDid.get(did)?.list;
    if (list === undefined) return;
    // Dropping a bucket leaves a hole and moves nothing; the list is compacted only by an add.
    for (let i = 0; i < list.length; i++) {
      const b = list[i]!;
      if (b !== null) this.clearBucket(b);
    }
  }

  /**
   * IOTLB page-selective-within-domain invalidation of pages [v0, v1] of `did`. Entries from
   * second-level-only / pass-through translations that overlap the range are dropped; entries from
   * first-level and nested translations of the DID are dropped whatever their address (the input
   * address of a nested entry is a GVA, so an SL address cannot select them — VT-d spec §6.5.2,
   * IOTLB invalidate; QEMU intel_iommu.c vtd_hash_remove_by_page), together with their
   * paging-structure caches (which hold SL-translated table addresses).
   */
  invalidatePages(did: number, v0: number, v1: number): void {
    const list = this.byDid.get(did)?.list;
    if (list === undefined) return;
    for (let i = 0; i < list.length; i++) {
      const b = list[i]!;
      if (b === null) continue;
      if (b.firstLevel) this.clearBucket(b);
      else {
        this.entries -= b.removeRange(v0, v1);
        this.forgetIfUnused(b);
      }
    }
  }

  /** PASID-based IOTLB, all-within-PASID: every entry and paging-structure entry of (did, pasid). */
  invalidatePasid(did: number, pasid: number): void {
    const b = this.find(did, pasid);
    if (b !== undefined) this.clearBucket(b);
  }

  /**
   * PASID-based IOTLB, page-selective-within-PASID: first-level / nested entries of (did, pasid)
   * overlapping pages [v0, v1]; paging-structure entries for the range too unless `ih` (the
   * invalidation hint: only leaf entries changed). Entries cached for second-level-only or
   * pass-through translations are not affected (VT-d spec §6.5.2, PASID-based-IOTLB invalidate).
   */
  invalidatePasidPages(did: number, pasid: number, v0: number, v1: number, ih: boolean): void {
    const b = this.find(did, pasid);
    if (b === undefined || !b.firstLevel) return;
    this.entries -= b.removeRange(v0, v1);
    if (!ih) b.removePscRange(v0, v1);
    this.forgetIfUnused(b);
  }

  protected registered(b: TlbBucket): TlbBucket | undefined {
    return this.find(b.did, b.pasid);
  }

  protected index(b: TlbBucket): void {
    let d = this.byDid.get(b.did);
    if (d === undefined) this.byDid.set(b.did, (d = { byPasid: new PasidRadix<TlbBucket>(), slots: new PasidCacheSlots(), list: [], holes: 0 }));
    d.byPasid.set(b.pasid, b);
    b.pcSlots = d.slots.attach(b.pasid);
    b.pcAt = slotAt(b.pasid);
    b.syncOccupied();
    if (d.holes > 16 && d.holes * 2 > d.list.length) compact(d);
    b.slot = d.list.length;
    d.list.push(b);
    this.count++;
  }

  protected unindex(b: TlbBucket): void {
    const d = this.byDid.get(b.did)!;
    d.byPasid.delete(b.pasid);
    d.slots.detach(b.pasid);
    b.pcSlots = null;
    d.list[b.slot] = null;
    d.holes++;
    b.slot = -1;
    this.count--;
    if (d.byPasid.size === 0) this.byDid.delete(b.did);
  }
}

/** Close the holes of `d.list` (renumbering the buckets' slots). */
function compact(d: DomainBuckets): void {
  const list = d.list;
  let k = 0;
  for (let i = 0; i < list.length; i++) {
    const b = list[i]!;
    if (b === null) continue;
    b.slot = k;
    list[k++] = b;
  }
  list.length = k;
  d.holes = 0;
}

/** The device-TLB (address translation cache) of one ATS-enabled device. */
export class DevTlb extends BucketStore {
  private readonly buckets = new Map<number, TlbBucket>();

  /** Bucket for requests with `pasid` (−1 = without PASID), created empty when absent (the caller acquires it). */
  bucket(pasid: number): TlbBucket {
    let b = this.buckets.get(pasid);
    if (b === undefined) {
      b = new TlbBucket(0, pasid);
      this.register(b);
    }
    return b;
  }

  /** The registered bucket of `pasid`, or undefined (nothing is created). */
  find(pasid: number): TlbBucket | undefined {
    return this.buckets.get(pasid);
  }

  /** Drop entries of `pasid` (−1 = requests without PASID); pages [v0, v1] or, without a range, all. */
  invalidate(pasid: number, v0?: number, v1?: number): void {
    const b = this.buckets.get(pasid);
    if (b === undefined) return;
    if (v0 === undefined || v1 === undefined) this.clearBucket(b);
    else {
      this.entries -= b.removeRange(v0, v1);
      this.forgetIfUnused(b);
    }
  }

  get bucketCount(): number {
    return this.buckets.size;
  }

  allBuckets(): IterableIterator<TlbBucket> {
    return [...this.buckets.values()].values();
  }

  protected registered(b: TlbBucket): TlbBucket | undefined {
    return this.buckets.get(b.pasid);
  }

  protected index(b: TlbBucket): void {
    this.buckets.set(b.pasid, b);
  }

  protected unindex(b: TlbBucket): void {
    this.buckets.delete(b.pasid);
  }
}
