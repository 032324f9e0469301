/**
 * The host service's smaller parts: the memory table (placement, mmap_offset windows, GPA
 * resolution), the page-request tracker (PRGIs, cap, timeout, matching), and the split of an
 * invalidation range into address-mask blocks.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { InProcessBacking } from '../../../src/memory/backing.js';
import { HostMemory } from '../../../host/memory/host-memory.js';
import { MemTableMap } from '../../../host/vfio/mem-table.js';
import { PageRequestTracker } from '../../../host/devices/page-requests.js';
import { addressBlocks } from '../../../host/iommu/index.js';

const region = (p: string, gpa: bigint, size: bigint, off = 0n) => ({ guest_phys_addr: gpa, memory_size: size, userspace_addr: 0n, mmap_offset: off, path: p });

describe('MemTableMap', () => {
  it('places regions in host memory and resolves GPAs inside them only (EFAULT elsewhere)', () => {
    const mem = new HostMemory();
    const b = new InProcessBacking(0x4000);
    try {
      const t = new MemTableMap(mem, 'vm');
      t.replace({ regions: [region(b.path, 0x10_0000n, 0x1000n, 0x2000n), region(b.path, 0n, 0x2000n)] });
      expect(t.list.map((r) => r.gpa)).toEqual([0, 0x10_0000]);
      const hpa = t.gpaToHpa(0x10_0000n, 0x1000n);
      // The window starts at mmap_offset of the store.
      b.buffer.writeUInt32LE(0xfeedf00d, 0x2000);
      expect(mem.readU32(hpa)).toBe(0xfeedf00d);
      expect(t.hpaToGpa(hpa + 4)).toBe(0x10_0004);
      expect(() => t.gpaToHpa(0x1000n, 0x2000n)).toThrow(/EFAULT/);
      expect(() => t.gpaToHpa(0x5000n, 0x1000n)).toThrow(/EFAULT/);
      expect(t.same({ regions: [region(b.path, 0n, 0x2000n), region(b.path, 0x10_0000n, 0x1000n, 0x2000n)] })).toBe(true);
      t.clear();
      expect(mem.listRegions()).toHaveLength(0);
      // The in-process store belongs to its creator: still registered.
      expect(b.buffer.readUInt32LE(0x2000)).toBe(0xfeedf00d);
    } finally {
      b.close();
    }
  });

  it('is all-or-nothing: a bad second region leaves the old table in place', () => {
    const mem = new HostMemory();
    const b = new InProcessBacking(0x2000);
    try {
      const t = new MemTableMap(mem, 'vm');
      t.replace({ regions: [region(b.path, 0n, 0x1000n)] });
      expect(() => t.replace({ regions: [region(b.path, 0n, 0x1000n), region('inproc:nope', 0x1000n, 0x1000n)] })).toThrow(/ENOENT/);
      expect(() => t.replace({ regions: [region(b.path, 0n, 0x4000n)] })).toThrow(/EINVAL/);
      expect(t.list).toHaveLength(1);
      expect(mem.listRegions()).toHaveLength(1);
    } finally {
      b.close();
    }
  });
});

describe('PageRequestTracker', () => {
  it('hands out PRGIs per device, matches responses exactly, refuses past the cap', async () => {
    const t = new PageRequestTracker(2, 10_000);
    const r1 = t.open(0x18, 5);
    const r2 = t.open(0x18, 5);
    expect([r1.prgi, r2.prgi]).toEqual([0, 1]);
    expect(() => t.open(0x20, null)).toThrow(/EAGAIN/);
    expect(() => t.respond(0x18, 6, 0, 0)).toThrow(/EINVAL/);
    expect(() => t.respond(0x18, null, 0, 0)).toThrow(/EINVAL/);
    t.respond(0x18, 5, 1, 1);
    expect(await r2.outcome).toBe('invalid');
    t.respond(0x18, 5, 0, 0);
    expect(await r1.outcome).toBe('success');
    expect(() => t.respond(0x18, 5, 0, 0)).toThrow(/EINVAL/);
    expect(t.size).toBe(0);
  });

  it('times out, and cancels everything at disconnect', async () => {
    const t = new PageRequestTracker(4, 20);
    expect(await t.open(1, null).outcome).toBe('timeout');
    const p = t.open(1, null).outcome;
    t.cancelAll();
    expect(await p).toBe('cancelled');
  });
});

describe('addressBlocks', () => {
  it('covers exactly the page range with aligned power-of-two blocks', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1 << 20 }), fc.integer({ min: 1, max: 5000 }), (page, pages) => {
        const addr = BigInt(page) << 12n;
        const blocks = addressBlocks(addr, BigInt(pages) << 12n);
        let next = addr;
        for (const b of blocks) {
          expect(b.addr).toBe(next);
          expect(b.addr % (4096n << BigInt(b.am))).toBe(0n);
          next += 4096n << BigInt(b.am);
        }
        expect(next).toBe(addr + (BigInt(pages) << 12n));
      }),
      { numRuns: 200 },
    );
  });
});
