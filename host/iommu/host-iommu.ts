/**
 * The emulated host IOMMU (docs/design.md §4, "IOMMU core" and "Translation engine"): domains,
 * devices, RID and RID+PASID attach, nested first-level binds, cache invalidation, fault handlers
 * and page responses, translation and DMA.
 *
 * HostIommu is one object whose parts live in one file per job, each part a class extending the
 * one before, so every method keeps its one name and nothing relays calls:
 *   iommu-base.ts        state (memory, page-table pool, engine, IOTLB, devices, domains), lookups
 *   invalidation.ts      the nine invalidate* methods and the generic `invalidate`
 *   attach.ts            domains and map/unmap, devices, attach/detach, bind/unbind
 *   fault-reporting.ts   fault handlers, reported faults, page requests and responses
 *   requests.ts          translate and DMA read/write/copy
 *   host-iommu.ts        capabilities, statistics, topology view, dispose
 *
 * Conventions:
 * - Every method checks all of its input before it changes anything; errors are VsvaError with
 *   Linux errno codes: ENODEV unknown RID, ENOENT unknown domain / route / pending request,
 *   EBUSY route already present or object still in use, EINVAL bad argument, ERANGE address or
 *   PASID beyond a width, EOPNOTSUPP missing device capability, ENOSPC out of domain IDs.
 * - Addresses and address-range sizes are bigint at this API and numbers inside, converted only
 *   after their width is asserted (checks.ts fitWidth).
 */
import { encodeCap, encodeEcap, SLLPS, VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { PASID_BITS } from '../../src/vtd/pasid-entry.js';
import type { EngineCounters } from './engine.js';
import { SAGAW_HOST } from './iommu-base.js';
import type { InvalidationCounters } from './invalidation.js';
import { IommuRequests } from './requests.js';
import { buildTopology, type IommuTopology } from './topology.js';

export interface IommuStats extends EngineCounters {
  iotlbEntries: number;
  /** IOTLB buckets: (DID, PASID) tags that cache entries or are used by a request context. */
  iotlbBuckets: number;
  /** Request contexts holding a cached PASID entry. */
  pasidCacheEntries: number;
  invalidations: InvalidationCounters;
  domains: number;
  devices: number;
  pageTablePages: number;
  pageRequests: number;
  pageResponses: number;
}

/** HostIommu.cacheCounts(). */
export interface CacheCounts {
  iotlbBuckets: number;
  iotlbEntries: number;
  pscEntries: number;
  pasidCacheEntries: number;
  contexts: number;
  devTlbBuckets: number;
  devTlbEntries: number;
}

export class HostIommu extends IommuRequests {
  /** CAP/ECAP of this host IOMMU (for nesting info): SM, nested, FL 4/5-level, SL 39/48-bit, PRI. */
  capabilities(): { cap: bigint; ecap: bigint } {
    const cap = encodeCap({
      ND: 6,
      SAGAW: SAGAW_HOST,
      MGAW: this.haw - 1,
      SLLPS: SLLPS.SIZE_2M | SLLPS.SIZE_1G,
      PSI: 1,
      MAMV: VTD_MAMV,
      FL1GP: 1,
      FL5LP: 1,
    });
    const ecap = encodeEcap({
      QI: 1,
      DT: 1,
      PT: 1,
      NEST: 1,
      PRS: 1,
      ERS: 1,
      SRS: 1,
      EAFS: 1,
      PSS: PASID_BITS - 1,
      PASID: 1,
      PDS: 1,
      SMTS: 1,
      SLADS: 1,
      SLTS: 1,
      FLTS: 1,
      SMPWCS: 1,
    });
    return { cap, ecap };
  }

  stats(): IommuStats {
    return {
      ...this.engine.counters(),
      iotlbEntries: this.iotlb.entries,
      iotlbBuckets: this.iotlb.bucketCount,
      pasidCacheEntries: this.engine.pasidCache.size,
      invalidations: { ...this.inv },
      domains: this.domains.size,
      devices: this.devices.size,
      pageTablePages: this.pool.pagesInUse,
      pageRequests: this.pageRequests,
      pageResponses: this.pageResponses,
    };
  }

  /**
   * What the translation caches hold — IOTLB buckets and entries, paging-structure entries,
   * cached PASID entries, request contexts, device-TLB buckets and entries: every count is 0 once
   * every route and device is gone (leak checks; docs/performance.md, "Cache invalidation scaling").
   */
  cacheCounts(): CacheCounts {
    let pscEntries = 0;
    for (const b of this.iotlb.allBuckets()) pscEntries += b.pscLive;
    let contexts = 0;
    let devTlbBuckets = 0;
    let devTlbEntries = 0;
    for (const d of this.devices.values()) {
      contexts += d.contexts.size;
      devTlbBuckets += d.devTlb?.bucketCount ?? 0;
      devTlbEntries += d.devTlb?.entries ?? 0;
    }
    return {
      iotlbBuckets: this.iotlb.bucketCount,
      iotlbEntries: this.iotlb.entries,
      pscEntries,
      pasidCacheEntries: this.engine.pasidCache.size,
      contexts,
      devTlbBuckets,
      devTlbEntries,
    };
  }

  /**
   * Domains with their routes and nesting parents, and devices with their routes (the RID / PASID
   * / domain picture of Kevin Tian's /dev/iommu proposal, vfio "remove the unused mdev iommu
   * hook" thread, 2021).
   */
  inspect(): IommuTopology {
    return buildTopology([...this.domains.values()], [...this.devices.values()]);
  }

  /** Release every page-table page (the IOMMU is unusable afterwards). */
  dispose(): void {
    for (const dev of this.devices.values()) this.engine.forgetDevice(dev);
    this.pool.dispose();
    this.devices.clear();
    this.domains.clear();
    this.engine.resetContextCache();
  }
}
