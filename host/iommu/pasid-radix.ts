/**
 * A two-level radix table from a 20-bit PASID (the PCIe PASID TLP prefix width; Linux
 * MAX_NR_PASID_BITS) to a value: 1024 leaves of 1024 slots, a leaf created with its first value
 * and freed with its last — the shape of the VT-d PASID directory and PASID tables (VT-d spec
 * §3.4.3), used here for the IOTLB's buckets of one domain (tlb.ts). A lookup reads two arrays;
 * the leaves of 64k PASIDs take 512 KiB, so they stay cache-resident where a Map of the same keys
 * (entry chains and records, several MiB) misses the cache on every random lookup.
 */
import { fail } from '../../src/errors.js';
import { PASID_LIMIT } from '../../src/vtd/pasid-entry.js';

const LEAF_BITS = 10;
const LEAF_SLOTS = 1 << LEAF_BITS;
const LEAF_MASK = LEAF_SLOTS - 1;

export class PasidRadix<T> {
  /**
   * The leaves themselves (arrays of LEAF_SLOTS values), undefined where empty: a lookup is two
   * dependent array reads — no leaf record between them, one cache line fewer per lookup.
   */
  private readonly leaves: ((T | undefined)[] | undefined)[] = new Array<(T | undefined)[] | undefined>(PASID_LIMIT >> LEAF_BITS).fill(undefined);
  /** Values held per leaf (a leaf is freed with its last value). */
  private readonly counts = new Int32Array(PASID_LIMIT >> LEAF_BITS);
  /** Values held. */
  size = 0;

  get(pasid: number): T | undefined {
    return this.leaves[pasid >>> LEAF_BITS]?.[pasid & LEAF_MASK];
  }

  /** Set the value of `pasid` (0 ≤ pasid < 2^20; EINVAL otherwise). */
  set(pasid: number, value: T): void {
    if (!(Number.isInteger(pasid) && pasid >= 0 && pasid < PASID_LIMIT)) fail('EINVAL', `PASID ${pasid} is not in 0..${PASID_LIMIT - 1}`);
    const i = pasid >>> LEAF_BITS;
    let leaf = this.leaves[i];
    if (leaf === undefined) this.leaves[i] = leaf = new Array<T | undefined>(LEAF_SLOTS).fill(undefined);
    const j = pasid & LEAF_MASK;
    if (leaf[j] === undefined) {
      this.counts[i]!++;
      this.size++;
    }
    leaf[j] = value;
  }

  /** Remove the value of `pasid`; returns whether there was one. An emptied leaf is freed. */
  delete(pasid: number): boolean {
    const i = pasid >>> LEAF_BITS;
    const leaf = this.leaves[i];
    const j = pasid & LEAF_MASK;
    if (leaf === undefined || leaf[j] === undefined) return false;
    leaf[j] = undefined;
    this.size--;
    if (--this.counts[i]! === 0) this.leaves[i] = undefined;
    return true;
  }

  /** Every value, in PASID order (a snapshot: safe to delete while iterating it). */
  values(): T[] {
    const out: T[] = [];
    for (const leaf of this.leaves) {
      if (leaf === undefined) continue;
      for (const v of leaf) if (v !== undefined) out.push(v);
    }
    return out;
  }
}
