/**
 * The iommufd personality of the host (drivers/iommu/iommufd/): one IommufdContext per VM that
 * chose the iommufd uAPI at VM_SETUP (docs/protocol.md §13).
 */
export { IommufdContext, MAX_IOMMUFD_DEVICES, type IommufdEnv } from './iommufd-context.js';
export { IOMMUFD_USER, IommufdDevice } from './device.js';
export { MAX_OBJECTS, type IommufdObjectKind } from './object-table.js';
export { IOAS_IOVA_BITS, MSI_WINDOW } from './ioas.js';
export type { IommufdSnapshot } from './snapshot.js';
export { iommufdHandlers } from './wire-handlers.js';
export { IommufdDma, type IommufdDmaEnv } from './dma.js';
