/** The host IOASID core (DESIGN §4): sets, quotas, SPIDs, refcounts, notifiers, cgroup-like limits. */
export { IoasidCore, tokenLabel, type IoasidCoreOptions, type SetAllocOptions, type FreeAllResult } from './ioasid-core.js';
export { IoasidSet } from './ioasid-set.js';
export { IoasidCgroup, IoasidCgroupTree } from './cgroup.js';
export { PasidConsumer, type PasidConsumerOptions } from './pv-pasid.js';
export { IdBitmap } from './id-bitmap.js';
export * from './types.js';
