/**
 * Which request contexts hold a cached PASID entry, by (DID, PASID entry index), so that the
 * PASID-cache invalidations of VT-d spec §6.5.2 (PASID-cache invalidate descriptor 0x7:
 * PASID-selective, domain-selective, global) visit only the contexts they drop instead of every
 * context of every device.
 *
 * The index lives in the IOTLB: a context caching a PASID entry (did, index) holds the IOTLB
 * bucket of that tag (request-context.ts), so the bucket lists those contexts (tlb-bucket.ts
 * pcFirst / pcMore) and a PASID-selective flush is one bucket lookup (tlb.ts: a per-DID radix
 * table by PASID) plus the contexts it drops — no second Map of its own whose random lookups miss
 * the cache at 64k entries. A context is listed exactly while `ctx.pe` is set.
 */
import type { RequestContext } from './request-context.js';
import type { Iotlb } from './tlb.js';
import type { PasidEntryHolder, TlbBucket } from './tlb-bucket.js';

export class PasidCacheIndex {
  private count = 0;
  /** Cached entries per DID (DIDs with none are absent). */
  private readonly perDid = new Map<number, number>();

  constructor(private readonly iotlb: Iotlb) {}

  /** Contexts holding a cached PASID entry. */
  get size(): number {
    return this.count;
  }

  /** DIDs with at least one cached PASID entry. */
  get domainCount(): number {
    return this.perDid.size;
  }

  /** Record that `ctx` cached its PASID entry (`ctx.pe` is set and `ctx.iotlb` is the bucket of its tag). */
  add(ctx: RequestContext): void {
    const b = ctx.iotlb;
    if (b.pcFirst === ctx || (b.pcMore !== null && b.pcMore.includes(ctx))) return;
    if (b.pcFirst === null) b.pcFirst = ctx;
    else (b.pcMore ??= []).push(ctx);
    this.count++;
    this.perDid.set(b.did, (this.perDid.get(b.did) ?? 0) + 1);
  }

  /** Drop `ctx`'s cached PASID entry, if any. */
  drop(ctx: RequestContext): void {
    if (ctx.pe === null) return;
    const b = ctx.iotlb;
    if (unlist(b, ctx)) this.counted(b.did, -1);
    ctx.dropPasidEntry();
  }

  /** PASID-selective: the cached entry of (did, pasid) in every context (every device). */
  dropPasid(did: number, pasid: number): void {
    const b = this.iotlb.find(did, pasid);
    if (b !== undefined) this.dropListed(b, did);
  }

  /** Domain-selective: every cached entry whose DID is `did`. */
  dropDomain(did: number): void {
    if (!this.perDid.has(did)) return;
    for (const b of this.iotlb.bucketsOf(did)) this.dropListed(b, did);
  }

  /** Global: every cached entry. */
  dropAll(): void {
    if (this.count === 0) return;
    for (const b of [...this.iotlb.allBuckets()]) this.dropListed(b, b.did);
  }

  /**
   * Drop the cached entry of every context listed in `b`: advancing `b.pcGen` invalidates them
   * all at once and their holds on `b` go here, so the flush touches the bucket and no context
   * (each context notices on its next request: RequestContext.pe, the engine's hit path).
   * `did` is `b.did` (passed, so the flush reads only the bucket's first fields).
   */
  private dropListed(b: TlbBucket, did: number): void {
    if (b.pcFirst === null) return;
    const more = b.pcMore;
    const n = 1 + (more === null ? 0 : more.length);
    b.pcFirst = null;
    b.pcMore = null;
    this.counted(did, -n);
    b.pcGen++;
    b.holders -= n;
    b.store?.forgetIfUnused(b);
  }

  private counted(did: number, delta: number): void {
    this.count += delta;
    const n = (this.perDid.get(did) ?? 0) + delta;
    if (n <= 0) this.perDid.delete(did);
    else this.perDid.set(did, n);
  }
}

/** Remove `h` from `b`'s list of holders; returns whether it was listed. */
function unlist(b: TlbBucket, h: PasidEntryHolder): boolean {
  const more = b.pcMore;
  if (b.pcFirst === h) {
    b.pcFirst = more === null ? null : (more.pop() ?? null);
    if (more !== null && more.length === 0) b.pcMore = null;
    return true;
  }
  if (more === null) return false;
  const i = more.indexOf(h);
  if (i < 0) return false;
  more[i] = more[more.length - 1]!;
  more.pop();
  if (more.length === 0) b.pcMore = null;
  return true;
}
