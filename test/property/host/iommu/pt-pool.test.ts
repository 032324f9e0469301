/**
 * Property: the page-table pool (host/iommu/pt-pool.ts, a buddy system per chunk) against a
 * reference model — a set of live runs — under any sequence of single-page and contiguous
 * allocations, whole and partial frees and reservations:
 * - every run handed out is inside one of the pool's host-memory regions, zeroed, and overlaps
 *   no live run (each page carries a marker that must survive until it is freed);
 * - pages in use equal the model's, `owns` agrees page by page, free pages + pages in use
 *   equal the bytes held;
 * - after everything is freed nothing is in use and at most one chunk is held.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { PageTablePool, PT_PAGE_SIZE } from '../../../../host/iommu/pt-pool.js';

const CHUNK_PAGES = 32;

type Op =
  | { kind: 'alloc' }
  | { kind: 'contig'; pages: number }
  | { kind: 'free'; pick: number; part: number }
  | { kind: 'reserve'; pages: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.constant<Op>({ kind: 'alloc' }) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: CHUNK_PAGES }).map<Op>((pages) => ({ kind: 'contig', pages })) },
  { weight: 4, arbitrary: fc.record({ pick: fc.nat(), part: fc.nat() }).map<Op>(({ pick, part }) => ({ kind: 'free', pick, part })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 * CHUNK_PAGES }).map<Op>((pages) => ({ kind: 'reserve', pages })) },
);

interface Run {
  hpa: number;
  pages: number;
}

function marker(hpa: number): bigint {
  return BigInt(hpa) | 1n;
}

function insideRegions(mem: HostMemory, r: Run): boolean {
  return mem.listRegions().some((g) => r.hpa >= g.hpa && r.hpa + r.pages * PT_PAGE_SIZE <= g.hpa + g.size);
}

function check(pool: PageTablePool, mem: HostMemory, live: Run[]): void {
  const pages = new Set<number>();
  for (const r of live) {
    for (let i = 0; i < r.pages; i++) {
      const p = r.hpa + i * PT_PAGE_SIZE;
      expect(pages.has(p)).toBe(false);
      pages.add(p);
      expect(pool.owns(p)).toBe(true);
      expect(mem.readU64(p)).toBe(marker(p));
    }
  }
  const s = pool.stats();
  expect(s.pagesInUse).toBe(pages.size);
  expect(s.freePages + s.pagesInUse).toBe(s.chunks * CHUNK_PAGES);
  expect(s.bytesReserved).toBe(s.chunks * CHUNK_PAGES * PT_PAGE_SIZE);
  expect(mem.listRegions().length).toBe(s.chunks);
}

function take(pool: PageTablePool, mem: HostMemory, live: Run[], r: Run): void {
  expect(insideRegions(mem, r)).toBe(true);
  for (let i = 0; i < r.pages; i++) {
    const p = r.hpa + i * PT_PAGE_SIZE;
    expect(mem.readU64(p)).toBe(0n); // zeroed
    expect(mem.readU64(p + PT_PAGE_SIZE - 8)).toBe(0n);
    expect(live.some((l) => p >= l.hpa && p < l.hpa + l.pages * PT_PAGE_SIZE)).toBe(false);
    mem.writeU64(p, marker(p));
    mem.writeU64(p + PT_PAGE_SIZE - 8, 0xffn);
  }
  live.push(r);
}

/** Free `part` of a live run: its head, its tail or all of it; the rest stays live. */
function release(pool: PageTablePool, live: Run[], pick: number, part: number): void {
  const i = pick % live.length;
  const r = live[i]!;
  const n = 1 + (part % r.pages);
  const fromTail = part % 2 === 1;
  const at = fromTail ? r.hpa + (r.pages - n) * PT_PAGE_SIZE : r.hpa;
  pool.free(at, n);
  live.splice(i, 1);
  if (n < r.pages) live.push({ hpa: fromTail ? r.hpa : r.hpa + n * PT_PAGE_SIZE, pages: r.pages - n });
}

describe('page-table pool vs a reference model', () => {
  it('no overlap, exact counters, zeroed pages; everything freed → nothing in use, at most one chunk', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 200 }), (ops) => {
        const mem = new HostMemory();
        const pool = new PageTablePool(mem, { chunkBytes: CHUNK_PAGES * PT_PAGE_SIZE });
        const live: Run[] = [];
        try {
          for (const op of ops) {
            if (op.kind === 'alloc') take(pool, mem, live, { hpa: pool.alloc(), pages: 1 });
            else if (op.kind === 'contig') take(pool, mem, live, { hpa: pool.allocContig(op.pages), pages: op.pages });
            else if (op.kind === 'reserve') {
              pool.reserve(op.pages);
              expect(pool.stats().freePages).toBeGreaterThanOrEqual(op.pages);
            } else if (live.length > 0) release(pool, live, op.pick, op.part);
            check(pool, mem, live);
          }
          while (live.length > 0) release(pool, live, 0, Number.MAX_SAFE_INTEGER - 1);
          check(pool, mem, live);
          const s = pool.stats();
          expect(s.pagesInUse).toBe(0);
          // A reservation may keep more than one chunk; without one, a single spare chunk stays.
          if (!ops.some((o) => o.kind === 'reserve' && o.pages > CHUNK_PAGES)) expect(s.chunks).toBeLessThanOrEqual(1);
        } finally {
          pool.dispose();
        }
      }),
      { numRuns: 300 },
    );
  });
});
