/**
 * VfioContainer's PASID_REQUEST (the VFIO_IOMMU_PASID_REQUEST ioctl of Yi L. Liu's "vfio: expose
 * virtual Shared Virtual Addressing to VMs" series): allocate one PASID in a range, or free every
 * PASID of the VM in a range, charged to the VM's IOASID set.
 */
import { fail } from '../../src/errors.js';
import type { PasidRange } from '../../vhost/messages/pasid.js';
import { ContainerState } from './container-state.js';
import { nextSlice } from './slice-budget.js';

/** PASID_FREE ranges shorter than this are checked ID by ID; longer ones walk the VM's set. */
const PASID_FREE_PROBE_RANGE = 64;
/**
 * PASIDs one PASID_FREE slice frees before the host yields; also the most a free does
 * synchronously. A bound PASID's free tears its routes down (IOMMU unbind with its flushes,
 * puts; bindings.ts), tens of µs each: a slice stays near 1 ms.
 */
export const PASID_FREE_SLICE = 32;

export abstract class ContainerPasidRequests extends ContainerState {
  /** VFIO_IOMMU_FLAG_ALLOC_PASID: one PASID in [min, max] from the VM's set. ENOSPC: quota or range exhausted. */
  pasidAlloc(r: PasidRange): number {
    if (r.min > r.max) fail('EINVAL', `PASID_ALLOC: min ${r.min} > max ${r.max}`);
    const numbering = this.env.pasidNumbering;
    const id = numbering === undefined ? this.core.alloc(this.set, r.min, r.max) : this.allocAboveFloor(r, numbering.floor(), numbering.replays);
    numbering?.allocated(id);
    this.counters.allocs++;
    return id;
  }

  /**
   * After a host restart, while VMs of the previous run may still come back and replay their
   * PASIDs at their old values (PASID_ALLOC with min = max), no other VM may take one of those
   * numbers: every PASID the previous run handed out lies below `floor`. A range allocates at or
   * above the floor; a request wholly below it is EBUSY — except from a VM of the previous run
   * (`replays`), whose own replay asks for exactly those numbers.
   */
  private allocAboveFloor(r: PasidRange, floor: number, replays: boolean): number {
    if (floor <= r.min) return this.core.alloc(this.set, r.min, r.max);
    if (floor <= r.max) return this.core.alloc(this.set, floor, r.max);
    if (replays) return this.core.alloc(this.set, r.min, r.max);
    fail('EBUSY', `PASID_ALLOC: PASIDs below ${floor} may belong to a VM of the previous run that has not come back yet (its reservation holds them)`);
  }

  /**
   * VFIO_IOMMU_FLAG_FREE_PASID: free every live PASID of this VM in [min, max]; returns how many.
   * ENOENT: the range holds no live PASID of this VM (another VM's PASIDs are not this VM's).
   * Up to PASID_FREE_SLICE PASIDs are freed synchronously; more are freed in slices with a yield
   * (setImmediate) between them, as DMA_UNMAP does (dma-map.ts), so other VMs' requests run
   * meanwhile — the result is then a Promise, and the session holds this VM's later requests
   * until it settles (host/server/handlers.ts). If the VM's release begins meanwhile the free
   * stops with ENOTCONN; what it freed stays freed.
   */
  pasidFree(r: PasidRange): number | Promise<number> {
    if (r.min > r.max) fail('EINVAL', `PASID_FREE: min ${r.min} > max ${r.max}`);
    const core = this.core;
    const set = this.set;
    const ids: number[] = [];
    if (r.max - r.min < PASID_FREE_PROBE_RANGE && core.isSetValid(set)) {
      // A short range (a guest frees one PASID at a time): look at its IDs instead of the set's.
      for (let id = r.min; id <= r.max; id++) {
        const info = core.idInfo(id);
        if (info !== null && info.set === set.id && info.state !== 'free-pending') ids.push(id);
      }
    } else {
      core.forEach(set, (id) => {
        if (id >= r.min && id <= r.max && core.idInfo(id)?.state !== 'free-pending') ids.push(id);
      });
    }
    if (ids.length === 0) fail('ENOENT', `PASID_FREE: no PASID of ${this.vmName} in [${r.min}, ${r.max}]`);
    if (ids.length <= PASID_FREE_SLICE) return this.freeIds(ids, 0, ids.length);
    return this.pasidFreeSliced(ids);
  }

  private async pasidFreeSliced(ids: readonly number[]): Promise<number> {
    let freed = 0;
    for (let i = 0; i < ids.length; i += PASID_FREE_SLICE) {
      if (i > 0) await nextSlice();
      if (this.released) fail('ENOTCONN', `PASID_FREE: ${this.vmName} was released during the free`);
      freed += this.freeIds(ids, i, Math.min(ids.length, i + PASID_FREE_SLICE));
    }
    return freed;
  }

  /** Free ids[from, to) that are still live PASIDs of this VM; returns how many. */
  private freeIds(ids: readonly number[], from: number, to: number): number {
    let freed = 0;
    for (let i = from; i < to; i++) {
      const id = ids[i]!;
      if (!this.ownsLivePasid(id)) continue; // freed since the request began
      this.core.free(this.set, id);
      this.counters.frees++;
      freed++;
    }
    return freed;
  }
}
