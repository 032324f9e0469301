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
 * Keys are 4 KiB page numbers (`vpn` = address / 4096, exact up to 2^52, i.e. every 64-bit
 * address): 4 KiB entries under `vpn`, 2 MiB under ⌊vpn/512⌋, 1 GiB under ⌊vpn/2^18⌋, each in its
 * own Map. A paging-structure-cache entry for a level-L entry (L = 2..5) is keyed by
 * ⌊vpn / 512^(L−1)⌋.
 *
 * Invalidations cost what they touch (docs/performance.md, "Cache invalidation scaling"):
 * - entries live in one bucket per tag, so a tag-selective flush (PASID-based IOTLB
 *   all-within-PASID, device-TLB of one PASID) touches that bucket only, and bumps its
 *   generation instead of visiting its entries;
 * - a domain's buckets are indexed by DID, so a domain-selective flush visits that DID's buckets;
 * - the 4 KiB entries of a bucket are also listed by 2 MiB region, so a range invalidation visits
 *   the regions in the range and, in them, the entries cached there — O(regions in range +
 *   entries there), never O(bucket size) — and marks them stale (no Map operation: a stale entry
 *   is a miss, reused by a refill, purged with the others when they outnumber the live ones); for
 *   the large-page and paging-structure maps, whose keys per range are few, the range's keys are
 *   looked up one by one, or the map scanned when it holds fewer keys than the range;
 * - a bucket that holds nothing and is used by no request context is removed from its store.
 * The hit path is untouched: one Map lookup in the bucket the context points at.
 */
import { fail } from '../../src/errors.js';

/** Generation of an entry invalidated by a range invalidation (never a bucket's generation). */
const STALE_GEN = -1;

/** One cached translation: the HPA of its page and the access classes it permits. */
export class TlbEntry {
  constructor(
    /** Its key in its level's map (the page number for a 4 KiB entry). */
    readonly key: number,
    /** HPA of the (4 KiB / 2 MiB / 1 GiB) page. */
    public base: number,
    /** Bit set of permitted access classes (constants.ts CLASS_BIT_OF_FLAGS). */
    public allow: number,
    /** Leaf level: 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB. */
    public level: number,
    /** Bucket generation the entry was filled in; an older one means invalidated. */
    public gen: number,
  ) {}
}

/**
 * A cached non-leaf first-level entry: the HPA of the table it points to (already translated
 * through the second level in nested mode) and the permissions accumulated down to it.
 */
export class PscEntry {
  constructor(
    /** HPA of the next-level FL table. */
    public tbl: number,
    /** The second level permits writing that table (A/D updates); always true without nesting. */
    public tblWritable: boolean,
    /** GPA of the next-level table (nested), to redo its SL translation for a write. */
    public tblGpa: number,
    /** AND of R/W over the entries above and including this one. */
    public rw: boolean,
    /** AND of U/S. */
    public us: boolean,
    /** OR of XD (when NXE). */
    public xd: boolean,
    public gen: number,
  ) {}
}

const PAGES_2M = 512;
const PAGES_1G = 262144;
/** 4 KiB pages covered by one entry of each level: 512^(level − 1). */
const LEVEL_SPAN_PAGES = [0, 1, 512, 262144, 134217728, 68719476736];
/**
 * Stale entries are kept for reuse until a map holds this many keys; then a full flush really
 * empties the maps, and an insert purges stale keys when they are at least 3/4 of the map.
 */
const STALE_LIMIT = 4096;

interface Stamped {
  gen: number;
}

/**
 * Delete keys k0..k1 of `m`; returns how many of the deleted entries were live (gen === `gen`).
 * Costs O(min(k1 − k0 + 1, m.size)): key by key when the range has fewer keys than the map,
 * else one pass over the map.
 */
function removeKeys<V extends Stamped>(m: Map<number, V>, k0: number, k1: number, gen: number): number {
  if (m.size === 0) return 0;
  let live = 0;
  if (k1 - k0 + 1 <= m.size) {
    for (let k = k0; k <= k1; k++) {
      const e = m.get(k);
      if (e === undefined) continue;
      m.delete(k);
      if (e.gen === gen) live++;
    }
  } else {
    for (const [k, e] of m) {
      if (k >= k0 && k <= k1) {
        m.delete(k);
        if (e.gen === gen) live++;
      }
    }
  }
  return live;
}

/**
 * The entries of one tag (DID + PASID for the IOTLB; PASID for a device-TLB).
 *
 * Invalidating a whole bucket bumps its generation (entries of an older generation are misses),
 * so a flush costs no allocation and a refill reuses the entry object; range invalidations
 * mark 4 KiB entries stale the same way (one by one, found through the region index) and delete
 * large-page keys. Stale entries are purged when they outnumber live ones.
 */
export class TlbBucket {
  readonly m4k = new Map<number, TlbEntry>();
  readonly m2m = new Map<number, TlbEntry>();
  readonly m1g = new Map<number, TlbEntry>();
  /**
   * The entries of `m4k` (live and stale) by 2 MiB region ⌊vpn/512⌋: every entry of m4k is in the
   * list of its region, once; a region's list goes when its entries are purged.
   */
  readonly regions = new Map<number, TlbEntry[]>();
  /** Generation of live IOTLB entries. */
  gen = 0;
  /** Live IOTLB entries. */
  live = 0;
  /** Keys in the 2 MiB + 1 GiB maps (0 lets a 4 KiB miss skip them). */
  nLarge = 0;
  /** Entries came from first-level (PGTT 1 or nested) translations. */
  firstLevel = false;
  /** Paging-structure caches by entry level (index 2..5); index 0/1 unused. */
  readonly psc: readonly Map<number, PscEntry>[] = [new Map(), new Map(), new Map(), new Map(), new Map(), new Map()];
  pscGen = 0;
  /** Live paging-structure entries (0 lets a walk skip the lookups). */
  pscLive = 0;
  /** Request contexts pointing at this bucket; while > 0 the bucket stays in its store. */
  holders = 0;
  /** The store the bucket is registered in, or null (never registered, or removed when it emptied). */
  store: BucketStore | null = null;

  constructor(
    readonly did: number,
    /** PASID tag (RID_PASID for requests without PASID in the IOTLB; -1 in a device-TLB). */
    readonly pasid: number,
  ) {}

  /** Live cached entry covering `vpn`, or undefined. */
  lookup(vpn: number): TlbEntry | undefined {
    const g = this.gen;
    let e = this.m4k.get(vpn);
    if (e !== undefined && e.gen === g) return e;
    if (this.nLarge === 0) return undefined;
    e = this.m2m.get(Math.floor(vpn / PAGES_2M));
    if (e !== undefined && e.gen === g) return e;
    e = this.m1g.get(Math.floor(vpn / PAGES_1G));
    return e !== undefined && e.gen === g ? e : undefined;
  }

  /** A request context starts using this bucket. */
  acquire(): void {
    this.holders++;
  }

  /** A request context stops using this bucket; an empty bucket nobody uses leaves its store. */
  release(): void {
    if (this.holders > 0) this.holders--;
    this.store?.forgetIfUnused(this);
  }

  /** Nothing cached and no context uses the bucket: its store may drop it. */
  get unused(): boolean {
    return this.holders <= 0 && this.live === 0 && this.pscLive === 0;
  }

  /** Insert (or replace) an entry for the page of `level` (1, 2, 3) holding `vpn`. Returns the live-count change. */
  insert(vpn: number, level: number, base: number, allow: number): number {
    const m = level === 1 ? this.m4k : level === 2 ? this.m2m : this.m1g;
    const key = level === 1 ? vpn : level === 2 ? Math.floor(vpn / PAGES_2M) : Math.floor(vpn / PAGES_1G);
    const g = this.gen;
    const e = m.get(key);
    if (e !== undefined) {
      const wasLive = e.gen === g;
      e.base = base;
      e.allow = allow;
      e.level = level;
      e.gen = g;
      if (wasLive) return 0;
      this.live++;
      return 1;
    }
    if (m.size >= STALE_LIMIT && m.size >= 4 * this.live) this.purgeStale();
    const fresh = new TlbEntry(key, base, allow, level, g);
    m.set(key, fresh);
    if (level === 1) this.listInRegion(fresh);
    else this.nLarge++;
    this.live++;
    return 1;
  }

  /** Drop every entry (IOTLB and paging-structure cache). Returns live IOTLB entries removed. */
  clear(): number {
    const n = this.live;
    if (this.m4k.size + this.nLarge > STALE_LIMIT) {
      this.m4k.clear();
      this.regions.clear();
      this.m2m.clear();
      this.m1g.clear();
      this.nLarge = 0;
    }
    this.gen++;
    this.live = 0;
    this.clearPsc();
    return n;
  }

  clearPsc(): void {
    let keys = 0;
    for (let l = 2; l <= 5; l++) keys += this.psc[l]!.size;
    if (keys > STALE_LIMIT) for (let l = 2; l <= 5; l++) this.psc[l]!.clear();
    this.pscGen++;
    this.pscLive = 0;
  }

  /** Drop entries whose page overlaps 4 KiB pages [v0, v1]. Returns live entries removed. */
  removeRange(v0: number, v1: number): number {
    let n = this.removeRange4k(v0, v1);
    if (this.nLarge !== 0) {
      n += removeKeys(this.m2m, Math.floor(v0 / PAGES_2M), Math.floor(v1 / PAGES_2M), this.gen);
      n += removeKeys(this.m1g, Math.floor(v0 / PAGES_1G), Math.floor(v1 / PAGES_1G), this.gen);
      this.nLarge = this.m2m.size + this.m1g.size;
    }
    this.live -= n;
    return n;
  }

  /** Drop paging-structure-cache entries whose region overlaps pages [v0, v1]. */
  removePscRange(v0: number, v1: number): void {
    if (this.pscLive === 0) return;
    for (let l = 2; l <= 5; l++) {
      const per = LEVEL_SPAN_PAGES[l]!;
      this.pscLive -= removeKeys(this.psc[l]!, Math.floor(v0 / per), Math.floor(v1 / per), this.pscGen);
    }
  }

  /** Live cached level-`level` FL entry for `vpn`, or undefined. */
  pscLookup(level: number, vpn: number): PscEntry | undefined {
    const e = this.psc[level]!.get(Math.floor(vpn / LEVEL_SPAN_PAGES[level]!));
    return e !== undefined && e.gen === this.pscGen ? e : undefined;
  }

  /** Cache the level-`level` FL entry used for `vpn` (reusing a stale entry object). */
  pscInsert(level: number, vpn: number, tbl: number, tblWritable: boolean, tblGpa: number, rw: boolean, us: boolean, xd: boolean): void {
    const m = this.psc[level]!;
    const key = Math.floor(vpn / LEVEL_SPAN_PAGES[level]!);
    const g = this.pscGen;
    const e = m.get(key);
    if (e === undefined) {
      m.set(key, new PscEntry(tbl, tblWritable, tblGpa, rw, us, xd, g));
      this.pscLive++;
      return;
    }
    if (e.gen !== g) this.pscLive++;
    e.tbl = tbl;
    e.tblWritable = tblWritable;
    e.tblGpa = tblGpa;
    e.rw = rw;
    e.us = us;
    e.xd = xd;
    e.gen = g;
  }

  /** Live entries of every level (for tests and the reference model's comparison). */
  *liveEntries(): IterableIterator<[key: number, entry: TlbEntry]> {
    for (const m of [this.m4k, this.m2m, this.m1g]) for (const [k, e] of m) if (e.gen === this.gen) yield [k, e];
  }

  /** Add a new 4 KiB entry to its region's list. */
  private listInRegion(e: TlbEntry): void {
    const r = Math.floor(e.key / PAGES_2M);
    const list = this.regions.get(r);
    if (list === undefined) this.regions.set(r, [e]);
    else list.push(e);
  }

  /** Invalidate the 4 KiB entries of pages [v0, v1] through the region index. Returns live entries invalidated. */
  private removeRange4k(v0: number, v1: number): number {
    const regions = this.regions;
    if (regions.size === 0) return 0;
    const r0 = Math.floor(v0 / PAGES_2M);
    const r1 = Math.floor(v1 / PAGES_2M);
    let n = 0;
    if (r1 - r0 + 1 <= regions.size) {
      for (let r = r0; r <= r1; r++) {
        const list = regions.get(r);
        if (list !== undefined) n += this.staleInRange(list, r, v0, v1);
      }
    } else {
      for (const [r, list] of regions) if (r >= r0 && r <= r1) n += this.staleInRange(list, r, v0, v1);
    }
    return n;
  }

  /**
   * Mark the live entries of region `r` (listed in `list`) whose page is in [v0, v1] stale:
   * page by page through m4k when the range covers fewer pages of the region than it lists
   * (a single-page invalidation costs one lookup), else down the list. Returns how many.
   */
  private staleInRange(list: TlbEntry[], r: number, v0: number, v1: number): number {
    const g = this.gen;
    let n = 0;
    const lo = Math.max(v0, r * PAGES_2M);
    const hi = Math.min(v1, r * PAGES_2M + PAGES_2M - 1);
    if (hi - lo + 1 < list.length) {
      const m = this.m4k;
      for (let v = lo; v <= hi; v++) {
        const e = m.get(v);
        if (e !== undefined && e.gen === g) {
          e.gen = STALE_GEN;
          n++;
        }
      }
      return n;
    }
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      if (e.gen === g && e.key >= v0 && e.key <= v1) {
        e.gen = STALE_GEN;
        n++;
      }
    }
    return n;
  }

  private purgeStale(): void {
    const g = this.gen;
    for (const [r, list] of this.regions) {
      let k = 0;
      for (let i = 0; i < list.length; i++) {
        const e = list[i]!;
        if (e.gen === g) list[k++] = e;
        else this.m4k.delete(e.key);
      }
      if (k === 0) this.regions.delete(r);
      else list.length = k;
    }
    for (const m of [this.m2m, this.m1g]) for (const [k, e] of m) if (e.gen !== g) m.delete(k);
    this.nLarge = this.m2m.size + this.m1g.size;
  }
}

/** Key of a (DID, PASID tag) pair: DID < 2^16, PASID tag < 2^20, so the key is < 2^37. */
function tagKey(did: number, pasid: number): number {
  return did * 2097152 + pasid;
}

/**
 * A store of buckets with an entry budget: an insert into a full store flushes the whole store
 * first (hardware may drop any entry at any time, so dropping them all is allowed). A bucket that
 * empties while no request context uses it is removed (bucket(…) makes a new one when needed).
 */
export abstract class BucketStore {
  protected readonly buckets = new Map<number, TlbBucket>();
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
    for (const b of this.buckets.values()) {
      b.clear();
      this.forgetIfUnused(b);
    }
    this.entries = 0;
  }

  /** Buckets registered (tests and the leak checks count them). */
  get bucketCount(): number {
    return this.buckets.size;
  }

  /** Every registered bucket. */
  allBuckets(): IterableIterator<TlbBucket> {
    return this.buckets.values();
  }

  /** Remove `b` when it holds nothing and no context uses it. */
  forgetIfUnused(b: TlbBucket): void {
    if (b.store !== this || !b.unused) return;
    this.buckets.delete(this.keyOf(b));
    this.unlink(b);
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
    const k = this.keyOf(b);
    const cur = this.buckets.get(k);
    if (cur !== undefined && cur !== b) {
      // Only an unused bucket leaves the store, and only a used one is filled: two live buckets
      // for one tag would split its entries.
      fail('EEXIST', `TLB bucket (DID ${b.did}, PASID ${b.pasid}) registered twice`);
    }
    this.buckets.set(k, b);
    b.store = this;
    this.link(b);
  }

  protected abstract keyOf(b: TlbBucket): number;
  /** Secondary indexes of the store (by DID). */
  protected link(_b: TlbBucket): void {}
  protected unlink(_b: TlbBucket): void {}
}

/**
 * The IOTLB and paging-structure caches of the IOMMU: buckets by (DID, PASID), with the
 * invalidation granularities of VT-d (VT-d spec §6.5.2: the IOTLB invalidate descriptor 0x2 and
 * the PASID-based-IOTLB invalidate descriptor 0x6).
 */
export class Iotlb extends BucketStore {
  /** Buckets of each DID by PASID tag: domain-selective and page-within-domain flushes visit only these. */
  private readonly byDid = new Map<number, Map<number, TlbBucket>>();

  /** The bucket of (did, pasid), created empty when absent (the caller acquires it). */
  bucket(did: number, pasid: number): TlbBucket {
    let b = this.buckets.get(tagKey(did, pasid));
    if (b === undefined) {
      b = new TlbBucket(did, pasid);
      this.register(b);
    }
    return b;
  }

  /** The registered bucket of (did, pasid), or undefined (nothing is created). */
  find(did: number, pasid: number): TlbBucket | undefined {
    return this.buckets.get(tagKey(did, pasid));
  }

  /** Buckets of `did` (PASIDs that hold entries or are in use). */
  bucketsOfDomain(did: number): number {
    return this.byDid.get(did)?.size ?? 0;
  }

  /** IOTLB domain-selective invalidation: every entry of `did`, all PASIDs. */
  invalidateDomain(did: number): void {
    const list = this.byDid.get(did);
    if (list === undefined) return;
    for (const b of list.values()) this.clearBucket(b);
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
    const list = this.byDid.get(did);
    if (list === undefined) return;
    for (const b of list.values()) {
      if (b.firstLevel) this.clearBucket(b);
      else {
        this.entries -= b.removeRange(v0, v1);
        this.forgetIfUnused(b);
      }
    }
  }

  /** PASID-based IOTLB, all-within-PASID: every entry and paging-structure entry of (did, pasid). */
  invalidatePasid(did: number, pasid: number): void {
    const b = this.buckets.get(tagKey(did, pasid));
    if (b !== undefined) this.clearBucket(b);
  }

  /**
   * PASID-based IOTLB, page-selective-within-PASID: first-level / nested entries of (did, pasid)
   * overlapping pages [v0, v1]; paging-structure entries for the range too unless `ih` (the
   * invalidation hint: only leaf entries changed). Entries cached for second-level-only or
   * pass-through translations are not affected (VT-d spec §6.5.2, PASID-based-IOTLB invalidate).
   */
  invalidatePasidPages(did: number, pasid: number, v0: number, v1: number, ih: boolean): void {
    const b = this.buckets.get(tagKey(did, pasid));
    if (b === undefined || !b.firstLevel) return;
    this.entries -= b.removeRange(v0, v1);
    if (!ih) b.removePscRange(v0, v1);
    this.forgetIfUnused(b);
  }

  protected keyOf(b: TlbBucket): number {
    return tagKey(b.did, b.pasid);
  }

  protected override link(b: TlbBucket): void {
    let m = this.byDid.get(b.did);
    if (m === undefined) this.byDid.set(b.did, (m = new Map()));
    m.set(b.pasid, b);
  }

  protected override unlink(b: TlbBucket): void {
    const m = this.byDid.get(b.did);
    if (m === undefined) return;
    m.delete(b.pasid);
    if (m.size === 0) this.byDid.delete(b.did);
  }
}

/** The device-TLB (address translation cache) of one ATS-enabled device. */
export class DevTlb extends BucketStore {
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

  protected keyOf(b: TlbBucket): number {
    return b.pasid;
  }
}
