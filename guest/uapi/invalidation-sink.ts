/**
 * Where a vIOMMU model's IOTLB flushes go during one invalidation run (guest/vtd/
 * cache-invalidations.ts states the batching contract: entries are collected, sent without
 * waiting where the uAPI allows, and `flush` returns once the host has applied every one — before
 * a wait descriptor's status write and before any other host request).
 *
 * Entries name host PASIDs. VFIO SVA sends them as CACHE_INVALIDATE entries
 * (`struct iommu_cache_invalidate_info`); iommufd as HWPT_INVALIDATE VT-d stage-1 entries of the
 * nested HWPTs routed at those PASIDs (guest/uapi/iommufd-invalidations.ts).
 */
import type { CacheInvalidateEntry } from '../../vhost/messages/invalidate.js';

export interface InvalidationSink {
  /** Entries collected and not yet acknowledged by the host. */
  readonly pending: number;
  /** Messages sent, entries handled and entries the host refused, over the model's life. */
  readonly counters: { messages: number; entries: number; refused: number };
  /** One entry in the VFIO SVA form (cache-invalidations.ts builders: iotlbPasid, iotlbPasidAddr, iotlbAll, devIotlb). */
  add(e: CacheInvalidateEntry): void;
  /** IOTLB entries of one host PASID. */
  addPasid(pasid: number): void;
  /** IOTLB entries of one host PASID in 4 KiB × 2^am from addrHi:addrLo (aligned down to the span). */
  addPasidAddr(pasid: number, addrLo: number, addrHi: number, am: number, leafOnly: boolean): void;
  /** Send what was collected; resolves when the host answered all of it (refusals are logged and counted). */
  flush(): Promise<void>;
}
