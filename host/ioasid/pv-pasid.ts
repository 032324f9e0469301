/**
 * The paravirtual PASID consumer API (Lu Baolu, "iommu: APIs for paravirtual PASID
 * allocation", 2018, the consumer side of the "iommu/vt-d: paravirtual PASID" work) as a thin
 * layer over the IOASID core:
 *
 *   iommu_pasid_init(pasid)        → PasidConsumer.init(core, { min, max, quota, name })
 *   iommu_pasid_exit(pasid)        → consumer.exit()
 *   iommu_pasid_alloc(..., *ioasid)→ consumer.alloc(min, max, private) returns the PASID
 *   iommu_pasid_free(pasid, id)    → consumer.free(id)
 *   iommu_pasid_for_each(pasid, func, data) → consumer.forEach(func): a non-zero return (or a
 *                                    throw) from func stops the walk and is returned
 *   iommu_pasid_find(pasid, id)    → consumer.find(id): the private data
 *
 * A consumer is one NULL-type IOASID set that the consumer holds (setGet) for its lifetime,
 * plus the PASID range its IOMMU supports (the series' iommu_ops callback, here `min`/`max`).
 * exit() frees every PASID the consumer still has and releases the set; IDs other users still
 * reference stay FREE_PENDING until their last put, then the set goes with them.
 * Errors are the core's; any call after exit() is EINVAL.
 */
import { fail } from '../../src/errors.js';
import type { IoasidCore } from './ioasid-core.js';
import type { IoasidSet } from './ioasid-set.js';

export interface PasidConsumerOptions {
  /** Lowest PASID the IOMMU supports; default 1. */
  min?: number;
  /** Highest PASID the IOMMU supports; default the core's capacity total. */
  max?: number;
  /** PASIDs the consumer may hold; 0 (default) = all available capacity. */
  quota?: number;
  name?: string;
}

export class PasidConsumer {
  private live = true;

  private constructor(
    private readonly core: IoasidCore,
    /** The consumer's IOASID set. */
    readonly set: IoasidSet,
    /** The PASID range imposed by the IOMMU (inclusive). */
    readonly min: number,
    readonly max: number,
  ) {}

  /** iommu_pasid_init. EINVAL: bad range; ENOSPC: quota above available capacity. */
  static init(core: IoasidCore, opts: PasidConsumerOptions = {}): PasidConsumer {
    const min = opts.min ?? 1;
    const max = opts.max ?? core.capacity.total;
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || min > max) fail('EINVAL', `PASID range [${String(min)}, ${String(max)}] is not valid`);
    const set = core.setAlloc({ type: 'NULL', quota: opts.quota ?? 0, name: opts.name });
    core.setGet(set);
    return new PasidConsumer(core, set, min, max);
  }

  get active(): boolean {
    return this.live;
  }

  /** iommu_pasid_exit: free every PASID of the consumer and release its set. */
  exit(): void {
    this.check();
    this.live = false;
    this.core.freeAllInSet(this.set);
    this.core.setPut(this.set);
  }

  /**
   * iommu_pasid_alloc: a PASID in [min, max] ∩ the consumer's range, with `private` data.
   * EINVAL: the ranges do not intersect (or bad bounds); otherwise the core's errors.
   */
  alloc(min: number, max: number, privateData?: unknown): number {
    this.check();
    if (!Number.isInteger(min) || !Number.isInteger(max) || min > max) fail('EINVAL', `PASID range [${String(min)}, ${String(max)}] is not valid`);
    const lo = Math.max(min, this.min);
    const hi = Math.min(max, this.max);
    if (lo > hi) fail('EINVAL', `PASID range [${min}, ${max}] is outside the consumer's [${this.min}, ${this.max}]`);
    return this.core.alloc(this.set, lo, hi, privateData);
  }

  /** iommu_pasid_free. EINVAL: unknown PASID; EACCES: not this consumer's. */
  free(pasid: number): void {
    this.check();
    this.core.free(this.set, pasid);
  }

  /**
   * iommu_pasid_for_each: call `fn(pasid, privateData)` in ascending order until it returns a
   * non-zero number (returned) or throws (rethrown). Returns 0 when every call returned 0/void.
   */
  forEach(fn: (pasid: number, data: unknown) => number | void): number {
    this.check();
    let rc = 0;
    const stop = new Error('stop');
    try {
      this.core.forEach(this.set, (id, data) => {
        const r = fn(id, data);
        if (typeof r === 'number' && r !== 0) {
          rc = r;
          throw stop;
        }
      });
    } catch (e) {
      if (e !== stop) throw e;
    }
    return rc;
  }

  /** iommu_pasid_find: the PASID's private data. ENOENT: unknown; EACCES: not this consumer's. */
  find(pasid: number): unknown {
    this.check();
    return this.core.find(this.set, pasid);
  }

  private check(): void {
    if (!this.live) fail('EINVAL', `PASID consumer of ${this.set} has exited`);
  }
}
