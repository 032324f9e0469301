/**
 * The page-table pool (host/iommu/pt-pool.ts): contiguous runs come back as blocks and are
 * reused, empty chunks are released, reservations hold, and refused calls change nothing. The
 * device cycle at the end is the in-process form of the "connect, VM_SETUP, 32 × DEVICE_ADD,
 * close" leak: every device's 128 KiB PASID directory is an allocContig(32) run.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { PageTablePool, PT_PAGE_SIZE } from '../../../../host/iommu/pt-pool.js';
import { makeFixture, type Fixture } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });
const CHUNK = 16 * PT_PAGE_SIZE;

let pools: PageTablePool[] = [];
afterEach(() => {
  for (const p of pools) p.dispose();
  pools = [];
});

function pool(chunkBytes = CHUNK): { pool: PageTablePool; mem: HostMemory } {
  const mem = new HostMemory();
  const p = new PageTablePool(mem, { chunkBytes });
  pools.push(p);
  return { pool: p, mem };
}

describe('page-table pool', () => {
  it('refuses a chunk size that is not 4 KiB times a power of two (EINVAL)', () => {
    const mem = new HostMemory();
    expect(() => new PageTablePool(mem, { chunkBytes: 3 * PT_PAGE_SIZE })).toThrow(code('EINVAL'));
    expect(() => new PageTablePool(mem, { chunkBytes: 1000 })).toThrow(code('EINVAL'));
    expect(() => new PageTablePool(mem, { chunkBytes: 0 })).toThrow(code('EINVAL'));
  });

  it('reuses a freed contiguous run for the next run of the same size: the pool does not grow', () => {
    const { pool: p } = pool();
    const a = p.allocContig(8);
    p.alloc();
    p.free(a, 8);
    const b = p.allocContig(8);
    expect(b).toBe(a);
    expect(p.stats().chunks).toBe(1);
  });

  it('merges freed single pages back into a block (buddy coalescing)', () => {
    const { pool: p } = pool();
    const keep = p.alloc();
    const singles = Array.from({ length: 8 }, () => p.alloc());
    for (const s of singles) p.free(s);
    // Eight singles freed one by one must form a run of 8 again, inside the first chunk.
    const run = p.allocContig(8);
    expect(p.stats().chunks).toBe(1);
    expect(p.owns(keep)).toBe(true);
    expect(p.owns(run + 7 * PT_PAGE_SIZE)).toBe(true);
  });

  it('gives an odd-sized run its exact pages and returns the rest of the block at once', () => {
    const { pool: p } = pool();
    const run = p.allocContig(5);
    expect(p.pagesInUse).toBe(5);
    expect(p.stats().freePages).toBe(16 - 5);
    // The tail is free as aligned blocks: page 5 alone, pages 6..7 as a pair.
    const pair = p.allocContig(2);
    expect(pair).toBe(run + 6 * PT_PAGE_SIZE);
    const single = p.alloc();
    expect(single).toBe(run + 5 * PT_PAGE_SIZE);
    p.free(run, 5);
    p.free(pair, 2);
    p.free(single);
    expect(p.pagesInUse).toBe(0);
  });

  it('hands out zeroed pages after a free', () => {
    const { pool: p, mem } = pool();
    const a = p.allocContig(4);
    for (let i = 0; i < 4; i++) mem.writeU64(a + i * PT_PAGE_SIZE + 8, 0xdeadbeefn);
    p.free(a, 4);
    const b = p.allocContig(4);
    for (let i = 0; i < 4; i++) expect(mem.readU64(b + i * PT_PAGE_SIZE + 8)).toBe(0n);
  });

  it('releases an empty chunk but keeps one chunk of free pages; counters return to where they were', () => {
    const { pool: p, mem } = pool();
    p.alloc();
    const before = p.stats();
    const runs = Array.from({ length: 4 }, () => p.allocContig(16));
    expect(p.stats().chunks).toBe(5);
    for (const r of runs) p.free(r, 16);
    const after = p.stats();
    expect(after.pagesInUse).toBe(before.pagesInUse);
    expect(after.chunks).toBe(2); // the partly used one and one spare
    expect(after.chunksReleased).toBe(3);
    expect(after.bytesHighWater).toBe(5 * CHUNK);
    expect(mem.listRegions().length).toBe(2);
  });

  it('serves from the lowest chunk that has room, so higher chunks can empty and be released', () => {
    const { pool: p } = pool();
    const pages = Array.from({ length: 48 }, () => p.alloc()).sort((a, b) => a - b); // three chunks
    const [low, mid, high] = [pages.slice(0, 16), pages.slice(16, 32), pages.slice(32)];
    for (const x of low.slice(1)) p.free(x); // the low chunk keeps one page
    for (const x of high.slice(1)) p.free(x); // so does the high one
    const next = p.alloc();
    expect(next).toBeGreaterThanOrEqual(low[0]!);
    expect(next).toBeLessThan(low[0]! + CHUNK); // from the low chunk, not the high one
    // The high chunk empties: it stays as the one spare chunk; then the middle one empties too
    // and is released.
    p.free(high[0]!);
    expect(p.stats()).toMatchObject({ chunks: 3, chunksReleased: 0 });
    for (const x of mid) p.free(x);
    expect(p.stats()).toMatchObject({ chunks: 2, chunksReleased: 1, pagesInUse: 2 });
  });

  it('a reservation survives frees that empty chunks', () => {
    const { pool: p } = pool();
    const runs = Array.from({ length: 3 }, () => p.allocContig(16));
    p.reserve(40);
    for (const r of runs) p.free(r, 16);
    const chunks = p.stats().chunks;
    for (let i = 0; i < 40; i++) p.alloc();
    expect(p.stats().chunks).toBe(chunks);
  });

  it('refuses bad sizes and pages it did not hand out (EINVAL), changing nothing', () => {
    const { pool: p } = pool();
    const a = p.allocContig(2);
    const before = p.stats();
    expect(() => p.allocContig(0)).toThrow(code('EINVAL'));
    expect(() => p.allocContig(17)).toThrow(code('EINVAL'));
    expect(() => p.allocContig(1.5)).toThrow(code('EINVAL'));
    expect(() => p.free(a, 3)).toThrow(code('EINVAL')); // third page is not allocated
    expect(() => p.free(a + 2 * PT_PAGE_SIZE)).toThrow(code('EINVAL'));
    expect(() => p.free(a, 0)).toThrow(code('EINVAL'));
    expect(p.stats()).toEqual(before);
    p.free(a, 2);
    expect(() => p.free(a)).toThrow(code('EINVAL')); // double free
  });

  it('refuses a free that crosses two chunks (EINVAL), changing nothing', () => {
    const { pool: p } = pool(2 * PT_PAGE_SIZE);
    const a = p.allocContig(2);
    const b = p.allocContig(2);
    const [lo, hi] = a < b ? [a, b] : [b, a];
    expect(hi).toBe(lo + 2 * PT_PAGE_SIZE); // adjacent chunks
    const before = p.stats();
    expect(() => p.free(lo + PT_PAGE_SIZE, 2)).toThrow(code('EINVAL'));
    expect(p.stats()).toEqual(before);
  });
});

describe('device add/remove cycles (each device a 128 KiB PASID directory)', () => {
  let fx: Fixture | undefined;
  afterEach(() => {
    fx?.dispose();
    fx = undefined;
  });

  it('32 devices added and removed, 50 times: pages in use and held bytes return to the first cycle, high water does not grow', () => {
    fx = makeFixture();
    const io = fx.iommu;
    const cycle = (): void => {
      for (let i = 0; i < 32; i++) io.addDevice({ rid: 0x100 + i, pasidBits: 20 });
      for (let i = 0; i < 32; i++) io.removeDevice(0x100 + i);
    };
    const empty = io.pool.stats();
    cycle();
    const first = io.pool.stats();
    expect(first.pagesInUse).toBe(empty.pagesInUse);
    expect(first.pagesHighWater).toBeGreaterThanOrEqual(32 * 32);
    for (let n = 0; n < 50; n++) cycle();
    const last = io.pool.stats();
    expect(last.pagesInUse).toBe(empty.pagesInUse);
    expect(last.pagesHighWater).toBe(first.pagesHighWater);
    expect(last.bytesHighWater).toBe(first.bytesHighWater);
    expect(last.bytesReserved).toBeLessThanOrEqual(first.bytesReserved);
  });
});
