/**
 * The VMM's DMA staging area (docs/architecture.md "Memory model"): a slot of shared memory after
 * guest RAM, in the same memfd, that the host maps as a second memory-table region at
 * DMA_STAGING_GPA. DEVICE_DMA requests flagged STAGED leave their data there instead of in the
 * message (docs/protocol.md §10.8): the guest puts a write's bytes in the slot before the request
 * and copies a read's bytes out after the reply. The slot is not DMA-mapped (no device reaches
 * it through translation) and not guest RAM (GPA accesses never reach it).
 *
 * One slot of DEVICE_DMA_MAX_LENGTH bytes: a DMA issued while the slot is in use sends its data
 * in the message instead (`acquire` returns undefined).
 */
import { DEVICE_DMA_MAX_LENGTH } from '../../vhost/messages/device-dma.js';

/** Guest-physical address of the staging region (64 TiB: far above any guest RAM vsva creates). */
export const DMA_STAGING_GPA = 0x4000_0000_0000n;
/** Bytes of the staging area: one DEVICE_DMA of the largest size. */
export const DMA_STAGING_BYTES = DEVICE_DMA_MAX_LENGTH;

export class DmaStaging {
  private busy = false;

  constructor(readonly area: Buffer) {}

  /** The slot, now in use until `release`; undefined while another DMA holds it. */
  acquire(): Buffer | undefined {
    if (this.busy) return undefined;
    this.busy = true;
    return this.area;
  }

  release(): void {
    this.busy = false;
  }
}
