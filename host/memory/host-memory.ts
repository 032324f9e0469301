/**
 * The emulated host physical address space: non-overlapping regions placed at host physical
 * addresses. A guest's RAM file becomes one region (mapped by SET_MEM_TABLE); the host's own
 * page-table pages live in an in-process region it allocates from.
 *
 * Accesses must fall inside one region; anything else is EFAULT and changes nothing.
 */
import { checkRange, type PhysAccess } from '../../src/memory/phys-memory.js';
import type { MemoryBacking } from '../../src/memory/backing.js';
import { fail } from '../../src/errors.js';

export interface HostRegion {
  readonly hpa: number;
  readonly size: number;
  readonly backing: MemoryBacking;
  readonly name: string;
}

export class HostMemory implements PhysAccess {
  private regions: HostRegion[] = [];
  private last: HostRegion | undefined;
  /** Where the address `within` resolved lies in its backing. */
  private offset = 0;

  /** Place a region at `hpa`; it must not overlap an existing one. */
  addRegion(name: string, hpa: number, backing: MemoryBacking, size = backing.size): HostRegion {
    if (!Number.isSafeInteger(hpa) || hpa < 0 || hpa % 4096 !== 0) fail('EINVAL', `region '${name}' base 0x${hpa.toString(16)} is not 4 KiB aligned`);
    if (size <= 0 || size > backing.size) fail('EINVAL', `region '${name}' size ${size} does not fit its backing of ${backing.size}`);
    for (const r of this.regions) {
      if (hpa < r.hpa + r.size && r.hpa < hpa + size) fail('EEXIST', `region '${name}' overlaps '${r.name}'`);
    }
    const region = { hpa, size, backing, name };
    this.regions.push(region);
    this.regions.sort((a, b) => a.hpa - b.hpa);
    return region;
  }

  /** Remove a region (it must exist). The backing is not closed: its owner does that. */
  removeRegion(region: HostRegion): void {
    const i = this.regions.indexOf(region);
    if (i < 0) fail('ENOENT', `region '${region.name}' is not mapped`);
    this.regions.splice(i, 1);
    if (this.last === region) this.last = undefined;
  }

  /** Lowest 4 KiB-aligned HPA at or above `from` with `size` free bytes after it. */
  findFree(size: number, from = 0x1_0000_0000): number {
    let base = from;
    for (const r of this.regions) {
      if (r.hpa + r.size <= base) continue;
      if (r.hpa >= base + size) break;
      base = Math.ceil((r.hpa + r.size) / 4096) * 4096;
    }
    return base;
  }

  listRegions(): readonly HostRegion[] {
    return this.regions;
  }

  /**
   * Index in listRegions() of the region that contains `hpa`, or -1 (the regions are sorted and
   * do not overlap: a binary search). Whether [hpa, hpa+length) fits in it is the caller's check.
   */
  indexOf(hpa: number): number {
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid]!;
      if (hpa < r.hpa) hi = mid - 1;
      else if (hpa >= r.hpa + r.size) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  /** The region holding [hpa, hpa+length), or EFAULT. */
  regionFor(hpa: number, length: number): HostRegion {
    const l = this.last;
    if (l !== undefined && hpa >= l.hpa && hpa + length <= l.hpa + l.size) return l;
    const i = this.indexOf(hpa);
    if (i < 0) fail('EFAULT', `host physical address 0x${hpa.toString(16)} (+${length}) is not backed by any region`);
    const r = this.regions[i]!;
    checkRange(hpa - r.hpa, length, r.size, `host memory region '${r.name}'`);
    this.last = r;
    return r;
  }

  /**
   * The backing of the region holding all of [hpa, hpa + length) (EFAULT otherwise), with hpa's
   * place in it left in `offset` for the access that follows.
   */
  private within(hpa: number, length: number): MemoryBacking {
    const r = this.regionFor(hpa, length);
    this.offset = hpa - r.hpa;
    return r.backing;
  }

  readU8(hpa: number): number {
    const b = new Uint8Array(1);
    this.within(hpa, 1).read(this.offset, b);
    return b[0]!;
  }
  writeU8(hpa: number, value: number): void {
    this.within(hpa, 1).write(this.offset, Uint8Array.of(value & 0xff));
  }
  readU32(hpa: number): number {
    return this.within(hpa, 4).readU32(this.offset);
  }
  writeU32(hpa: number, value: number): void {
    this.within(hpa, 4).writeU32(this.offset, value);
  }
  readU64(hpa: number): bigint {
    return this.within(hpa, 8).readU64(this.offset);
  }
  writeU64(hpa: number, value: bigint): void {
    this.within(hpa, 8).writeU64(this.offset, value);
  }
  read(hpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.readInto(hpa, out);
    return out;
  }
  readInto(hpa: number, dst: Uint8Array): void {
    this.within(hpa, dst.length).read(this.offset, dst);
  }
  write(hpa: number, data: Uint8Array): void {
    this.within(hpa, data.length).write(this.offset, data);
  }
}
