/**
 * The translation engine's window on host physical memory: 64-bit page-table entries read as
 * two u32 halves, bit updates of the low half (A/D), and region resolution for DMA data moves.
 *
 * Hot-path design: the last region used is cached with a Uint32Array view of its Buffer when the
 * backing is in-process (and the host is little-endian), so an entry read is two array loads.
 * File-backed regions (guest RAM shared with another process) fall back to `backing.readU32`.
 * The cache is re-validated (`begin`) before every walk and every data move by checking that
 * HostMemory still lists the same region object at the same index, so removing or replacing a
 * region is noticed before the next translation.
 *
 * Contracts: `load`/`orLo` return false (never throw) when the address is not backed or the
 * backing fails; callers turn that into the spec's "error attempting to access" fault.
 * Entry addresses are 8-byte aligned (table base 4 KiB aligned + index·8).
 */
import { endianness } from 'node:os';
import type { MemoryBacking } from '../../src/memory/backing.js';
import type { HostMemory, HostRegion } from '../memory/host-memory.js';

const LITTLE_ENDIAN = endianness() === 'LE';

/** One region as the port sees it: bounds, its index in HostMemory's list, and a u32 view. */
class RegionView {
  idx = -1;
  readonly base: number;
  readonly end: number;
  readonly u32: Uint32Array | null;
  /** First page number of the region (regions are 4 KiB aligned: HostMemory.addRegion). */
  readonly basePfn: number;
  /** Whole 4 KiB pages the u32 view holds (0 without a view). */
  readonly pages: number;
  readonly buf: Buffer | undefined;
  readonly backing: MemoryBacking;
  constructor(readonly region: HostRegion | undefined, backing: MemoryBacking | undefined) {
    this.base = region?.hpa ?? 0;
    this.end = region === undefined ? -1 : region.hpa + region.size;
    this.backing = backing as MemoryBacking;
    const buf = backing?.buffer;
    this.buf = buf;
    this.u32 =
      region !== undefined && buf !== undefined && LITTLE_ENDIAN && buf.byteOffset % 4 === 0
        ? new Uint32Array(buf.buffer, buf.byteOffset, Math.floor(region.size / 4))
        : null;
    this.basePfn = Math.floor(this.base / 4096);
    this.pages = this.u32 === null || this.base % 4096 !== 0 ? 0 : Math.floor(this.u32.length / 1024);
  }
}

const NO_VIEW = new RegionView(undefined, undefined);

export class PhysPort {
  /** Low half (bits 31:0) of the last entry loaded. */
  lo = 0;
  /** High half (bits 63:32) of the last entry loaded. */
  hi = 0;

  // resolve() results, for data moves
  /** In-process Buffer of the resolved region, or undefined for a file-backed one. */
  buf: Buffer | undefined = undefined;
  /** Backing of the resolved region. */
  backing: MemoryBacking | undefined = undefined;
  /** Offset of the resolved address inside the region's backing. */
  off = 0;
  /** Bytes from the resolved address to the end of its region. */
  avail = 0;

  /** Most recently used region and the one before it (a nested walk alternates between two). */
  private v0: RegionView = NO_VIEW;
  private v1: RegionView = NO_VIEW;
  private readonly views = new WeakMap<HostRegion, RegionView>();

  constructor(readonly mem: HostMemory) {}

  /** Forget the cached regions (optional: every access re-validates them anyway). */
  flush(): void {
    this.v0 = NO_VIEW;
    this.v1 = NO_VIEW;
  }

  /**
   * Re-validate the cached regions against HostMemory's current list. Call once before a series
   * of `load`/`orLo` that cannot be interleaved with region changes (one walk); `resolve`
   * validates by itself.
   */
  begin(): void {
    const rs = this.mem.listRegions();
    if (rs[this.v0.idx] !== this.v0.region) this.v0 = NO_VIEW;
    if (rs[this.v1.idx] !== this.v1.region) this.v1 = NO_VIEW;
  }

  /** The cached view holding [hpa, hpa+length) (validated by `begin`), else a fresh lookup. */
  private view(hpa: number, length: number): RegionView | null {
    const v = this.v0;
    if (hpa >= v.base && hpa + length <= v.end) return v;
    const w = this.v1;
    if (hpa >= w.base && hpa + length <= w.end) {
      this.v1 = v;
      this.v0 = w;
      return w;
    }
    return this.lookup(hpa, length);
  }

  private lookup(hpa: number, length: number): RegionView | null {
    const v = this.v0;
    const s = this.select(this.mem.listRegions(), hpa, length);
    if (s !== null) {
      this.v1 = v;
      this.v0 = s;
    }
    return s;
  }

  /** The pages of the view `spanPage` returned: [spanPfn, spanPfn + spanPages). */
  spanPfn = 0;
  spanPages = 0;

  /**
   * The u32 view of the in-process region holding the whole 4 KiB page `pfn` (page number of an
   * HPA), with the region's first page in spanPfn and its whole pages in spanPages, so a walk
   * reads entry `idx` of any table page `p` in [spanPfn, spanPfn + spanPages) as
   * `u32[(p - spanPfn) · 1024 + idx · 2]` (low half) and the next word (high half): integer
   * arithmetic, no address in bytes. Null for a page that is file-backed, not backed or not wholly
   * inside a region: read its entries with `load`. Validated like every cached view (`begin`).
   */
  spanPage(pfn: number): Uint32Array | null {
    const v = this.view(pfn * 4096, 4096);
    if (v === null || v.pages === 0 || pfn - v.basePfn >= v.pages) return null;
    this.spanPfn = v.basePfn;
    this.spanPages = v.pages;
    return v.u32;
  }

  /** Read the 64-bit entry at `hpa` into `lo`/`hi`. False when not backed. */
  load(hpa: number): boolean {
    let v = this.v0;
    if (hpa < v.base || hpa + 8 > v.end) {
      v = this.v1;
      if (hpa < v.base || hpa + 8 > v.end) return this.loadSlow(hpa);
    }
    const u = v.u32;
    if (u === null) return this.loadSlow(hpa);
    const i = (hpa - v.base) / 4;
    this.lo = u[i]!;
    this.hi = u[i + 1]!;
    return true;
  }

  private loadSlow(hpa: number): boolean {
    const v = this.view(hpa, 8);
    if (v === null) return false;
    const u = v.u32;
    if (u !== null) {
      const i = (hpa - v.base) / 4;
      this.lo = u[i]!;
      this.hi = u[i + 1]!;
      return true;
    }
    try {
      const o = hpa - v.base;
      this.lo = v.backing.readU32(o);
      this.hi = v.backing.readU32(o + 4);
      return true;
    } catch {
      return false;
    }
  }

  /** Set `bits` in the low half of the entry at `hpa` (A/D updates). False when the write fails. */
  orLo(hpa: number, bits: number): boolean {
    const v = this.view(hpa, 8);
    if (v === null) return false;
    const u = v.u32;
    if (u !== null) {
      const i = (hpa - v.base) / 4;
      u[i] = (u[i]! | bits) >>> 0;
      return true;
    }
    try {
      const o = hpa - v.base;
      v.backing.writeU32(o, (v.backing.readU32(o) | bits) >>> 0);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Resolve `hpa` for a data move: sets `buf`/`backing`, `off` and `avail` (bytes to the end of
   * the region). False when `hpa` is not backed.
   */
  resolve(hpa: number): boolean {
    this.begin();
    const v = this.view(hpa, 1);
    if (v === null) return false;
    this.buf = v.buf;
    this.backing = v.backing;
    this.off = hpa - v.base;
    this.avail = v.end - hpa;
    return true;
  }

  private select(rs: readonly HostRegion[], hpa: number, length: number): RegionView | null {
    if (!Number.isSafeInteger(hpa) || hpa < 0) return null;
    const i = this.mem.indexOf(hpa);
    if (i < 0) return null;
    const r = rs[i]!;
    if (hpa + length > r.hpa + r.size) return null;
    let v = this.views.get(r);
    if (v === undefined) {
      v = new RegionView(r, r.backing);
      this.views.set(r, v);
    }
    v.idx = i;
    return v;
  }
}
