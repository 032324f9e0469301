/**
 * Which request contexts hold a cached PASID entry, by (DID, PASID entry index), so that the
 * PASID-cache invalidations of VT-d spec §6.5.2 (PASID-cache invalidate descriptor 0x7:
 * PASID-selective, domain-selective, global) visit only the contexts they drop instead of every
 * context of every device. A context is in the index exactly while `ctx.pe` is set; emptied
 * per-DID and per-PASID sets are deleted.
 */
import type { RequestContext } from './request-context.js';

export class PasidCacheIndex {
  /** DID → PASID entry index → contexts caching that entry. */
  private readonly byDid = new Map<number, Map<number, Set<RequestContext>>>();
  private count = 0;

  /** Contexts holding a cached PASID entry. */
  get size(): number {
    return this.count;
  }

  /** DIDs with at least one cached PASID entry. */
  get domainCount(): number {
    return this.byDid.size;
  }

  /** Record that `ctx` cached its PASID entry (`ctx.pe` is set). */
  add(ctx: RequestContext): void {
    const did = ctx.pe!.did;
    let byPasid = this.byDid.get(did);
    if (byPasid === undefined) this.byDid.set(did, (byPasid = new Map()));
    let set = byPasid.get(ctx.peIndex);
    if (set === undefined) byPasid.set(ctx.peIndex, (set = new Set()));
    if (!set.has(ctx)) {
      set.add(ctx);
      this.count++;
    }
  }

  /** Drop `ctx`'s cached PASID entry, if any. */
  drop(ctx: RequestContext): void {
    const pe = ctx.pe;
    if (pe === null) return;
    const byPasid = this.byDid.get(pe.did);
    const set = byPasid?.get(ctx.peIndex);
    if (set !== undefined && set.delete(ctx)) {
      this.count--;
      if (set.size === 0) {
        byPasid!.delete(ctx.peIndex);
        if (byPasid!.size === 0) this.byDid.delete(pe.did);
      }
    }
    ctx.dropPasidEntry();
  }

  /** PASID-selective: the cached entry of (did, pasid) in every context (every device). */
  dropPasid(did: number, pasid: number): void {
    const byPasid = this.byDid.get(did);
    const set = byPasid?.get(pasid);
    if (set === undefined) return;
    byPasid!.delete(pasid);
    if (byPasid!.size === 0) this.byDid.delete(did);
    this.count -= set.size;
    for (const ctx of set) ctx.dropPasidEntry();
  }

  /** Domain-selective: every cached entry whose DID is `did`. */
  dropDomain(did: number): void {
    const byPasid = this.byDid.get(did);
    if (byPasid === undefined) return;
    this.byDid.delete(did);
    for (const set of byPasid.values()) {
      this.count -= set.size;
      for (const ctx of set) ctx.dropPasidEntry();
    }
  }

  /** Global: every cached entry. */
  dropAll(): void {
    const all = [...this.byDid.values()];
    this.byDid.clear();
    this.count = 0;
    for (const byPasid of all) for (const set of byPasid.values()) for (const ctx of set) ctx.dropPasidEntry();
  }
}
