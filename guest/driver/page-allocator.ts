/**
 * A guest-physical page allocator over one GPA range, as a guest kernel's page allocator hands
 * out frames for page tables, queues and DMA buffers. Pages come back zeroed (written through
 * GuestMemory.memwrite, as the kernel's `get_zeroed_page` clears them with stores).
 *
 * Contracts:
 * - `alloc(count, { align })` returns the GPA of `count` physically contiguous pages whose first
 *   page index is a multiple of `align` pages (default: 1). ENOMEM when no such run is free;
 *   nothing changes then.
 * - `free(gpa)` releases a whole allocation by its first GPA. EINVAL for any GPA that is not the
 *   start of a live allocation (double free, interior address); nothing changes then.
 */
import { fail } from '../../src/errors.js';
import { PAGE_SIZE, type GuestMemory } from './guest-memory.js';

export interface PageAllocatorOptions {
  /** First GPA of the range (page aligned). */
  base: bigint;
  /** Bytes in the range (a positive multiple of 4 KiB). */
  size: bigint | number;
}

export interface AllocOptions {
  /** Alignment of the first page, in pages (a power of two). Default 1. */
  align?: number;
  /** Skip zeroing (the caller overwrites the whole allocation). Default false. */
  noZero?: boolean;
}

export class PageAllocator {
  readonly base: bigint;
  readonly pages: number;
  /** One byte per page: 1 = in use. */
  private readonly used: Uint8Array;
  /** Live allocations: first page index → page count. */
  private readonly live = new Map<number, number>();
  private freeCount: number;
  /** Where the next first-fit search starts (pages below it were full at the last search). */
  private hint = 0;

  constructor(
    private readonly mem: GuestMemory,
    opts: PageAllocatorOptions,
  ) {
    const size = BigInt(opts.size);
    if (opts.base < 0n || opts.base % BigInt(PAGE_SIZE) !== 0n) fail('EINVAL', `page allocator base 0x${opts.base.toString(16)} is not 4 KiB aligned`);
    if (size <= 0n || size % BigInt(PAGE_SIZE) !== 0n) fail('EINVAL', `page allocator size ${size} is not a positive multiple of 4 KiB`);
    if (opts.base + size > BigInt(Number.MAX_SAFE_INTEGER)) fail('EINVAL', 'page allocator range ends beyond 2^53');
    this.base = opts.base;
    this.pages = Number(size / BigInt(PAGE_SIZE));
    this.used = new Uint8Array(this.pages);
    this.freeCount = this.pages;
  }

  /** Pages not allocated. */
  get freePages(): number {
    return this.freeCount;
  }

  /** Number of live allocations. */
  get allocations(): number {
    return this.live.size;
  }

  /** True when `gpa` lies inside the allocator's range. */
  contains(gpa: bigint): boolean {
    return gpa >= this.base && gpa < this.base + BigInt(this.pages * PAGE_SIZE);
  }

  /**
   * Allocate `count` contiguous zeroed pages.
   * @throws VsvaError EINVAL for a bad count/alignment, ENOMEM when no run fits.
   */
  async alloc(count = 1, opts: AllocOptions = {}): Promise<bigint> {
    const gpa = this.reserve(count, opts.align ?? 1);
    if (opts.noZero !== true) {
      try {
        await this.mem.memwrite(gpa, new Uint8Array(count * PAGE_SIZE));
      } catch (e) {
        this.release(Number((gpa - this.base) / BigInt(PAGE_SIZE)));
        throw e;
      }
    }
    return gpa;
  }

  /** Reserve pages without touching memory (synchronous). Same errors as alloc. */
  reserve(count = 1, align = 1): bigint {
    if (!Number.isSafeInteger(count) || count < 1) fail('EINVAL', `page count ${count} must be a positive integer`);
    if (!Number.isSafeInteger(align) || align < 1 || (align & (align - 1)) !== 0) fail('EINVAL', `alignment ${align} pages is not a power of two`);
    const basePage = Number(this.base / BigInt(PAGE_SIZE));
    const start = this.findRun(count, align, basePage, this.hint) ?? (this.hint > 0 ? this.findRun(count, align, basePage, 0) : undefined);
    if (start === undefined) fail('ENOMEM', `no ${count} free contiguous page(s) aligned to ${align} in ${this.freeCount} free of ${this.pages}`);
    this.used.fill(1, start, start + count);
    this.live.set(start, count);
    this.freeCount -= count;
    if (count === 1 && align === 1) this.hint = start + 1;
    return this.base + BigInt(start) * BigInt(PAGE_SIZE);
  }

  /**
   * Free the allocation that starts at `gpa`.
   * @throws VsvaError EINVAL when `gpa` is not the first GPA of a live allocation.
   */
  free(gpa: bigint): void {
    if (!this.contains(gpa) || (gpa - this.base) % BigInt(PAGE_SIZE) !== 0n) fail('EINVAL', `GPA 0x${gpa.toString(16)} is not a page of this allocator`);
    const page = Number((gpa - this.base) / BigInt(PAGE_SIZE));
    if (!this.live.has(page)) fail('EINVAL', `GPA 0x${gpa.toString(16)} is not the start of a live allocation`);
    this.release(page);
  }

  private release(page: number): void {
    const count = this.live.get(page)!;
    this.live.delete(page);
    this.used.fill(0, page, page + count);
    this.freeCount += count;
    if (page < this.hint) this.hint = page;
  }

  /** First index ≥ from where `count` free pages start, aligned in absolute page numbers. */
  private findRun(count: number, align: number, basePage: number, from: number): number | undefined {
    const used = this.used;
    let i = from;
    while (i + count <= this.pages) {
      const abs = basePage + i;
      const mis = abs % align;
      if (mis !== 0) {
        i += align - mis;
        continue;
      }
      let j = 0;
      while (j < count && used[i + j] === 0) j++;
      if (j === count) return i;
      i += j + 1;
    }
    return undefined;
  }
}
