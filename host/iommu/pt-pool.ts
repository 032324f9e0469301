/**
 * Page-table page pool: the host IOMMU's own memory for second-level tables, PASID directories
 * and PASID tables. Pages live in in-process regions added to the emulated host physical
 * address space (HostMemory), so the translation engine reads them exactly like any other host
 * memory. The pool grows one chunk (a region) at a time and never shrinks until disposed.
 *
 * Contracts:
 * - `alloc()`/`allocContig(n)` return the HPA of zeroed, 4 KiB-aligned pages; contiguous runs
 *   never cross a chunk.
 * - `free(hpa, n)` zeroes the pages and returns them; freeing a page that is not allocated is
 *   EINVAL and changes nothing.
 * - `reserve(n)` guarantees that the next `n` single-page allocations succeed without growing,
 *   so a multi-step update can check for memory before it mutates anything.
 */
import { InProcessBacking } from '../../src/memory/backing.js';
import { fail } from '../../src/errors.js';
import type { HostMemory, HostRegion } from '../memory/host-memory.js';

export const PT_PAGE_SIZE = 4096;

export interface PageTablePoolOptions {
  /** Bytes per chunk (a multiple of 4 KiB). Default 2 MiB. */
  chunkBytes?: number;
  /** Lowest HPA at which chunks are placed. Default: HostMemory.findFree's default. */
  base?: number;
  /** Region name prefix. Default 'iommu-pt'. */
  name?: string;
}

interface Chunk {
  readonly region: HostRegion;
  readonly backing: InProcessBacking;
  /** Offset of the first never-used byte (bump allocation). */
  next: number;
}

export class PageTablePool {
  private readonly chunkBytes: number;
  private readonly base: number | undefined;
  private readonly name: string;
  private readonly chunks: Chunk[] = [];
  private readonly freePages: number[] = [];
  private readonly allocated = new Set<number>();

  constructor(private readonly mem: HostMemory, opts: PageTablePoolOptions = {}) {
    const chunkBytes = opts.chunkBytes ?? 2 * 1024 * 1024;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0 || chunkBytes % PT_PAGE_SIZE !== 0) {
      fail('EINVAL', `page-table pool chunk size ${chunkBytes} must be a positive multiple of 4096`);
    }
    this.chunkBytes = chunkBytes;
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

  /** A zeroed 4 KiB page. */
  alloc(): number {
    let hpa = this.freePages.pop();
    if (hpa === undefined) hpa = this.bump(1);
    this.allocated.add(hpa);
    return hpa;
  }

  /** `pages` zeroed, physically contiguous 4 KiB pages (1 ≤ pages ≤ chunk size). */
  allocContig(pages: number): number {
    if (!Number.isSafeInteger(pages) || pages < 1 || pages * PT_PAGE_SIZE > this.chunkBytes) {
      fail('EINVAL', `cannot allocate ${pages} contiguous page-table pages (chunk holds ${this.chunkBytes / PT_PAGE_SIZE})`);
    }
    if (pages === 1) return this.alloc();
    const hpa = this.bump(pages);
    for (let i = 0; i < pages; i++) this.allocated.add(hpa + i * PT_PAGE_SIZE);
    return hpa;
  }

  /** Return `pages` pages starting at `hpa` (they must all be allocated). The pages are zeroed. */
  free(hpa: number, pages = 1): void {
    for (let i = 0; i < pages; i++) {
      const p = hpa + i * PT_PAGE_SIZE;
      if (!this.allocated.has(p)) fail('EINVAL', `page-table page 0x${p.toString(16)} is not allocated from this pool`);
    }
    for (let i = 0; i < pages; i++) {
      const p = hpa + i * PT_PAGE_SIZE;
      this.zero(p);
      this.allocated.delete(p);
      this.freePages.push(p);
    }
  }

  /** Make sure `pages` single-page allocations can be served without adding a chunk. */
  reserve(pages: number): void {
    let room = this.freePages.length;
    const last = this.chunks[this.chunks.length - 1];
    if (last !== undefined) room += (this.chunkBytes - last.next) / PT_PAGE_SIZE;
    while (room < pages) {
      this.addChunk();
      room += this.chunkBytes / PT_PAGE_SIZE;
    }
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
    this.freePages.length = 0;
    this.allocated.clear();
  }

  private bump(pages: number): number {
    const bytes = pages * PT_PAGE_SIZE;
    let c = this.chunks[this.chunks.length - 1];
    if (c === undefined || c.next + bytes > this.chunkBytes) c = this.addChunk();
    const hpa = c.region.hpa + c.next;
    c.next += bytes;
    return hpa;
  }

  private addChunk(): Chunk {
    const backing = new InProcessBacking(this.chunkBytes);
    try {
      const hpa = this.base === undefined ? this.mem.findFree(this.chunkBytes) : this.mem.findFree(this.chunkBytes, this.base);
      const region = this.mem.addRegion(`${this.name}-${this.chunks.length}`, hpa, backing);
      const prev = this.chunks[this.chunks.length - 1];
      if (prev !== undefined) {
        // The previous chunk's unused tail becomes single free pages.
        for (let off = prev.next; off < this.chunkBytes; off += PT_PAGE_SIZE) this.freePages.push(prev.region.hpa + off);
        prev.next = this.chunkBytes;
      }
      const chunk: Chunk = { region, backing, next: 0 };
      this.chunks.push(chunk);
      return chunk;
    } catch (e) {
      backing.close();
      throw e;
    }
  }

  private zero(hpa: number): void {
    for (const c of this.chunks) {
      if (hpa >= c.region.hpa && hpa < c.region.hpa + this.chunkBytes) {
        const off = hpa - c.region.hpa;
        c.backing.buffer.fill(0, off, off + PT_PAGE_SIZE);
        return;
      }
    }
  }
}
