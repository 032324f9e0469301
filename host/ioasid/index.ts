/**
 * The host IOASID core (docs/design.md §4; after Linux drivers/iommu/ioasid.c and Jacob Pan's
 * IOASID series): sets, quotas, SPIDs, refcounts, notifiers, change listeners, cgroup-like limits.
 */
export { IoasidCore, type IoasidCoreOptions, type FreeAllResult } from './ioasid-core.js';
export { tokenLabel, type SetAllocOptions } from './set-table.js';
export { IoasidSet } from './ioasid-set.js';
export type { IoasidNotifier, IoasidNotifyArgs } from './notifier-chain.js';
export { IoasidCgroup, IoasidCgroupTree } from './cgroup.js';
export { PasidConsumer, type PasidConsumerOptions } from './pv-pasid.js';
export { IdBitmap } from './id-bitmap.js';
export * from './types.js';
