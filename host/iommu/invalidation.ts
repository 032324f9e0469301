/**
 * HostIommu's cache invalidations, one method per descriptor granularity of VT-d queued
 * invalidation (VT-d spec §6.5.2: IOTLB invalidate 0x2, PASID-based-IOTLB invalidate 0x6,
 * PASID-cache invalidate 0x7, device-TLB invalidate 0x3 / 0x8), and `invalidate`, the same in
 * one generic request. Changes to tables the IOMMU does not own (guest first-level tables)
 * become visible only after the matching invalidation, as on hardware.
 */
import { fail } from '../../src/errors.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { NO_PASID } from './constants.js';
import { checkDid, checkPasid, hex, maskedPages } from './checks.js';
import { IommuBase } from './iommu-base.js';

export type CacheInvalidation =
  | { cache: 'iotlb'; granularity: 'global' }
  | { cache: 'iotlb'; granularity: 'domain'; did: number }
  | { cache: 'iotlb'; granularity: 'page'; did: number; addr: bigint; am: number; ih?: boolean }
  | { cache: 'piotlb'; granularity: 'pasid'; did: number; pasid: number }
  | { cache: 'piotlb'; granularity: 'page'; did: number; pasid: number; addr: bigint; am: number; ih?: boolean }
  | { cache: 'pasid'; granularity: 'global' }
  | { cache: 'pasid'; granularity: 'domain'; did: number }
  | { cache: 'pasid'; granularity: 'pasid'; did: number; pasid: number }
  | ({ cache: 'devtlb'; rid: number } & DevTlbInvalidation);

/**
 * Which device-TLB entries of a device go: requests without PASID (no `pasid`), one PASID, or
 * all PASIDs and non-PASID entries (`allPasids`); an address range `addr` + `size` (a power of
 * two ≥ 4096, the range aligned to it) or, without `addr`, everything.
 */
export interface DevTlbInvalidation {
  pasid?: number;
  allPasids?: boolean;
  addr?: bigint;
  size?: bigint;
}

/** Invalidations done, by cache and granularity. */
export interface InvalidationCounters {
  iotlbGlobal: number;
  iotlbDomain: number;
  iotlbPage: number;
  piotlbPasid: number;
  piotlbPage: number;
  pasidCacheGlobal: number;
  pasidCacheDomain: number;
  pasidCachePasid: number;
  devTlb: number;
}

/** Beyond this many blocks addressBlocks gives up (the caller invalidates wider instead). */
const MAX_ADDRESS_BLOCKS = 4096;

/**
 * The aligned power-of-two page blocks ({addr, am}: 2^am pages at addr) that cover exactly the
 * pages of [addr, addr + size) — what a range becomes in page-selective invalidations. Empty
 * when that takes more than MAX_ADDRESS_BLOCKS blocks (a huge, oddly sized range): the caller
 * then falls back to a wider invalidation.
 */
export function addressBlocks(addr: bigint, size: bigint): { addr: bigint; am: number }[] {
  const out: { addr: bigint; am: number }[] = [];
  let v = addr / PAGE_SIZE;
  const end = (addr + size + PAGE_SIZE - 1n) / PAGE_SIZE;
  while (v < end) {
    let am = 0;
    while (am < VTD_MAMV && v % (1n << BigInt(am + 1)) === 0n && v + (1n << BigInt(am + 1)) <= end) am++;
    out.push({ addr: v * PAGE_SIZE, am });
    v += 1n << BigInt(am);
    if (out.length > MAX_ADDRESS_BLOCKS) return [];
  }
  return out;
}

export abstract class IommuInvalidation extends IommuBase {
  protected readonly inv: InvalidationCounters = {
    iotlbGlobal: 0,
    iotlbDomain: 0,
    iotlbPage: 0,
    piotlbPasid: 0,
    piotlbPage: 0,
    pasidCacheGlobal: 0,
    pasidCacheDomain: 0,
    pasidCachePasid: 0,
    devTlb: 0,
  };

  /** IOTLB global invalidation. */
  invalidateIotlbGlobal(): void {
    this.inv.iotlbGlobal++;
    this.iotlb.invalidateAll();
  }

  /** IOTLB domain-selective invalidation. */
  invalidateIotlbDomain(did: number): void {
    checkDid(did);
    this.inv.iotlbDomain++;
    this.iotlb.invalidateDomain(did);
  }

  /**
   * IOTLB page-selective-within-domain: 2^am pages at `addr` (low bits below the mask ignored).
   * `ih` (leaf-only hint) has no effect here: the second level has no paging-structure cache in
   * this model, and first-level / nested entries of the DID are dropped whatever the address.
   */
  invalidateIotlbPages(did: number, addr: bigint, am: number, ih = false): void {
    checkDid(did);
    const [v0, v1] = maskedPages(addr, am);
    void ih;
    this.inv.iotlbPage++;
    this.iotlb.invalidatePages(did, v0, v1);
  }

  /** PASID-based IOTLB, all-within-PASID (non-global mappings; global pages are not modelled). */
  invalidatePasidIotlb(did: number, pasid: number): void {
    checkDid(did);
    checkPasid(pasid);
    this.inv.piotlbPasid++;
    this.iotlb.invalidatePasid(did, pasid);
  }

  /** PASID-based IOTLB, page-selective-within-PASID: 2^am pages at `addr`; `ih` keeps the paging-structure caches. */
  invalidatePasidIotlbPages(did: number, pasid: number, addr: bigint, am: number, ih = false): void {
    checkDid(did);
    checkPasid(pasid);
    const [v0, v1] = maskedPages(addr, am);
    this.inv.piotlbPage++;
    this.iotlb.invalidatePasidPages(did, pasid, v0, v1, ih);
  }

  /** PASID-cache global invalidation (visits the contexts that cache an entry, pasid-cache-index.ts). */
  invalidatePasidCacheGlobal(): void {
    this.inv.pasidCacheGlobal++;
    this.engine.pasidCache.dropAll();
  }

  /** PASID-cache domain-selective invalidation: cached entries whose DID is `did` (only those are visited). */
  invalidatePasidCacheDomain(did: number): void {
    checkDid(did);
    this.inv.pasidCacheDomain++;
    this.engine.pasidCache.dropDomain(did);
  }

  /**
   * PASID-cache PASID-selective invalidation: the cached entry of (did, pasid) on every device;
   * costs the contexts that cache it, not every context (pasid-cache-index.ts).
   */
  invalidatePasidCache(did: number, pasid: number): void {
    checkDid(did);
    checkPasid(pasid);
    this.inv.pasidCachePasid++;
    this.engine.pasidCache.dropPasid(did, pasid);
  }

  /** Device-TLB invalidation of device `rid` (DevTlbInvalidation says which entries). */
  invalidateDevTlb(rid: number, which: DevTlbInvalidation = {}): void {
    const dev = this.deviceOf(rid);
    if (which.pasid !== undefined) checkPasid(which.pasid);
    let v0: number | undefined;
    let v1: number | undefined;
    if (which.addr !== undefined) {
      const size = which.size ?? PAGE_SIZE;
      if (size < PAGE_SIZE || (size & (size - 1n)) !== 0n || size > 1n << 52n) {
        fail('EINVAL', `device-TLB invalidation size ${size} is not a power of two ≥ 4096`);
      }
      [v0, v1] = maskedPages(which.addr, bitLength(size / PAGE_SIZE) - 1);
    }
    this.inv.devTlb++;
    const tlb = dev.devTlb;
    if (tlb === null) return;
    if (which.allPasids === true) {
      if (v0 === undefined) tlb.invalidateAll();
      else for (const c of dev.contexts.values()) tlb.invalidate(c.pasid, v0, v1);
      return;
    }
    tlb.invalidate(which.pasid ?? NO_PASID, v0, v1);
  }

  /** One invalidation request in the generic form. EINVAL: a cache × granularity pair that does not exist. */
  invalidate(inv: CacheInvalidation): void {
    switch (inv.cache) {
      case 'iotlb':
        if (inv.granularity === 'global') return this.invalidateIotlbGlobal();
        if (inv.granularity === 'domain') return this.invalidateIotlbDomain(inv.did);
        if (inv.granularity === 'page') return this.invalidateIotlbPages(inv.did, inv.addr, inv.am, inv.ih);
        break;
      case 'piotlb':
        if (inv.granularity === 'pasid') return this.invalidatePasidIotlb(inv.did, inv.pasid);
        if (inv.granularity === 'page') return this.invalidatePasidIotlbPages(inv.did, inv.pasid, inv.addr, inv.am, inv.ih);
        break;
      case 'pasid':
        if (inv.granularity === 'global') return this.invalidatePasidCacheGlobal();
        if (inv.granularity === 'domain') return this.invalidatePasidCacheDomain(inv.did);
        if (inv.granularity === 'pasid') return this.invalidatePasidCache(inv.did, inv.pasid);
        break;
      case 'devtlb':
        return this.invalidateDevTlb(inv.rid, inv);
    }
    fail('EINVAL', `invalid cache invalidation ${JSON.stringify(inv, (_k, v: unknown) => (typeof v === 'bigint' ? hex(v) : v))}`);
  }
}

/** Bits needed to write `v` (v > 0): log2 + 1 for a power of two. */
function bitLength(v: bigint): number {
  return v.toString(2).length;
}
