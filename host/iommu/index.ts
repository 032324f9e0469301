/**
 * Public API of the emulated host IOMMU (DESIGN §4): `HostIommu` and the types and constants
 * its users need. Internal modules (engine, caches, tables) are reachable through HostIommu.
 */
export {
  HostIommu,
  IDENTITY_DID,
  type Addr,
  type AddDeviceOptions,
  type AllocDomainOptions,
  type BindPgtableOptions,
  type CacheInvalidation,
  type DmaAccess,
  type DmaReadResult,
  type DmaResult,
  type DomainRef,
  type FirstLevelOptions,
  type HostIommuOptions,
  type InvalidationCounters,
  type IommuStats,
  type PageRequestOptions,
  type TranslationRequest,
} from './host-iommu.js';
export { IommuDomain, type Attachment, type DomainType, type FirstLevelConfig, type PgttName } from './domain.js';
export { IommuDevice, PageResponseCode, ridToBdf, bdfToRid, type PageResponseCodeValue } from './device.js';
export { DMA_UNBACKED_HPA, type FaultHandler, type IommuFault, type IommuFaultEvent, type PageRequest } from './fault.js';
export { formatTopology, type DeviceView, type DomainView, type IommuTopology, type RouteView } from './topology.js';
export type { SlProt } from './sl-table.js';
export type { EngineCounters } from './engine.js';
export { ACCESS_EXEC, ACCESS_PRIV, ACCESS_WRITE, NO_PASID, REQ_NO_REPORT, RID_PASID, XLATE_FAULT } from './constants.js';
