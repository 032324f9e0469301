/**
 * Domain, device and attach API: map/unmap with splitting, domain IDs, and the exact errno of
 * every refused call with state unchanged.
 */
import { describe, expect, it } from 'vitest';
import type { HostIommu } from '../../../../host/iommu/index.js';
import { GUEST_HPA as G, FixturePerTest } from './helpers.js';

const fixtures = new FixturePerTest();

function iommu(): HostIommu {
  const fx = fixtures.make();
  return fx.iommu;
}

const code = (c: string) => expect.objectContaining({ code: c });

describe('map and unmap', () => {
  it('unmapping part of a 2 MiB page splits it and keeps the rest mapped', () => {
    const io = iommu();
    const d = io.allocDomain();
    io.map(d, 0x200000n, BigInt(G + 0x200000), 0x200000n, { read: true, write: true });
    expect(d.table!.lookup(0x200000)!.pageBytes).toBe(0x200000);
    expect(io.unmap(d, 0x201000n, 0x2000n)).toBe(0x2000n);
    expect(io.iovaToPhys(d, 0x200000n)).toBe(BigInt(G + 0x200000));
    expect(io.iovaToPhys(d, 0x201000n)).toBeUndefined();
    expect(io.iovaToPhys(d, 0x202fffn)).toBeUndefined();
    expect(io.iovaToPhys(d, 0x203abcn)).toBe(BigInt(G + 0x203abc));
    expect(d.table!.lookup(0x203000)!.pageBytes).toBe(4096);
    expect(d.table!.mappedBytes).toBe(0x200000 - 0x2000);
  });

  it('unmapping part of a 1 GiB page splits it twice; unmap returns only the bytes that were mapped', () => {
    const io = iommu();
    const d = io.allocDomain();
    io.map(d, 0x4000_0000n, 0x8000_0000n, 0x4000_0000n, { read: true, write: false });
    expect(io.unmap(d, 0x4020_1000n, 0x1000n)).toBe(0x1000n);
    expect(d.table!.lookup(0x4000_0000)!.pageBytes).toBe(0x200000);
    expect(d.table!.lookup(0x4020_0000)!.pageBytes).toBe(0x1000);
    expect(io.iovaToPhys(d, 0x7fff_ffffn)).toBe(0xbfff_ffffn);
    expect(io.unmap(d, 0x4020_0000n, 0x3000n)).toBe(0x2000n); // one of the three pages was already gone
    expect(io.unmap(d, 0x1000_0000n, 0x1000n)).toBe(0n);
    expect(io.unmap(d, 0x4000_0000n, 0x4000_0000n)).toBe(0x4000_0000n - 0x3000n);
    expect(d.table!.tablePages).toBe(1); // empty tables were freed
  });

  it('refuses overlapping, misaligned and out-of-range mappings, changing nothing', () => {
    const io = iommu();
    const d = io.allocDomain({ levels: 3 });
    io.map(d, 0x10000n, BigInt(G), 0x4000n, { read: true, write: true });
    const pages = io.pool.pagesInUse;
    expect(() => io.map(d, 0x8000n, BigInt(G), 0x10000n, { read: true, write: true })).toThrow(code('EEXIST'));
    expect(() => io.map(d, 0x20800n, BigInt(G), 0x1000n, { read: true, write: true })).toThrow(code('EINVAL'));
    expect(() => io.map(d, 0x20000n, BigInt(G), 0x1800n, { read: true, write: true })).toThrow(code('EINVAL'));
    expect(() => io.map(d, 0x20000n, BigInt(G), 0x1000n, { read: false, write: false })).toThrow(code('EINVAL'));
    expect(() => io.map(d, 1n << 39n, BigInt(G), 0x1000n, { read: true, write: true })).toThrow(code('ERANGE'));
    expect(() => io.unmap(d, 0x123n, 0x1000n)).toThrow(code('EINVAL'));
    expect(io.pool.pagesInUse).toBe(pages);
    expect(d.table!.mappedBytes).toBe(0x4000);
    expect(io.iovaToPhys(d, 0x8000n)).toBeUndefined();
  });

  it('asserts address widths before an address becomes a number (ERANGE), changing nothing', () => {
    const io = iommu();
    const d = io.allocDomain();
    const pages = io.pool.pagesInUse;
    expect(() => io.map(d, 0n, 1n << 48n, 0x1000n, { read: true, write: true })).toThrow(code('ERANGE')); // HPA beyond the 48-bit HAW
    expect(() => io.map(d, 1n << 48n, BigInt(G), 0x1000n, { read: true, write: true })).toThrow(code('ERANGE')); // IOVA beyond the table
    expect(() => io.map(d, -0x1000n, BigInt(G), 0x1000n, { read: true, write: true })).toThrow(code('ERANGE'));
    expect(() => io.map(d, 0n, BigInt(G), 1n << 64n, { read: true, write: true })).toThrow(code('ERANGE'));
    expect(() => io.unmap(d, 1n << 60n, 0x1000n)).toThrow(code('ERANGE'));
    expect(io.iovaToPhys(d, 1n << 60n)).toBeUndefined();
    expect(io.pool.pagesInUse).toBe(pages);
    expect(d.table!.mappedBytes).toBe(0);
  });
});

describe('domains', () => {
  it('hands out 16-bit DIDs from 2 (0 reserved, 1 the identity domain) and reuses freed ones', () => {
    const io = iommu();
    const a = io.allocDomain();
    const b = io.allocDomain();
    expect([io.identityDomain.did, a.did, b.did]).toEqual([1, 2, 3]);
    io.freeDomain(a);
    expect(() => io.domain(a.did)).toThrow(code('ENOENT'));
    expect(() => io.map(a, 0n, BigInt(G), 0x1000n, { read: true, write: true })).toThrow(code('ENOENT'));
    expect(() => io.freeDomain(io.identityDomain)).toThrow(code('EINVAL'));
  });

  it('refuses to free a domain with routes (EBUSY)', () => {
    const io = iommu();
    const d = io.allocDomain();
    io.addDevice({ rid: 8 });
    io.attachPasid(8, 5, d);
    expect(() => io.freeDomain(d)).toThrow(code('EBUSY'));
    io.detachPasid(8, 5);
    io.freeDomain(d);
  });
});

describe('devices and routes', () => {
  it('refuses bad attach and bind calls with precise errnos, changing nothing', () => {
    const io = iommu();
    const d = io.allocDomain();
    const e = io.allocDomain();
    io.addDevice({ rid: 8, pasidBits: 8 });
    io.addDevice({ rid: 16, pasidBits: 0 });
    io.attachDevice(8, d);
    io.attachPasid(8, 5, d);
    io.bindPgtablePasid(8, 6, d, { flptr: 0x1000n });
    const before = JSON.stringify(io.inspect());
    expect(() => io.addDevice({ rid: 8 })).toThrow(code('EEXIST'));
    expect(() => io.addDevice({ rid: 0x10000 })).toThrow(code('EINVAL'));
    expect(() => io.addDevice({ rid: 24, pasidBits: 21 })).toThrow(code('EINVAL'));
    expect(() => io.attachDevice(9, d)).toThrow(code('ENODEV'));
    expect(() => io.attachDevice(8, e)).toThrow(code('EBUSY'));
    expect(() => io.attachPasid(8, 5, e)).toThrow(code('EBUSY'));
    expect(() => io.attachPasid(8, 0, e)).toThrow(code('EINVAL'));
    expect(() => io.attachPasid(8, 256, e)).toThrow(code('ERANGE'));
    expect(() => io.attachPasid(16, 1, e)).toThrow(code('EOPNOTSUPP'));
    expect(() => io.detachPasid(8, 7)).toThrow(code('ENOENT'));
    expect(() => io.detachPasid(8, 6)).toThrow(code('EINVAL'));
    expect(() => io.unbindPgtablePasid(8, 5)).toThrow(code('EINVAL'));
    expect(() => io.bindPgtablePasid(8, 7, d, { flptr: 0x1001n })).toThrow(code('EINVAL'));
    expect(() => io.bindPgtablePasid(8, 7, d, { flptr: 1n << 48n })).toThrow(code('EINVAL'));
    expect(() => io.bindPgtablePasid(8, 7, d, { flptr: 0x1000n, levels: 3 as never })).toThrow(code('EINVAL'));
    expect(() => io.bindPgtablePasid(8, 7, d, { flptr: 0x1000n, emt: 8 })).toThrow(code('EINVAL'));
    expect(() => io.bindPgtablePasid(8, 7, io.identityDomain, { flptr: 0x1000n })).toThrow(code('EINVAL'));
    expect(() => io.removeDevice(8)).toThrow(code('EBUSY'));
    expect(JSON.stringify(io.inspect())).toBe(before);
  });

  it('writes the host PASID entry the way Linux programs nested translation', () => {
    const io = iommu();
    const d = io.allocDomain({ dirtyTracking: true });
    io.addDevice({ rid: 8 });
    io.bindPgtablePasid(8, 9, d, { flptr: 0x7000n, levels: 5, sre: true, wpe: true, eafe: true, pat: 0x0007_0406, emt: 6, pcd: true });
    const w = io.device(8).pasidTable.read(9)!;
    expect(Number((w[0]! >> 6n) & 7n)).toBe(3); // PGTT nested
    expect(w[0]! & ~0xfffn).toBe(BigInt(d.table!.root)); // SLPTPTR
    expect(Number((w[0]! >> 2n) & 7n)).toBe(2); // AW 48-bit
    expect((w[0]! >> 9n) & 1n).toBe(1n); // SLADE
    expect(Number(w[1]! & 0xffffn)).toBe(d.did);
    expect((w[1]! >> 23n) & 1n).toBe(1n); // PWSNP
    expect(w[1]! >> 32n).toBe(0x0007_0406n); // PAT
    expect(Number((w[1]! >> 27n) & 7n)).toBe(6); // EMT
    expect(w[2]! & ~0xfffn).toBe(0x7000n); // FLPTR
    expect(Number(w[2]! & 0xffn)).toBe(0b1001_0101); // EAFE | WPE | FLPM=1 | SRE
  });

  it('detach and unbind flush, so the route stops translating at once', () => {
    const io = iommu();
    const d = io.allocDomain();
    io.map(d, 0n, BigInt(G), 0x200000n, { read: true, write: true });
    io.addDevice({ rid: 8, ats: true });
    io.attachDevice(8, d);
    io.attachPasid(8, 3, d);
    expect(io.translate({ rid: 8, addr: 0x1000n })).toBe(G + 0x1000);
    expect(io.translate({ rid: 8, pasid: 3, addr: 0x1000n })).toBe(G + 0x1000);
    io.detachDevice(8);
    io.detachPasid(8, 3);
    expect(io.translate({ rid: 8, addr: 0x1000n })).toBe(-1);
    expect(io.translate({ rid: 8, pasid: 3, addr: 0x1000n })).toBe(-1);
    expect(io.stats().invalidations).toMatchObject({ pasidCachePasid: 2, iotlbDomain: 2, devTlb: 2 });
  });

  it('rejects malformed translation requests with EINVAL', () => {
    const io = iommu();
    io.addDevice({ rid: 8 });
    expect(() => io.translate({ rid: 8, addr: 0x1000n, exec: true })).toThrow(code('EINVAL'));
    expect(() => io.translate({ rid: 8, pasid: 1, addr: 0x1000n, exec: true, write: true })).toThrow(code('EINVAL'));
    expect(() => io.translate({ rid: 8, pasid: 1 << 20, addr: 0x1000n })).toThrow(code('EINVAL'));
    expect(() => io.translate({ rid: 8, pasid: 1, addr: 1n << 64n })).toThrow(code('EINVAL'));
  });
});
