/**
 * Public API of the emulated host IOMMU (docs/design.md §4): `HostIommu` and the types and
 * constants its users need. Internal modules (engine, caches, tables) are reachable through
 * HostIommu.
 */
export { HostIommu, type CacheCounts, type IommuStats } from './host-iommu.js';
export { IDENTITY_DID, type DomainRef, type HostIommuOptions } from './iommu-base.js';
export { addressBlocks, type CacheInvalidation, type DevTlbInvalidation, type InvalidationCounters } from './invalidation.js';
export type { AddDeviceOptions, AllocDomainOptions, BindPgtableOptions, FirstLevelOptions } from './attach.js';
export type { PageRequestOptions } from './fault-reporting.js';
export type { IommuDmaReadResult, IommuDmaResult, TranslationRequest } from './requests.js';
export { IommuDomain, type Attachment, type DomainType, type FirstLevelConfig, type PgttName } from './domain.js';
export { IommuDevice, PageResponseCode, type PageResponseCodeValue } from './device.js';
export { DMA_UNBACKED_HPA, faultRecord, type FaultHandler, type IommuFault, type IommuFaultEvent, type PageRequest } from './fault.js';
export { formatTopology, type DeviceView, type DomainView, type IommuTopology, type RouteView } from './topology.js';
export type { SlProt } from './sl-table.js';
export type { EngineCounters } from './engine.js';
export { ACCESS_EXEC, ACCESS_PRIV, ACCESS_WRITE, NO_PASID, REQ_NO_REPORT, RID_PASID, XLATE_FAULT } from './constants.js';
