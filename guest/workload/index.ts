/**
 * Guest workloads (docs/design.md §3.3): SVA guests over either vIOMMU's guest driver, and DMA jobs
 * that processes submit through their PASIDs and check in guest memory.
 */
import type { GuestHandle } from '../../src/api/types.js';
import type { SvaGuest } from './sva-guest.js';
import { VirtioSvaGuest } from './virtio-sva.js';
import { VtdSvaGuest } from './vtd-sva.js';

export { SvaGuest, GUEST_ALLOC_BASE, guestPageAllocator, type Binding, type PageRequestPolicy, type PageRequestInfo, type PageResponse, type RecordedFault } from './sva-guest.js';
export { VtdSvaGuest, type VtdSvaOptions } from './vtd-sva.js';
export { VirtioSvaGuest, VirtioRequestError, type VirtioSvaOptions } from './virtio-sva.js';
export { runDmaJob, checkDmaJob, jobLength, DMA_CHUNK, type DmaJob, type DmaJobResult, type DmaTarget, type DmaFault } from './dma-jobs.js';
export { patternBytes, seededBytes, firstDifference } from './data.js';

export interface SvaGuestOptions {
  viommu: 'vtd' | 'virtio';
  /** Bytes of guest RAM the VM was started with. */
  memory: number;
  devices: { bdf: string }[];
  /** VT-d only: the VCMD layout the guest driver speaks (false: no VCMD). */
  vcmd?: '3.1' | '3.3' | false;
}

/** Bring the guest driver up on a started VM and wrap it for SVA workloads. */
export async function startSvaGuest(handle: GuestHandle, opts: SvaGuestOptions): Promise<SvaGuest> {
  if (opts.viommu === 'vtd') return VtdSvaGuest.start(handle, { memory: opts.memory, devices: opts.devices, ...(opts.vcmd !== undefined ? { vcmd: opts.vcmd } : {}) });
  return VirtioSvaGuest.start(handle, { memory: opts.memory, devices: opts.devices });
}
