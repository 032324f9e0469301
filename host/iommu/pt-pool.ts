/**
 * Page-table page pool: the host IOMMU's own memory for second-level tables, PASID directories
 * and PASID tables. Pages live in in-process regions added to the emulated host physical
 * address space (HostMemory), so the translation engine reads them exactly like any other host
 * memory. The pool grows one chunk (a region) at a time.
 *
 * Inside a chunk pages are managed as a binary buddy system (the scheme of Linux
 * mm/page_alloc.c, `__rmqueue_smallest` / `__free_one_page`): free lists per block order
 * (2^order pages), a block split on allocation, a freed block merged with its free buddy. A freed
 * contiguous run therefore returns as blocks that later contiguous allocations reuse — freeing a
 * 128 KiB PASID directory as 32 unrelated single pages would make every new directory grow the
 * pool (a host-memory leak one client could drive).
 *
 * Contracts:
 * - `alloc()`/`allocContig(n)` return the HPA of zeroed, 4 KiB-aligned pages; contiguous runs
 *   never cross a chunk. `allocContig(n)` takes a block of the next power of two and returns its
 *   unused tail at once (as Linux `alloc_pages_exact` does). Blocks come from the lowest chunk
 *   that has one, so long-lived pages gather in the low chunks and the high ones empty. Cost:
 *   one mask test per chunk plus O(log chunk pages) splits or merges.
 * - `free(hpa, n)` zeroes the pages and returns them; freeing a page that is not allocated is
 *   EINVAL and changes nothing. Any allocated run may be freed, whole or in parts.
 * - A chunk whose pages are all free again is released (its region removed from host memory),
 *   except that the pool keeps enough free pages for one whole chunk and the largest
 *   reservation made: memory in use returns to its level before a burst.
 * - `reserve(n)` guarantees that the next `n` single-page allocations succeed without growing,
 *   so a multi-step update can check for memory before it mutates anything (frees in between
 *   never release what a reservation relies on).
 */
import { InProcessBacking } from '../../src/memory/backing.js';
import { fail } from '../../src/errors.js';
import type { HostMemory, HostRegion } from '../memory/host-memory.js';

export const PT_PAGE_SIZE = 4096;

export interface PageTablePoolOptions {
  /** Bytes per chunk (4 KiB times a power of two). Default 2 MiB. */
  chunkBytes?: number;
  /** Lowest HPA at which chunks are placed. Default: HostMemory.findFree's default. */
  base?: number;
  /** Region name prefix. Default 'iommu-pt'. */
  name?: string;
}

/** Counters of a pool (also reported by the host's monitor). */
export interface PageTablePoolStats {
  /** Pages handed out now. */
  pagesInUse: number;
  /** Most pages ever handed out at once. */
  pagesHighWater: number;
  /** Chunks held now. */
  chunks: number;
  /** Bytes of host memory held now (chunks × chunk size). */
  bytesReserved: number;
  /** Most bytes ever held at once. */
  bytesHighWater: number;
  /** Free pages inside the held chunks. */
  freePages: number;
  /** Chunks released since the pool was created. */
  chunksReleased: number;
}

interface Chunk {
  readonly region: HostRegion;
  readonly backing: InProcessBacking;
  /** Pages of this chunk handed out now. */
  used: number;
  /** free[k]: HPAs of this chunk's free blocks of 2^k pages. */
  readonly free: Set<number>[];
  /** Bit k set when free[k] is not empty. */
  mask: number;
}

export class PageTablePool {
  private readonly chunkBytes: number;
  private readonly chunkPages: number;
  /** Order of a whole chunk (chunkPages = 2^maxOrder). */
  private readonly maxOrder: number;
  private readonly base: number | undefined;
  private readonly name: string;
  /** Chunks sorted by HPA. */
  private readonly chunks: Chunk[] = [];
  private readonly allocated = new Set<number>();
  private freeCount = 0;
  private highWaterPages = 0;
  private highWaterBytes = 0;
  private released = 0;
  private serial = 0;
  /** Free pages never released: one chunk, or the largest reservation if bigger. */
  private keepFree: number;

  constructor(private readonly mem: HostMemory, opts: PageTablePoolOptions = {}) {
    const chunkBytes = opts.chunkBytes ?? 2 * 1024 * 1024;
    const pages = chunkBytes / PT_PAGE_SIZE;
    if (!Number.isSafeInteger(pages) || pages < 1 || pages > 2 ** 30 || (pages & (pages - 1)) !== 0) {
      fail('EINVAL', `page-table pool chunk size ${chunkBytes} must be 4096 times a power of two`);
    }
    this.chunkBytes = chunkBytes;
    this.chunkPages = pages;
    this.maxOrder = Math.log2(pages);
    this.keepFree = pages;
    this.base = opts.base;
    this.name = opts.name ?? 'iommu-pt';
  }

  /** Pages currently handed out. */
  get pagesInUse(): number {
    return this.allocated.size;
  }

  /** Bytes of host memory the pool holds (all chunks). */
  get bytesReserved(): number {
    return this.chunks.length * this.chunkBytes;
  }

  stats(): PageTablePoolStats {
    return {
      pagesInUse: this.allocated.size,
      pagesHighWater: this.highWaterPages,
      chunks: this.chunks.length,
      bytesReserved: this.bytesReserved,
      bytesHighWater: this.highWaterBytes,
      freePages: this.freeCount,
      chunksReleased: this.released,
    };
  }

  /** A zeroed 4 KiB page. */
  alloc(): number {
    const hpa = this.takeBlock(0);
    this.markAllocated(hpa, 1);
    return hpa;
  }

  /** `pages` zeroed, physically contiguous 4 KiB pages (1 ≤ pages ≤ chunk size). */
  allocContig(pages: number): number {
    if (!Number.isSafeInteger(pages) || pages < 1 || pages > this.chunkPages) {
      fail('EINVAL', `cannot allocate ${pages} contiguous page-table pages (chunk holds ${this.chunkPages})`);
    }
    const order = Math.ceil(Math.log2(pages));
    const hpa = this.takeBlock(order);
    this.markAllocated(hpa, pages);
    // The block's unused tail goes back at once, as aligned blocks.
    const tail = 2 ** order - pages;
    if (tail > 0) this.releaseRun(hpa + pages * PT_PAGE_SIZE, tail);
    return hpa;
  }

  /** Return `pages` pages starting at `hpa` (they must all be allocated). The pages are zeroed. */
  free(hpa: number, pages = 1): void {
    if (!Number.isSafeInteger(pages) || pages < 1) fail('EINVAL', `cannot free ${pages} page-table pages`);
    for (let i = 0; i < pages; i++) {
      const p = hpa + i * PT_PAGE_SIZE;
      if (!this.allocated.has(p)) fail('EINVAL', `page-table page 0x${p.toString(16)} is not allocated from this pool`);
    }
    const chunk = this.chunkOf(hpa)!;
    const off = hpa - chunk.region.hpa;
    if (off + pages * PT_PAGE_SIZE > this.chunkBytes) fail('EINVAL', `page-table pages 0x${hpa.toString(16)} + ${pages} cross a pool chunk`);
    chunk.backing.buffer.fill(0, off, off + pages * PT_PAGE_SIZE);
    for (let i = 0; i < pages; i++) this.allocated.delete(hpa + i * PT_PAGE_SIZE);
    chunk.used -= pages;
    this.releaseRun(hpa, pages);
    if (chunk.used === 0) this.maybeReleaseChunk(chunk);
  }

  /** Make sure `pages` single-page allocations can be served without adding a chunk. */
  reserve(pages: number): void {
    if (pages > this.keepFree) this.keepFree = pages;
    while (this.freeCount < pages) this.addChunk();
  }

  /** True when `hpa` is a page handed out by this pool. */
  owns(hpa: number): boolean {
    return this.allocated.has(hpa);
  }

  /** Remove every chunk from host memory and release the backings. */
  dispose(): void {
    for (const c of this.chunks) {
      this.mem.removeRegion(c.region);
      c.backing.close();
    }
    this.chunks.length = 0;
    this.freeCount = 0;
    this.allocated.clear();
  }

  // ---- buddy system ----------------------------------------------------------------------------

  /**
   * Remove a free block of 2^order pages from the free lists: the smallest fitting block of the
   * lowest chunk that has one (split down to the order), or a new chunk. Taking from the lowest
   * chunks first keeps long-lived pages together, so the higher chunks empty and are released
   * instead of each holding a few pages. O(chunks) mask tests, O(log chunk pages) splits.
   */
  private takeBlock(order: number): number {
    let chunk: Chunk | undefined;
    for (const c of this.chunks) {
      if (c.mask >>> order !== 0) {
        chunk = c;
        break;
      }
    }
    chunk ??= this.addChunk();
    const m = chunk.mask >>> order;
    let k = order + 31 - Math.clz32(m & -m);
    const hpa = chunk.free[k]!.values().next().value as number;
    this.unlist(chunk, k, hpa);
    // Split down to the wanted order; the upper halves stay free.
    while (k > order) {
      k--;
      this.list(chunk, k, hpa + 2 ** k * PT_PAGE_SIZE);
    }
    this.freeCount -= 2 ** order;
    return hpa;
  }

  private list(c: Chunk, k: number, hpa: number): void {
    c.free[k]!.add(hpa);
    c.mask |= 1 << k;
  }

  /** Take `hpa` off chunk `c`'s order-k free list; false when it was not there. */
  private unlist(c: Chunk, k: number, hpa: number): boolean {
    const l = c.free[k]!;
    if (!l.delete(hpa)) return false;
    if (l.size === 0) c.mask &= ~(1 << k);
    return true;
  }

  private markAllocated(hpa: number, pages: number): void {
    for (let i = 0; i < pages; i++) this.allocated.add(hpa + i * PT_PAGE_SIZE);
    this.chunkOf(hpa)!.used += pages;
    if (this.allocated.size > this.highWaterPages) this.highWaterPages = this.allocated.size;
  }

  /** Put a run of free pages on the free lists as maximal aligned blocks, merging with free buddies. */
  private releaseRun(hpa: number, pages: number): void {
    const chunk = this.chunkOf(hpa)!;
    let at = (hpa - chunk.region.hpa) / PT_PAGE_SIZE;
    const end = at + pages;
    while (at < end) {
      let order = 0;
      while (order < this.maxOrder && at % 2 ** (order + 1) === 0 && at + 2 ** (order + 1) <= end) order++;
      this.freeBlock(chunk, at, order);
      at += 2 ** order;
    }
    this.freeCount += pages;
  }

  /** Free one aligned block (page index `at` of `chunk`), merging upwards with free buddies. */
  private freeBlock(chunk: Chunk, at: number, order: number): void {
    const base = chunk.region.hpa;
    let start = at;
    let k = order;
    while (k < this.maxOrder) {
      const buddy = start ^ (2 ** k);
      if (!this.unlist(chunk, k, base + buddy * PT_PAGE_SIZE)) break;
      start = Math.min(start, buddy);
      k++;
    }
    this.list(chunk, k, base + start * PT_PAGE_SIZE);
  }

  /** Release a chunk with no page in use while other free pages still cover what the pool keeps. */
  private maybeReleaseChunk(chunk: Chunk): void {
    if (this.freeCount - this.chunkPages < this.keepFree) return;
    // All its pages are free, so they have merged into one block of the chunk's size.
    this.unlist(chunk, this.maxOrder, chunk.region.hpa);
    this.freeCount -= this.chunkPages;
    this.chunks.splice(this.chunks.indexOf(chunk), 1);
    this.mem.removeRegion(chunk.region);
    chunk.backing.close();
    this.released++;
  }

  private addChunk(): Chunk {
    const backing = new InProcessBacking(this.chunkBytes);
    try {
      const hpa = this.base === undefined ? this.mem.findFree(this.chunkBytes) : this.mem.findFree(this.chunkBytes, this.base);
      const region = this.mem.addRegion(`${this.name}-${this.serial}`, hpa, backing);
      this.serial++;
      const free: Set<number>[] = [];
      for (let k = 0; k <= this.maxOrder; k++) free.push(new Set());
      const chunk: Chunk = { region, backing, used: 0, free, mask: 0 };
      let i = this.chunks.length;
      while (i > 0 && this.chunks[i - 1]!.region.hpa > hpa) i--;
      this.chunks.splice(i, 0, chunk);
      this.list(chunk, this.maxOrder, hpa);
      this.freeCount += this.chunkPages;
      if (this.bytesReserved > this.highWaterBytes) this.highWaterBytes = this.bytesReserved;
      return chunk;
    } catch (e) {
      backing.close();
      throw e;
    }
  }

  /** The chunk holding `hpa` (binary search over the chunks sorted by HPA). */
  private chunkOf(hpa: number): Chunk | undefined {
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid]!;
      if (hpa < c.region.hpa) hi = mid - 1;
      else if (hpa >= c.region.hpa + this.chunkBytes) lo = mid + 1;
      else return c;
    }
    return undefined;
  }
}
