/**
 * The cached translations of one tag (DID + PASID in the IOTLB; PASID in a device-TLB): 4 KiB
 * entries in an open-addressing table on a Float64Array (page-hash.ts), 2 MiB and 1 GiB entries
 * in a small Map, first-level paging-structure-cache entries in a second open-addressing table
 * (three numbers per key). tlb.ts explains the tagging and the stores that hold buckets.
 *
 * A 4 KiB entry is one number in its table: (page frame · 64 + permitted access classes (6 bits,
 * constants.ts CLASS_BIT_OF_FLAGS)) · 128 + epoch (7 bits), exact below 2^53 (frames below 2^40,
 * i.e. HPAs below 2^52). An entry is live when its epoch is the bucket's; 0 marks an entry
 * invalidated by a range (it permits nothing, so it is a miss as it stands).
 *
 * Keys are 4 KiB page numbers (`vpn` = address / 4096, exact up to 2^52): a 4 KiB entry under
 * `vpn`, a 2 MiB entry under ⌊vpn/512⌋, a 1 GiB entry under ⌊vpn/2^18⌋; a paging-structure-cache
 * entry for a level-L entry (L = 2..5) under ⌊vpn / 512^(L−1)⌋. One Map holds both large-page
 * levels (its key is key · 8 + level); one table holds the paging-structure entries of every
 * level, under the same key · 8 + level, each as (table page, table page as named by the FL
 * entry, generation · 16 + PSC_* flags) — a lookup or a refill allocates nothing.
 *
 * Invalidation (docs/performance.md, "Cache invalidation scaling"):
 * - a whole-bucket flush advances the bucket's 4 KiB epoch (entries of an older one are misses;
 *   their keys and region lists stay for the refill, so it allocates nothing) and the generation
 *   of the large-page and paging-structure entries; every 128th flush marks every entry stale in
 *   place (so an epoch is never reused while entries of its last use remain), and a flush of a
 *   bucket with more than STALE_LIMIT keys empties the table and region index (a large table is
 *   freed);
 * - the 4 KiB keys are also listed by 2 MiB region, so a range invalidation visits the regions in
 *   the range and the keys listed there — O(regions in range + entries there), never O(bucket) —
 *   and marks them stale (a stale entry is a miss, reused by a refill, purged with the others when
 *   they outnumber the live ones); large-page and paging-structure keys of a range are few, so
 *   they are looked up one by one, or their Map / table scanned when it holds fewer keys than
 *   the range.
 * The hit path (`probe`, or the engine's inline copy) is a hash and a few typed-array reads.
 */
import { fail } from '../../src/errors.js';
import { PageHash, SLOT_STRIDE } from './page-hash.js';
import { HOLD_MASK, OCCUPIED } from './pasid-cache-slots.js';

/** Value of a 4 KiB entry invalidated by a range invalidation (no access class). */
export const STALE_4K = 0;
/** Packing of a 4 KiB entry's value: (frame · ALLOW_SPAN + allow) · EPOCHS + epoch. */
export const ALLOW_SPAN = 64;
export const EPOCHS = 128;
const ALLOW_MASK = ALLOW_SPAN - 1;
const EPOCH_MASK = EPOCHS - 1;
/** HPA of the frame of (frame · 64 + allow) − allow: · 64 = frame · 4096. */
const FRAME_TO_HPA = 4096 / ALLOW_SPAN;

/** Whether the packed 4 KiB value `v` is a live entry of epoch `epoch`. */
function live4k(v: number, epoch: number): boolean {
  return v !== STALE_4K && (v & EPOCH_MASK) === epoch;
}
/** HPAs of 4 KiB entries are below 2^52 (VT-d's largest host address width). */
const HPA_LIMIT = 2 ** 52;

/** A cached translation as a record (large pages; 4 KiB entries are read from the table). */
export class TlbEntry {
  constructor(
    /** Its key at its level (the page number for a 4 KiB entry). */
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
 * A cached non-leaf first-level entry as a record (tests and slow paths; the bucket stores it as
 * numbers): the page number of the table it points to (its HPA already translated through the
 * second level in nested mode) and the permissions accumulated down to it.
 */
export class PscEntry {
  constructor(
    /** HPA page number (HPA / 4096) of the next-level FL table. */
    public tblPfn: number,
    /** The second level permits writing that table (A/D updates); always true without nesting. */
    public tblWritable: boolean,
    /** Page number of the next-level table as the FL entry names it (a GPA page when nested), to redo its SL translation for a write. */
    public tblGfn: number,
    /** AND of R/W over the entries above and including this one. */
    public rw: boolean,
    /** AND of U/S. */
    public us: boolean,
    /** OR of XD (when NXE). */
    public xd: boolean,
    public gen: number,
  ) {}
}

/** Flags of a paging-structure-cache entry (PscEntry's booleans). */
export const PSC_TBL_W = 1;
export const PSC_RW = 2;
export const PSC_US = 4;
export const PSC_XD = 8;
/** Doubles per paging-structure-cache slot: key, table page, table page as named, generation · 16 + flags. */
const PSC_STRIDE = 4;
const TWO_31 = 2147483648;

/** Key of the level-`level` paging-structure-cache entry covering page `vpn`. */
function pscKey(level: number, vpn: number): number {
  const k = vpn < TWO_31 && level <= 4 ? vpn >>> (9 * (level - 1)) : Math.floor(vpn / LEVEL_SPAN_PAGES[level]!);
  return k * LEVEL_KEYS + level;
}

const PAGES_2M = 512;
/** 4 KiB pages covered by one entry of each level: 512^(level − 1). */
const LEVEL_SPAN_PAGES = [0, 1, 512, 262144, 134217728, 68719476736];
/** Levels share a Map under key · LEVEL_KEYS + level. */
const LEVEL_KEYS = 8;
/**
 * Stale entries are kept for reuse until a bucket holds this many keys; then a full flush really
 * empties it, and an insert purges stale keys when they are at least 3/4 of the bucket.
 */
export const STALE_LIMIT = 4096;

/**
 * Delete the level-`level` keys k0..k1 of the large-page Map `m` (keys stored as
 * key · LEVEL_KEYS + level); returns how many of the deleted entries were live (gen === `gen`).
 * Costs O(min(k1 − k0 + 1, m.size)).
 */
function removeKeys(m: Map<number, TlbEntry>, level: number, k0: number, k1: number, gen: number): number {
  if (m.size === 0) return 0;
  let live = 0;
  if (k1 - k0 + 1 <= m.size) {
    for (let k = k0; k <= k1; k++) {
      const key = k * LEVEL_KEYS + level;
      const e = m.get(key);
      if (e === undefined) continue;
      m.delete(key);
      if (e.gen === gen) live++;
    }
  } else {
    const lo = k0 * LEVEL_KEYS + level;
    const hi = k1 * LEVEL_KEYS + level;
    for (const [key, e] of m) {
      if (key >= lo && key <= hi && key % LEVEL_KEYS === level) {
        m.delete(key);
        if (e.gen === gen) live++;
      }
    }
  }
  return live;
}

/** The keys of `t` (a snapshot: keys may be removed while iterating it). */
function pscKeys(t: PageHash): number[] {
  return t.occupied().map((at) => t.data[at]!);
}

/** What a bucket's store does when the bucket may have become unused (tlb.ts BucketStore). */
export interface BucketOwner {
  forgetIfUnused(b: TlbBucket): void;
}

export class TlbBucket {
  // Field order is layout: what a lookup and a release read comes first, so those touch one or
  // two cache lines of the object.
  /** 4 KiB entries, live and stale (value: (frame · 64 + allow) · 128 + epoch; STALE_4K when invalidated). */
  readonly t4k = new PageHash();
  /** Epoch of live 4 KiB entries (0..127). */
  epoch = 0;
  /**
   * Holds taken with `acquire` (device-TLB buckets: the contexts using them); while > 0 the bucket
   * stays in its store. The holds of contexts caching a PASID entry of an IOTLB bucket's tag are
   * in its PASID-cache slot (`pcSlots`) instead.
   */
  holders = 0;
  /** Live IOTLB entries. */
  live = 0;
  /** Live paging-structure entries (0 lets a walk skip the lookups). */
  pscLive = 0;
  /** The store the bucket is registered in, or null (never registered, or removed when it emptied). */
  store: BucketOwner | null = null;
  /**
   * The leaf of the PASID-cache slot of this bucket's tag while the bucket is registered in the
   * IOTLB (pasid-cache-slots.ts), else null: the slot counts the contexts whose cached PASID entry
   * uses this bucket, and its occupied bit says whether the bucket caches anything (kept exact
   * here: `syncOccupied`).
   */
  pcSlots: Int32Array | null = null;
  /** Index of that slot in `pcSlots`. */
  pcAt = 0;
  /** Keys of 2 MiB + 1 GiB entries (0 lets a 4 KiB miss skip them). */
  nLarge = 0;
  /** Entries came from first-level (PGTT 1 or nested) translations. */
  firstLevel = false;
  /** Index in its store's per-DID list (tlb.ts Iotlb), −1 when not listed. */
  slot = -1;
  /** Generation of live large-page entries. */
  gen = 0;
  pscGen = 0;
  /**
   * The keys of `t4k` by 2 MiB region ⌊vpn/512⌋: every key of t4k is in the list of its region,
   * once; a region's list goes when its keys are purged.
   */
  readonly regions = new Map<number, number[]>();
  /** 2 MiB and 1 GiB entries (key · 8 + level), created with the first one. */
  private large: Map<number, TlbEntry> | null = null;
  /** Paging-structure-cache entries of every level (see the file comment), created with the first one. */
  private psc: PageHash | null = null;

  /** The entry `probe` found: HPA of its page, permitted access classes, level. */
  foundBase = 0;
  foundAllow = 0;
  foundLevel = 0;
  /** The entry `pscProbe` found: PscEntry's table pages and PSC_* flags. */
  pscFoundPfn = 0;
  pscFoundGfn = 0;
  pscFoundFlags = 0;

  constructor(
    readonly did: number,
    /** PASID tag (RID_PASID for requests without PASID in the IOTLB; -1 in a device-TLB). */
    readonly pasid: number,
  ) {}

  /** Whether a live entry covers `vpn`; if so found{Base,Allow,Level} describe it. Allocates nothing. */
  probe(vpn: number): boolean {
    const g = this.gen;
    const t = this.t4k;
    const at = t.find(vpn);
    if (at >= 0) {
      const v = t.data[at + 1]!;
      if (live4k(v, this.epoch)) {
        const q = (v - this.epoch) / EPOCHS;
        const allow = q & ALLOW_MASK;
        this.foundBase = (q - allow) * FRAME_TO_HPA;
        this.foundAllow = allow;
        this.foundLevel = 1;
        return true;
      }
    }
    if (this.nLarge === 0) return false;
    const large = this.large!;
    let e = large.get(Math.floor(vpn / PAGES_2M) * LEVEL_KEYS + 2);
    if (e === undefined || e.gen !== g) e = large.get(Math.floor(vpn / LEVEL_SPAN_PAGES[3]!) * LEVEL_KEYS + 3);
    if (e === undefined || e.gen !== g) return false;
    this.foundBase = e.base;
    this.foundAllow = e.allow;
    this.foundLevel = e.level;
    return true;
  }

  /** Live cached entry covering `vpn` as a new record, or undefined (tests and slow paths). */
  lookup(vpn: number): TlbEntry | undefined {
    if (!this.probe(vpn)) return undefined;
    const key = Math.floor(vpn / LEVEL_SPAN_PAGES[this.foundLevel]!);
    return new TlbEntry(key, this.foundBase, this.foundAllow, this.foundLevel, this.gen);
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
    const s = this.pcSlots;
    return this.holders <= 0 && this.live === 0 && this.pscLive === 0 && (s === null || (s[this.pcAt]! & HOLD_MASK) === 0);
  }

  /**
   * Write whether the bucket caches anything (IOTLB or paging-structure entries) into the occupied
   * bit of its PASID-cache slot. Called wherever `live` or `pscLive` may have changed.
   */
  syncOccupied(): void {
    const s = this.pcSlots;
    if (s === null) return;
    const at = this.pcAt;
    s[at] = (s[at]! & ~OCCUPIED) | (this.live + this.pscLive > 0 ? OCCUPIED : 0);
  }

  /** Keys held, live and stale, of every level (memory figures and tests). */
  get keys(): number {
    let n = this.t4k.size + this.nLarge;
    n += this.psc?.size ?? 0;
    return n;
  }

  /**
   * Insert (or replace) an entry for the page of `level` (1, 2, 3) holding `vpn`: the page at HPA
   * `base` permitting the access classes `allow` (0..63). Returns the live-count change. An entry
   * permitting nothing (allow 0) could never hit: it is not cached, and replaces a live entry by
   * nothing. EINVAL: a 4 KiB entry whose base is not a 4 KiB-aligned HPA below 2^52, or `allow`
   * outside 0..63.
   */
  insert(vpn: number, level: number, base: number, allow: number): number {
    if (!(allow >= 0 && allow <= ALLOW_MASK && (allow | 0) === allow)) fail('EINVAL', `TLB entry access classes ${allow} not in 0..${ALLOW_MASK}`);
    if (allow === 0) return -this.removeRange(vpn, vpn, level);
    const g = this.gen;
    if (level === 1) {
      const frame = base / 4096;
      if (!(base >= 0 && base < HPA_LIMIT && frame === Math.floor(frame))) fail('EINVAL', `TLB 4 KiB entry base ${base} is not a 4 KiB-aligned HPA below 2^52`);
      const value = (frame * ALLOW_SPAN + allow) * EPOCHS + this.epoch;
      const t = this.t4k;
      let at = t.find(vpn);
      if (at < 0) {
        if (t.size >= STALE_LIMIT && t.size >= 4 * this.live) this.purgeStale();
        at = t.claim(vpn);
        this.listInRegion(vpn);
      } else if (live4k(t.data[at + 1]!, this.epoch)) {
        t.data[at + 1] = value;
        return 0;
      }
      t.data[at + 1] = value;
      if (this.live++ === 0) this.syncOccupied();
      return 1;
    }
    const large = (this.large ??= new Map());
    const key = Math.floor(vpn / LEVEL_SPAN_PAGES[level]!) * LEVEL_KEYS + level;
    const e = large.get(key);
    if (e !== undefined) {
      const wasLive = e.gen === g;
      e.base = base;
      e.allow = allow;
      e.gen = g;
      if (wasLive) return 0;
      if (this.live++ === 0) this.syncOccupied();
      return 1;
    }
    if (large.size >= STALE_LIMIT && large.size >= 4 * this.live) this.purgeStale();
    large.set(key, new TlbEntry(Math.floor(vpn / LEVEL_SPAN_PAGES[level]!), base, allow, level, g));
    this.nLarge = large.size;
    if (this.live++ === 0) this.syncOccupied();
    return 1;
  }

  /** Drop every entry (IOTLB and paging-structure cache). Returns live IOTLB entries removed. */
  clear(): number {
    const n = this.live;
    const t = this.t4k;
    if (t.size !== 0) {
      if (t.size > STALE_LIMIT) {
        t.clear();
        this.regions.clear();
        this.epoch = 0;
      } else if (this.epoch === EPOCH_MASK) {
        // The epoch wraps: mark every entry stale in place (keys and region lists stay for the
        // refill, nothing is allocated), so no entry of an earlier use of epoch 0 survives.
        const d = t.data;
        for (let at = 1; at < d.length; at += SLOT_STRIDE) d[at] = STALE_4K;
        this.epoch = 0;
      } else {
        this.epoch++;
      }
    }
    if (this.nLarge > STALE_LIMIT) {
      this.large = null;
      this.nLarge = 0;
    }
    this.gen++;
    this.live = 0;
    this.clearPsc();
    return n;
  }

  clearPsc(): void {
    if (this.psc !== null && this.psc.size > STALE_LIMIT) this.psc = null;
    this.pscGen++;
    this.pscLive = 0;
    this.syncOccupied();
  }

  /**
   * Drop entries whose page overlaps 4 KiB pages [v0, v1] (only those of `level` when given).
   * Returns live entries removed.
   */
  removeRange(v0: number, v1: number, level = 0): number {
    let n = level <= 1 ? this.removeRange4k(v0, v1) : 0;
    if (this.nLarge !== 0 && level !== 1) {
      const large = this.large!;
      if (level !== 3) n += removeKeys(large, 2, Math.floor(v0 / PAGES_2M), Math.floor(v1 / PAGES_2M), this.gen);
      if (level !== 2) n += removeKeys(large, 3, Math.floor(v0 / LEVEL_SPAN_PAGES[3]!), Math.floor(v1 / LEVEL_SPAN_PAGES[3]!), this.gen);
      this.nLarge = large.size;
    }
    this.live -= n;
    if (n !== 0) this.syncOccupied();
    return n;
  }

  /** Drop paging-structure-cache entries whose region overlaps pages [v0, v1]. */
  removePscRange(v0: number, v1: number): void {
    if (this.pscLive === 0) return;
    const t = this.psc!;
    const g16 = this.pscGen * 16;
    for (let l = 2; l <= 5; l++) {
      const per = LEVEL_SPAN_PAGES[l]!;
      const k0 = Math.floor(v0 / per);
      const k1 = Math.floor(v1 / per);
      if (k1 - k0 + 1 <= t.size) {
        for (let k = k0; k <= k1; k++) this.removePscKey(t, k * LEVEL_KEYS + l, g16);
      } else {
        const lo = k0 * LEVEL_KEYS + l;
        const hi = k1 * LEVEL_KEYS + l;
        for (const key of pscKeys(t)) if (key >= lo && key <= hi && key % LEVEL_KEYS === l) this.removePscKey(t, key, g16);
      }
    }
  }

  /**
   * Whether a live level-`level` FL entry covering `vpn` is cached; if so pscFound{Pfn,Gfn,Flags}
   * describe it. Allocates nothing.
   */
  pscProbe(level: number, vpn: number): boolean {
    const t = this.psc;
    if (t === null) return false;
    const at = t.find(pscKey(level, vpn));
    if (at < 0) return false;
    const d = t.data;
    const g16 = this.pscGen * 16;
    const meta = d[at + 3]!;
    if (meta < g16) return false;
    this.pscFoundPfn = d[at + 1]!;
    this.pscFoundGfn = d[at + 2]!;
    this.pscFoundFlags = meta - g16;
    return true;
  }

  /** Live cached level-`level` FL entry for `vpn` as a new record, or undefined (tests and slow paths). */
  pscLookup(level: number, vpn: number): PscEntry | undefined {
    if (!this.pscProbe(level, vpn)) return undefined;
    const f = this.pscFoundFlags;
    return new PscEntry(this.pscFoundPfn, (f & PSC_TBL_W) !== 0, this.pscFoundGfn, (f & PSC_RW) !== 0, (f & PSC_US) !== 0, (f & PSC_XD) !== 0, this.pscGen);
  }

  /**
   * Cache the level-`level` FL entry used for `vpn` (replacing the entry of its key, live or
   * stale): its table's page `tblPfn`, that page as the FL entry names it `tblGfn`, and `flags`
   * (PSC_*; see PscEntry for what they mean).
   */
  pscInsert(level: number, vpn: number, tblPfn: number, tblGfn: number, flags: number): void {
    let t = this.psc;
    if (t === null) this.psc = t = new PageHash(4, PSC_STRIDE);
    const key = pscKey(level, vpn);
    const g16 = this.pscGen * 16;
    let at = t.find(key);
    if (at < 0) {
      if (t.size >= STALE_LIMIT && t.size >= 4 * this.pscLive) for (const k of pscKeys(t)) if (t.data[t.find(k) + 3]! < g16) t.remove(k);
      at = t.claim(key);
      if (this.pscLive++ === 0) this.syncOccupied();
    } else if (t.data[at + 3]! < g16 && this.pscLive++ === 0) this.syncOccupied();
    const d = t.data;
    d[at + 1] = tblPfn;
    d[at + 2] = tblGfn;
    d[at + 3] = g16 + (flags & 15);
  }

  /** Remove `key` from the paging-structure table `t`, counting it off pscLive when live. */
  private removePscKey(t: PageHash, key: number, g16: number): void {
    const at = t.find(key);
    if (at < 0) return;
    if (t.data[at + 3]! >= g16 && --this.pscLive === 0) this.syncOccupied();
    t.remove(key);
  }

  /** Live entries of every level as new records (for tests and the reference model's comparison). */
  *liveEntries(): IterableIterator<[key: number, entry: TlbEntry]> {
    const g = this.gen;
    const t = this.t4k;
    for (const at of t.occupied()) {
      const v = t.data[at + 1]!;
      if (!live4k(v, this.epoch)) continue;
      const q = (v - this.epoch) / EPOCHS;
      const allow = q & ALLOW_MASK;
      yield [t.data[at]!, new TlbEntry(t.data[at]!, (q - allow) * FRAME_TO_HPA, allow, 1, g)];
    }
    if (this.large !== null) for (const e of this.large.values()) if (e.gen === g) yield [e.key, e];
  }

  /** Add a new 4 KiB key to its region's list. */
  private listInRegion(vpn: number): void {
    const r = Math.floor(vpn / PAGES_2M);
    const list = this.regions.get(r);
    if (list === undefined) this.regions.set(r, [vpn]);
    else list.push(vpn);
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
   * Mark the live entries of region `r` (its keys listed in `list`) whose page is in [v0, v1]
   * stale: page by page when the range covers fewer pages of the region than it lists (a
   * single-page invalidation costs one probe), else down the list. Returns how many.
   */
  private staleInRange(list: number[], r: number, v0: number, v1: number): number {
    const t = this.t4k;
    const ep = this.epoch;
    const d = t.data;
    let n = 0;
    const lo = Math.max(v0, r * PAGES_2M);
    const hi = Math.min(v1, r * PAGES_2M + PAGES_2M - 1);
    if (hi - lo + 1 < list.length) {
      for (let v = lo; v <= hi; v++) {
        const at = t.find(v);
        if (at >= 0 && live4k(d[at + 1]!, ep)) {
          d[at + 1] = STALE_4K;
          n++;
        }
      }
      return n;
    }
    for (let i = 0; i < list.length; i++) {
      const v = list[i]!;
      if (v < v0 || v > v1) continue;
      const at = t.find(v);
      if (live4k(d[at + 1]!, ep)) {
        d[at + 1] = STALE_4K;
        n++;
      }
    }
    return n;
  }

  /** Delete every stale key (4 KiB, large-page), keeping the region lists exact. */
  private purgeStale(): void {
    const g = this.gen;
    const t = this.t4k;
    for (const [r, list] of this.regions) {
      let k = 0;
      for (let i = 0; i < list.length; i++) {
        const v = list[i]!;
        if (live4k(t.data[t.find(v) + 1]!, this.epoch)) list[k++] = v;
        else t.remove(v);
      }
      if (k === 0) this.regions.delete(r);
      else list.length = k;
    }
    if (this.large !== null) {
      for (const [k, e] of this.large) if (e.gen !== g) this.large.delete(k);
      this.nLarge = this.large.size;
    }
  }
}
