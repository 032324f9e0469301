/**
 * Which request contexts hold a cached PASID entry, by (DID, PASID entry index), so that the
 * PASID-cache invalidations of VT-d spec §6.5.2 (PASID-cache invalidate descriptor 0x7:
 * PASID-selective, domain-selective, global) drop exactly the entries they cover, on every
 * device, without visiting contexts.
 *
 * The index is the PASID-cache slots of the IOTLB's domains (pasid-cache-slots.ts, one per
 * (DID, PASID) bucket of tlb.ts): a context caching the PASID entry of tag (did, index) takes a
 * hold on the slot of that tag (which keeps the tag's bucket in the IOTLB) and records the slot's
 * generation. A PASID-selective flush reads and writes that one slot — holds off the counts,
 * generation advanced — and touches neither the bucket (unless it holds nothing and so leaves its
 * store) nor any context (each notices on its next request: RequestContext.pe, the engine's hit
 * path). A domain-selective flush scans the slots of that DID's leaves, a global one those of the
 * DIDs holding entries. A context is counted exactly while `ctx.pe` is set.
 */
import type { CachedPasidEntry } from './pasid-cache.js';
import { GEN_MASK, GEN_ONE, HOLD_MASK, HOLDS_OVERFLOW, LEAF_BITS, LEAF_PASIDS, OCCUPIED, slotAt, type PasidCacheSlots } from './pasid-cache-slots.js';
import type { RequestContext } from './request-context.js';
import type { Iotlb } from './tlb.js';
import type { TlbBucket } from './tlb-bucket.js';

export class PasidCacheIndex {
  private count = 0;
  /** DIDs with at least one cached entry. */
  private domains = 0;

  constructor(
    private readonly iotlb: Iotlb,
    /**
     * Every request context (visited only when a slot's 27-bit generation wraps, so that no
     * context still holding a generation of the slot's previous cycle sees it come back).
     */
    private readonly contexts: () => Iterable<RequestContext>,
  ) {}

  /** Contexts holding a cached PASID entry. */
  get size(): number {
    return this.count;
  }

  /** DIDs with at least one cached PASID entry. */
  get domainCount(): number {
    return this.domains;
  }

  /**
   * `ctx` caches the PASID entry `pe`, whose IOTLB entries live in `bucket` (the registered bucket
   * of (pe.did, ctx.peIndex)); an entry it still held is dropped first.
   */
  load(ctx: RequestContext, pe: CachedPasidEntry, bucket: TlbBucket): void {
    if (ctx.pe !== null) this.drop(ctx);
    ctx.cachePasidEntry(pe, bucket);
    const t = this.iotlb.slotsOf(bucket.did)!;
    t.addHold(ctx.pcLeaf, ctx.pcAt, bucket.pasid);
    this.counted(t.holds - 1, 1);
  }

  /** Drop `ctx`'s cached PASID entry, if any. */
  drop(ctx: RequestContext): void {
    if (ctx.pe === null) {
      ctx.dropPasidEntry();
      return;
    }
    const b = ctx.iotlb;
    const t = this.iotlb.slotsOf(b.did)!;
    t.removeHold(ctx.pcLeaf, ctx.pcAt, b.pasid);
    this.counted(t.holds + 1, -1);
    ctx.dropPasidEntry();
    b.store?.forgetIfUnused(b);
  }

  /** PASID-selective: the cached entry of (did, pasid) in every context (every device). */
  dropPasid(did: number, pasid: number): void {
    const t = this.iotlb.slotsOf(did);
    if (t === undefined) return;
    const leaf = t.leaves[pasid >>> LEAF_BITS];
    if (leaf === undefined) return;
    const at = slotAt(pasid);
    const w = leaf[at]!;
    if ((w & HOLD_MASK) === 0) return;
    this.dropSlot(t, leaf, at, w, pasid);
    if ((w & OCCUPIED) === 0) this.forgetBucket(did, pasid);
  }

  /** Domain-selective: every cached entry whose DID is `did`. */
  dropDomain(did: number): void {
    const t = this.iotlb.slotsOf(did);
    if (t === undefined || t.holds === 0) return;
    const leaves = t.leaves;
    let emptied: number[] | null = null;
    for (let i = 0; i < leaves.length && t.holds > 0; i++) {
      const leaf = leaves[i];
      if (leaf === undefined) continue;
      for (let at = 0; at < LEAF_PASIDS; at++) {
        const w = leaf[at]!;
        if ((w & HOLD_MASK) === 0) continue;
        const pasid = i * LEAF_PASIDS + at;
        this.dropSlot(t, leaf, at, w, pasid);
        if ((w & OCCUPIED) === 0) (emptied ??= []).push(pasid);
      }
    }
    // Buckets whose last hold went and that cache nothing leave the IOTLB (after the scan: that
    // may free a leaf).
    if (emptied !== null) for (const pasid of emptied) this.forgetBucket(did, pasid);
  }

  /** Global: every cached entry. */
  dropAll(): void {
    if (this.count === 0) return;
    for (const did of this.iotlb.didsWithHolds()) this.dropDomain(did);
  }

  /**
   * Drop every hold of `pasid`'s slot (word `w`, holds > 0, at `at` of `leaf`) and advance its
   * generation. Before the 27-bit generation returns to a value it had (from all ones to 0, after
   * 2^27 advances), every context that still points at the slot forgets it, so no stale
   * generation ever matches again.
   */
  private dropSlot(t: PasidCacheSlots, leaf: Int32Array, at: number, w: number, pasid: number): void {
    const n = t.holdsOf(w, pasid);
    if ((w & GEN_MASK) === GEN_MASK) {
      for (const c of this.contexts()) if (c.pcLeaf === leaf && c.pcAt === at) c.dropPasidEntry();
    }
    leaf[at] = ((w & (GEN_MASK | OCCUPIED)) + GEN_ONE) | 0;
    if ((w & HOLD_MASK) >>> 1 === HOLDS_OVERFLOW) t.overflow.delete(pasid);
    const before = t.holds;
    t.holds = before - n;
    this.counted(before, -n);
  }

  /** The bucket of (did, pasid) lost its last hold and caches nothing: it leaves the IOTLB. */
  private forgetBucket(did: number, pasid: number): void {
    const b = this.iotlb.find(did, pasid);
    if (b !== undefined) this.iotlb.forgetIfUnused(b);
  }

  /** The domain's holds were `before` and changed by `delta` (its slots table already counts it). */
  private counted(before: number, delta: number): void {
    this.count += delta;
    if (before === 0) this.domains++;
    else if (before + delta === 0) this.domains--;
  }
}
