/**
 * virtio-iommu over virtio-mmio (docs/design.md §3.2; docs/virtio-iommu.md). `startGuest({ viommu:
 * 'virtio' })` builds its model with createVirtioIommuModel.
 */
import type { GuestContext, ViommuModel } from '../viommu.js';
import type { VirtioIommuOptions } from './iommu-device.js';
import { VirtioIommuModel } from './model.js';

export function createVirtioIommuModel(ctx: GuestContext, opts?: VirtioIommuOptions): Promise<ViommuModel> {
  return VirtioIommuModel.create(ctx, opts);
}

export { VirtioIommuModel } from './model.js';
export { VirtioIommuDevice, PAGE_SIZE_MASK, type VirtioIommuOptions } from './iommu-device.js';
export * from './iommu-spec.js';
export * from './mmio-regs.js';
export { decodeEvent, encodeFault, encodePageRequest, virtioFaultReason, type EventReport, type FaultReport, type PageRequestReport } from './events.js';
export { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_SIZE, RingError } from './virtqueue.js';
