/**
 * The guest-visible mappings of one virtio-iommu domain: disjoint, inclusive IOVA ranges kept
 * sorted by start, so MAP's overlap rule and UNMAP's split rule (virtio 1.2 §5.13.6 "Device operations", MAP and UNMAP requests) are decided here,
 * before anything reaches the host.
 */

export interface IovaMapping {
  /** First IOVA (inclusive). */
  start: bigint;
  /** Last IOVA (inclusive). */
  end: bigint;
  /** Guest-physical address of `start`. */
  phys: bigint;
  /** virtio MAP flags (READ, WRITE). */
  flags: number;
}

export type UnmapPlan =
  | { kind: 'split'; mapping: IovaMapping }
  | { kind: 'remove'; mappings: IovaMapping[] };

export class MappingTree {
  private readonly list: IovaMapping[] = [];

  get size(): number {
    return this.list.length;
  }

  [Symbol.iterator](): Iterator<IovaMapping> {
    return this.list[Symbol.iterator]();
  }

  /** Index of the first mapping whose end is ≥ addr (ends are sorted as ranges are disjoint). */
  private firstEndingAtOrAfter(addr: bigint): number {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.list[mid]!.end < addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Mappings that intersect [start, end], in address order. */
  intersecting(start: bigint, end: bigint): IovaMapping[] {
    const out: IovaMapping[] = [];
    for (let i = this.firstEndingAtOrAfter(start); i < this.list.length; i++) {
      const m = this.list[i]!;
      if (m.start > end) break;
      out.push(m);
    }
    return out;
  }

  /** The mapping that contains iova, if any. */
  lookup(iova: bigint): IovaMapping | undefined {
    const m = this.list[this.firstEndingAtOrAfter(iova)];
    return m && m.start <= iova ? m : undefined;
  }

  /** Add a mapping; the caller has checked that nothing intersects it. */
  insert(m: IovaMapping): void {
    const i = this.firstEndingAtOrAfter(m.start);
    const next = this.list[i];
    if (next && next.start <= m.end) throw new Error(`mapping 0x${m.start.toString(16)}-0x${m.end.toString(16)} overlaps 0x${next.start.toString(16)}-0x${next.end.toString(16)}`);
    this.list.splice(i, 0, m);
  }

  /**
   * What UNMAP [start, end] does: remove every mapping inside the range, unless one of the
   * mappings it touches sticks out of it — then nothing is removed (split).
   */
  planUnmap(start: bigint, end: bigint): UnmapPlan {
    const hit = this.intersecting(start, end);
    for (const m of hit) if (m.start < start || m.end > end) return { kind: 'split', mapping: m };
    return { kind: 'remove', mappings: hit };
  }

  remove(m: IovaMapping): void {
    const i = this.list.indexOf(m);
    if (i >= 0) this.list.splice(i, 1);
  }

  clear(): IovaMapping[] {
    return this.list.splice(0, this.list.length);
  }
}
