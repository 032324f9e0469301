/**
 * The PASID-cache slots of one domain: per PASID tag (the IOTLB bucket (DID, PASID) of tlb.ts)
 * one 32-bit word, in a two-level table of Int32Array leaves by PASID (1024 PASIDs per leaf,
 * 4 KiB) — the shape of the VT-d PASID directory and PASID tables (VT-d spec §3.4.3), as in
 * pasid-radix.ts. The leaves are views into a few contiguous buffers (each as large as all the
 * earlier ones together, up to 64 leaves), so the slots of 64k PASIDs are 256 KiB on adjacent
 * pages.
 *
 * A PASID-cache invalidation (VT-d spec §6.5.2, PASID-cache invalidate descriptor 0x7) drops the
 * cached PASID entries of a tag on every device by advancing the generation in its word: a
 * request context caching the entry keeps the leaf, the slot and the generation it saw, and its
 * entry is valid while they still match (request-context.ts). A PASID-selective flush reads and
 * writes one word of this table and nothing else — no bucket, no context — so its cost grows with
 * the number of cached entries only as far as where this table sits in the cache hierarchy
 * (docs/performance.md, "Cache invalidation scaling").
 *
 * A word is generation · GEN_ONE + holds · HOLD + occupied:
 * - occupied (bit 0): the tag's bucket caches something (TlbBucket keeps the bit exact), so a flush
 *   that drops the last hold knows, without reading the bucket, whether the bucket now leaves its
 *   store;
 * - holds (bits 1–4): request contexts whose cached PASID entry of the tag is valid (each keeps
 *   the bucket in its store, as TlbBucket.acquire does); HOLDS_OVERFLOW means "15 or more", the
 *   exact number then in `overflow`;
 * - generation (bits 5–31): advances by GEN_ONE, wrapping through 27 bits (pasid-cache-index.ts
 *   keeps a wrap exact).
 *
 * A slot is attached while the bucket of its tag is registered in the IOTLB (tlb.ts); a leaf whose
 * last slot detaches goes to a free list and is reused for the next leaf needed. A word keeps its
 * generation through all of this (only its holds and occupied bit clear), so a context still
 * holding an old leaf and generation never sees it match again.
 */
import { PASID_LIMIT } from '../../src/vtd/pasid-entry.js';

export const LEAF_BITS = 10;
export const LEAF_PASIDS = 1 << LEAF_BITS;
const LEAF_MASK = LEAF_PASIDS - 1;
/** The occupied bit. */
export const OCCUPIED = 1;
/** One hold. */
export const HOLD = 2;
/** The holds field (bits 1–4). */
export const HOLD_MASK = 0x1e;
/** Holds field value meaning "HOLDS_OVERFLOW or more; the exact count is in `overflow`". */
export const HOLDS_OVERFLOW = 15;
/** One generation step. */
export const GEN_ONE = 32;
/** The generation field (bits 5–31) as an int32 mask. */
export const GEN_MASK = -32;
/** Leaves of a table: PASIDs are 20 bits (the PCIe PASID TLP prefix; Linux MAX_NR_PASID_BITS). */
const LEAVES = PASID_LIMIT >> LEAF_BITS;
/** Leaves in the largest buffer (256 KiB). */
const MAX_CHUNK_LEAVES = 64;

export class PasidCacheSlots {
  /** The leaves by PASID ≫ LEAF_BITS, undefined where no slot is attached. */
  readonly leaves: (Int32Array | undefined)[] = new Array<Int32Array | undefined>(LEAVES).fill(undefined);
  /** Attached slots per leaf (a leaf goes to `spare` with its last). */
  private readonly attached = new Int32Array(LEAVES);
  /** Leaves no PASID range uses (their words keep their generations). */
  private readonly spare: Int32Array[] = [];
  /** Leaves carved so far (the next buffer holds as many, up to MAX_CHUNK_LEAVES). */
  private carved = 0;
  /** Holds of every slot of the domain: its cached PASID entries. */
  holds = 0;
  /** Exact holds of the slots whose holds field is HOLDS_OVERFLOW, by PASID. */
  readonly overflow = new Map<number, number>();

  /** The leaf holding `pasid`'s slot, attaching the slot (and providing the leaf) first. */
  attach(pasid: number): Int32Array {
    const i = pasid >>> LEAF_BITS;
    let leaf = this.leaves[i];
    if (leaf === undefined) this.leaves[i] = leaf = this.spare.pop() ?? this.carve();
    this.attached[i]!++;
    return leaf;
  }

  /** Detach `pasid`'s slot (it has no hold): its holds and occupied bit clear, its generation stays. */
  detach(pasid: number): void {
    const i = pasid >>> LEAF_BITS;
    const leaf = this.leaves[i];
    if (leaf === undefined) return;
    const at = slotAt(pasid);
    leaf[at] = leaf[at]! & GEN_MASK;
    if (--this.attached[i]! === 0) {
      this.leaves[i] = undefined;
      this.spare.push(leaf);
    }
  }

  /** Holds of the word `w` of `pasid`'s slot. */
  holdsOf(w: number, pasid: number): number {
    const h = (w & HOLD_MASK) >>> 1;
    return h === HOLDS_OVERFLOW ? this.overflow.get(pasid)! : h;
  }

  /** Add one hold to `pasid`'s slot at `at` of `leaf`. */
  addHold(leaf: Int32Array, at: number, pasid: number): void {
    const w = leaf[at]!;
    const h = (w & HOLD_MASK) >>> 1;
    if (h < HOLDS_OVERFLOW - 1) leaf[at] = w + HOLD;
    else if (h === HOLDS_OVERFLOW - 1) {
      leaf[at] = w + HOLD;
      this.overflow.set(pasid, HOLDS_OVERFLOW);
    } else this.overflow.set(pasid, this.overflow.get(pasid)! + 1);
    this.holds++;
  }

  /** Remove one hold from `pasid`'s slot at `at` of `leaf` (it has one). */
  removeHold(leaf: Int32Array, at: number, pasid: number): void {
    const w = leaf[at]!;
    if ((w & HOLD_MASK) >>> 1 === HOLDS_OVERFLOW) {
      const n = this.overflow.get(pasid)! - 1;
      if (n >= HOLDS_OVERFLOW) this.overflow.set(pasid, n);
      else {
        this.overflow.delete(pasid);
        leaf[at] = w - HOLD;
      }
    } else leaf[at] = w - HOLD;
    this.holds--;
  }

  /** A new leaf: the next view of the current buffer, or of a new one. */
  private carve(): Int32Array {
    const n = Math.min(Math.max(this.carved, 1), MAX_CHUNK_LEAVES);
    const buf = new ArrayBuffer(n * LEAF_PASIDS * 4);
    for (let k = 1; k < n; k++) this.spare.push(new Int32Array(buf, k * LEAF_PASIDS * 4, LEAF_PASIDS));
    this.carved += n;
    return new Int32Array(buf, 0, LEAF_PASIDS);
  }
}

/** Index of `pasid`'s slot in its leaf. */
export function slotAt(pasid: number): number {
  return pasid & LEAF_MASK;
}

/**
 * What a context points at while it caches no PASID entry: a word whose generation (0) differs
 * from NO_GENERATION; never written.
 */
export const NO_SLOTS = new Int32Array(1);
/** The generation a context records while it caches no PASID entry (no word's generation field: its low bits are set). */
export const NO_GENERATION = 1;
