/**
 * The host's scalable-mode PASID table (host/iommu/pasid-table.ts): an entry written is read back
 * word for word, a cleared entry is all zero (P = 0 and every field gone, VT-d 3.x §9.6), and
 * clearing one entry leaves its neighbours as they were.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { PageTablePool } from '../../../../host/iommu/pt-pool.js';
import { PasidTable } from '../../../../host/iommu/pasid-table.js';

let pools: PageTablePool[] = [];
afterEach(() => {
  for (const p of pools) p.dispose();
  pools = [];
});

function table(): PasidTable {
  const mem = new HostMemory();
  const pool = new PageTablePool(mem);
  pools.push(pool);
  return new PasidTable(pool, mem, 20);
}

/** A nested (PGTT 3) entry with fields in words 0, 1 and 2. */
const nested = (did: number) => ({ P: 1, FPD: 1, AW: 2, PGTT: 3, SLPTPTR: 0x1234n, DID: did, PWSNP: 1, SRE: 1, FLPM: 1, FLPTR: 0xabcden });

describe('host PASID table', () => {
  it('clears an entry to eight zero words and leaves the entries beside it', () => {
    const t = table();
    t.write(7, nested(3));
    t.write(8, nested(4));
    t.write(9, nested(5));
    const before7 = t.read(7)!;
    const before9 = t.read(9)!;
    expect(t.read(8)!.filter((w) => w !== 0n).length).toBeGreaterThanOrEqual(3);

    t.clear(8);

    expect(t.read(8)).toEqual(new Array(8).fill(0n));
    expect(t.read(7)).toEqual(before7);
    expect(t.read(9)).toEqual(before9);
  });

  it('clearing a PASID whose table was never allocated does nothing', () => {
    const t = table();
    t.write(3, nested(1));
    t.clear(0x80000); // another directory entry: no PASID table there
    expect(t.read(0x80000)).toBeUndefined();
    expect(t.read(3)![0]! & 1n).toBe(1n);
  });

  it('an entry written again after a clear reads back whole', () => {
    const t = table();
    t.write(5, nested(2));
    const first = t.read(5)!;
    t.clear(5);
    t.write(5, nested(2));
    expect(t.read(5)).toEqual(first);
  });
});
