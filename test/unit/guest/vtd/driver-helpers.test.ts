import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { PageAllocator } from '../../../../guest/driver/page-allocator.js';
import { GuestProcess, flushRangeFor } from '../../../../guest/driver/guest-process.js';
import { FL_PTE_MASK } from '../../../../src/vtd/page-table.js';
import { ramMemory } from './ram-memory.js';

describe('PageAllocator', () => {
  it('hands out zeroed, aligned, distinct pages and takes them back', async () => {
    const { ram, mem } = ramMemory(1 << 20);
    ram.write(0x10000, new Uint8Array(4096).fill(0xaa));
    const a = new PageAllocator(mem, { base: 0x10000n, size: 0x20000 });
    const p = await a.alloc();
    expect(p).toBe(0x10000n);
    expect(ram.read(0x10000, 4096).every((b) => b === 0)).toBe(true);
    const big = await a.alloc(4, { align: 4 });
    expect(big % 0x4000n).toBe(0n);
    expect(a.freePages).toBe(32 - 5);
    a.free(big);
    expect(a.freePages).toBe(31);
  });

  it('refuses a double free, an interior address and exhaustion without changing state', async () => {
    const { mem } = ramMemory(1 << 20);
    const a = new PageAllocator(mem, { base: 0n, size: 0x4000 });
    const p = await a.alloc(2);
    expect(() => a.free(p + 0x1000n)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    await expect(a.alloc(3)).rejects.toMatchObject({ code: 'ENOMEM' });
    expect(a.freePages).toBe(2);
    a.free(p);
    expect(() => a.free(p)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(a.freePages).toBe(4);
  });

  it('never hands out overlapping runs (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 5 }), fc.boolean()), { maxLength: 40 }), (ops) => {
        const a = new PageAllocator({ memread: async () => new Uint8Array(), memwrite: async () => {} }, { base: 0n, size: 64 * 4096 });
        const live = new Map<bigint, number>();
        for (const [n, doFree] of ops) {
          if (doFree && live.size > 0) {
            const [k] = live.keys();
            a.free(k!);
            live.delete(k!);
            continue;
          }
          let g: bigint;
          try {
            g = a.reserve(n);
          } catch {
            continue;
          }
          for (const [s, c] of live) expect(g + BigInt(n * 4096) <= s || s + BigInt(c * 4096) <= g).toBe(true);
          live.set(g, n);
        }
        const used = [...live.values()].reduce((x, y) => x + y, 0);
        expect(a.freePages).toBe(64 - used);
      }),
      { numRuns: 100 },
    );
  });
});

describe('GuestProcess', () => {
  for (const levels of [4, 5] as const) {
    it(`maps, reads, writes and unmaps through ${levels}-level tables`, async () => {
      const { mem } = ramMemory();
      const a = new PageAllocator(mem, { base: 0x100000n, size: 0x800000 });
      const p = await GuestProcess.create(mem, a, { levels });
      const va = levels === 5 ? 0x00ff_1234_5678_0000n : 0x7fff_1234_0000n;
      const [gpa] = await p.mapNew(va, 4096);
      await p.write(va + 10n, Uint8Array.of(1, 2, 3));
      expect([...(await mem.memread(gpa! + 10n, 3))]).toEqual([1, 2, 3]);
      expect([...(await p.read(va + 10n, 3))]).toEqual([1, 2, 3]);
      const t = await p.translate(va + 5n);
      expect(t).toMatchObject({ gpa: gpa! + 5n, size: '4K', writable: true, user: true, exec: false });
      expect(t!.pte & FL_PTE_MASK.XD).toBe(FL_PTE_MASK.XD);
      expect(p.tablePages).toBe(levels);
      const u = await p.unmap(va + 100n);
      expect(u).toMatchObject({ va, size: '4K', gpa: gpa!, flush: { addr: va, npages: 1, am: 0 } });
      expect(await p.translate(va)).toBeUndefined();
      await expect(p.read(va, 1)).rejects.toMatchObject({ code: 'EFAULT' });
    });
  }

  it('maps 2M and 1G leaves with PS and refuses overlaps', async () => {
    const { mem } = ramMemory();
    const a = new PageAllocator(mem, { base: 0x100000n, size: 0x800000 });
    const p = await GuestProcess.create(mem, a);
    await p.map(0x4000_0000n, 0x20_0000n, { size: '2M', write: false });
    await p.map(0x80_0000_0000n, 0x4000_0000n, { size: '1G' });
    const t = await p.translate(0x4000_1234n);
    expect(t).toMatchObject({ gpa: 0x20_1234n, size: '2M', writable: false });
    expect(t!.pte & FL_PTE_MASK.PS).toBe(FL_PTE_MASK.PS);
    expect((await p.translate(0x80_1234_5678n))!.gpa).toBe(0x5234_5678n);
    const before = p.tablePages;
    await expect(p.map(0x4000_1000n, 0x1000n)).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(p.map(0x4000_0000n, 0x40_0000n, { size: '2M' })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(p.write(0x4000_0000n, Uint8Array.of(1))).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(p.map(0x8000_0000_0000n, 0x1000n)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(p.tablePages).toBe(before);
    const u = await p.unmap(0x4000_0000n);
    expect(u.flush).toEqual({ addr: 0x4000_0000n, npages: 512, am: 9 });
  });

  it('computes Linux PSI ranges', () => {
    expect(flushRangeFor(0x5000n, 3)).toEqual({ addr: 0x4000n, npages: 3, am: 2 });
    expect(flushRangeFor(0x7000n, 1)).toEqual({ addr: 0x7000n, npages: 1, am: 0 });
  });
});
