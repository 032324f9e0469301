/**
 * IOAS objects and their IOVA rules, with the errno cases of Linux's
 * tools/testing/selftests/iommu/iommufd.c that apply (ioas_alloc / ioas_destroy / area /
 * area_auto / copy_area / iova_ranges / access-free allow_iovas fixtures).
 */
import { describe, it, expect } from 'vitest';
import { ObjectTable } from '../../../../host/iommufd/object-table.js';
import { Ioas, MSI_WINDOW } from '../../../../host/iommufd/ioas.js';
import { IOMMU_IOAS_MAP, IOMMUFD_ATTACH } from '../../../../vhost/messages/iommufd.js';
import { FIXED_RW, RW, bind, errno, makeWorld, ramIoas } from './fixture.js';

const U64_MAX = 0xffff_ffff_ffff_ffffn;

describe('iommufd object table', () => {
  it('gives IDs from 1 and refuses unknown IDs and used objects', () => {
    const w = makeWorld();
    const a = w.fd.ioasAlloc(0);
    const b = w.fd.ioasAlloc(0);
    expect([a, b]).toEqual([1, 2]);
    w.fd.destroy(a);
    expect(errno(() => w.fd.destroy(a))).toBe('ENOENT');
    expect(errno(() => w.fd.destroy(0))).toBe('ENOENT');
    expect(errno(() => w.fd.destroy(0x7fff_ffff))).toBe('ENOENT');
  });

  it('IOAS_ALLOC with unknown flags is EOPNOTSUPP', () => {
    expect(errno(() => makeWorld().fd.ioasAlloc(1))).toBe('EOPNOTSUPP');
  });

  it('an object of another kind is ENOENT where one kind is expected', () => {
    const w = makeWorld();
    const dev = bind(w);
    expect(errno(() => w.fd.ioasMap({ ioas_id: dev, flags: FIXED_RW, user_va: 0n, length: 4096n, iova: 0n }))).toBe('ENOENT');
    expect(errno(() => w.fd.faultRead(dev, 1))).toBe('ENOENT');
  });

  it('is capped (ENOSPC)', () => {
    const t = new ObjectTable(2);
    t.add(new Ioas(t.reserveId()));
    t.add(new Ioas(t.reserveId()));
    expect(errno(() => t.reserveId())).toBe('ENOSPC');
  });

  it('a device is not destroyed by DESTROY (EBUSY) but by unbind; unbind while attached is EBUSY', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = ramIoas(w);
    expect(errno(() => w.fd.destroy(dev))).toBe('EBUSY');
    w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: ioas });
    expect(errno(() => w.fd.deviceUnbind(dev))).toBe('EBUSY');
    expect(errno(() => w.fd.destroy(ioas))).toBe('EBUSY');
    w.fd.deviceDetach({ dev_id: dev, flags: 0, pasid: 0, pt_id: 0 });
    w.fd.deviceUnbind(dev);
    w.fd.destroy(ioas);
    expect(w.freed).toEqual([0x100]);
    expect(errno(() => w.fd.deviceUnbind(dev))).toBe('ENOENT');
  });

  it('binding the same RID twice is EEXIST; unknown capability bits EOPNOTSUPP; PRI without ATS EINVAL', () => {
    const w = makeWorld();
    bind(w);
    expect(errno(() => bind(w))).toBe('EEXIST');
    expect(errno(() => w.fd.deviceBind({ rid: 0x20, pasid_width: 20, caps: 0x80 }))).toBe('EOPNOTSUPP');
    expect(errno(() => w.fd.deviceBind({ rid: 0x20, pasid_width: 20, caps: 2 }))).toBe('EINVAL');
    expect(errno(() => w.fd.deviceBind({ rid: 0x20, pasid_width: 21, caps: 0 }))).toBe('EINVAL');
  });
});

describe('IOAS_MAP / UNMAP', () => {
  it('maps at a fixed IOVA and refuses overlaps (EEXIST), bad alignment or length (EINVAL), wrap (EOVERFLOW)', () => {
    const w = makeWorld();
    const ioas = w.fd.ioasAlloc(0);
    const map = (iova: bigint, length: bigint, flags = FIXED_RW, va = 0n) => w.fd.ioasMap({ ioas_id: ioas, flags, user_va: va, length, iova });
    expect(map(0x10_0000n, 0x2000n)).toBe(0x10_0000n);
    expect(errno(() => map(0x10_1000n, 0x1000n))).toBe('EEXIST');
    expect(errno(() => map(0x20_0800n, 0x1000n))).toBe('EINVAL');
    expect(errno(() => map(0x20_0000n, 0x800n))).toBe('EINVAL');
    expect(errno(() => map(0x20_0000n, 0n))).toBe('EINVAL');
    expect(errno(() => map(0x20_0000n, 0x1000n, FIXED_RW, 0x800n))).toBe('EINVAL');
    expect(errno(() => map(U64_MAX - 0xfffn, 0x2000n))).toBe('EOVERFLOW');
    expect(errno(() => map(0x20_0000n, 0x1000n, FIXED_RW | 0x8))).toBe('EOPNOTSUPP');
    expect(errno(() => map(0x20_0000n, 0x1000n, IOMMU_IOAS_MAP.FIXED_IOVA))).toBe('EINVAL');
    // beyond the 48-bit IOVA space: reserved
    expect(errno(() => map(1n << 48n, 0x1000n))).toBe('EINVAL');
    // memory outside the VM's memory table
    expect(errno(() => map(0x20_0000n, 0x1000n, FIXED_RW, 0x4000_0000n))).toBe('EFAULT');
  });

  it('picks the lowest free IOVA without FIXED_IOVA, inside the allowed ranges, ENOSPC when none fits', () => {
    const w = makeWorld();
    const ioas = w.fd.ioasAlloc(0);
    const auto = (length: bigint) => w.fd.ioasMap({ ioas_id: ioas, flags: RW, user_va: 0n, length, iova: 0xdead_0000n });
    expect(auto(0x1000n)).toBe(0n);
    expect(auto(0x2000n)).toBe(0x1000n);
    w.fd.ioasAllowIovas(ioas, [{ start: 0x100_0000n, last: 0x100_2fffn }]);
    expect(auto(0x2000n)).toBe(0x100_0000n);
    expect(errno(() => auto(0x2000n))).toBe('ENOSPC');
  });

  it('unmaps whole areas only (ENOENT for a partial area or an empty range); 0 / U64_MAX unmaps everything', () => {
    const w = makeWorld();
    const ioas = w.fd.ioasAlloc(0);
    const map = (iova: bigint, length: bigint) => w.fd.ioasMap({ ioas_id: ioas, flags: FIXED_RW, user_va: 0n, length, iova });
    const unmap = (iova: bigint, length: bigint) => w.fd.ioasUnmap({ ioas_id: ioas, iova, length });
    map(0x10_0000n, 0x4000n);
    map(0x20_0000n, 0x1000n);
    expect(errno(() => unmap(0x10_0000n, 0x2000n))).toBe('ENOENT');
    expect(errno(() => unmap(0x30_0000n, 0x1000n))).toBe('ENOENT');
    expect(errno(() => unmap(0x10_0000n, 0n))).toBe('EINVAL');
    expect(errno(() => unmap(U64_MAX - 0xfffn, 0x2000n))).toBe('EOVERFLOW');
    expect(unmap(0x10_0000n, 0x10_0000n)).toBe(0x4000n);
    expect(unmap(0n, U64_MAX)).toBe(0x1000n);
    expect(unmap(0n, U64_MAX)).toBe(0n);
  });

  it('mirrors the IOAS into a paging HWPT: DMA through an attached RID sees map and unmap', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = w.fd.ioasAlloc(0);
    w.fd.ioasMap({ ioas_id: ioas, flags: FIXED_RW, user_va: 0x5000n, length: 0x1000n, iova: 0x10_0000n });
    const hwpt = w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: ioas });
    const hostRid = 0x100;
    w.fx.ram.write(0x5000, new Uint8Array([1, 2, 3, 4]));
    expect(w.fx.iommu.dmaRead({ rid: hostRid, addr: 0x10_0000n }, 4).data).toEqual(new Uint8Array([1, 2, 3, 4]));
    // a later map reaches the existing HWPT too
    w.fd.ioasMap({ ioas_id: ioas, flags: FIXED_RW, user_va: 0x6000n, length: 0x1000n, iova: 0x20_0000n });
    expect(w.fx.iommu.dmaRead({ rid: hostRid, addr: 0x20_0000n }, 1).ok).toBe(true);
    w.fd.ioasUnmap({ ioas_id: ioas, iova: 0x10_0000n, length: 0x1000n });
    expect(w.fx.iommu.dmaRead({ rid: hostRid, addr: 0x10_0000n }, 4).ok).toBe(false);
    expect(w.fd.snapshot().hwpts).toMatchObject([{ id: hwpt, kind: 'paging', ioas, auto: true, users: 1 }]);
  });
});

describe('IOAS_COPY', () => {
  it('copies mapped ranges into another IOAS; a hole in the source is ENOENT', () => {
    const w = makeWorld();
    const src = w.fd.ioasAlloc(0);
    const dst = w.fd.ioasAlloc(0);
    w.fd.ioasMap({ ioas_id: src, flags: FIXED_RW, user_va: 0x1000n, length: 0x2000n, iova: 0x10_0000n });
    w.fd.ioasMap({ ioas_id: src, flags: FIXED_RW, user_va: 0x8000n, length: 0x1000n, iova: 0x10_2000n });
    const copy = (srcIova: bigint, length: bigint, dstIova = 0x40_0000n, flags = FIXED_RW) =>
      w.fd.ioasCopy({ flags, dst_ioas_id: dst, src_ioas_id: src, length, dst_iova: dstIova, src_iova: srcIova });
    expect(copy(0x10_1000n, 0x2000n)).toBe(0x40_0000n);
    expect(w.fd.snapshot().ioas.find((i) => i.id === dst)).toMatchObject({ areas: 2, mappedBytes: 0x2000 });
    expect(errno(() => copy(0x10_2000n, 0x2000n, 0x50_0000n))).toBe('ENOENT');
    expect(errno(() => copy(0x10_0000n, 0x1000n))).toBe('EEXIST');
    expect(errno(() => copy(0x10_0000n, 0x1000n, 0x50_0000n, FIXED_RW | 0x10))).toBe('EOPNOTSUPP');
    expect(errno(() => w.fd.ioasCopy({ flags: FIXED_RW, dst_ioas_id: 99, src_ioas_id: src, length: 0x1000n, dst_iova: 0n, src_iova: 0x10_0000n }))).toBe('ENOENT');
  });
});

describe('IOAS_IOVA_RANGES and ALLOW_IOVAS', () => {
  it('reports the 48-bit space, minus the interrupt window while a device is attached', () => {
    const w = makeWorld();
    const ioas = w.fd.ioasAlloc(0);
    expect(w.fd.ioasIovaRanges(ioas)).toEqual({ alignment: 4096n, ranges: [{ start: 0n, last: (1n << 48n) - 1n }] });
    const dev = bind(w);
    w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: ioas });
    expect(w.fd.ioasIovaRanges(ioas).ranges).toEqual([
      { start: 0n, last: MSI_WINDOW.start - 1n },
      { start: MSI_WINDOW.last + 1n, last: (1n << 48n) - 1n },
    ]);
    expect(errno(() => w.fd.ioasMap({ ioas_id: ioas, flags: FIXED_RW, user_va: 0n, length: 0x1000n, iova: MSI_WINDOW.start }))).toBe('EINVAL');
    expect(errno(() => w.fd.ioasAllowIovas(ioas, [{ start: 0xfe00_0000n, last: 0xfeff_ffffn }]))).toBe('EADDRINUSE');
    w.fd.deviceDetach({ dev_id: dev, flags: 0, pasid: 0, pt_id: 0 });
    expect(w.fd.ioasIovaRanges(ioas).ranges).toHaveLength(1);
  });

  it('refuses malformed allowed ranges (EINVAL) and an attach whose reserved region is allowed (EADDRINUSE)', () => {
    const w = makeWorld();
    const ioas = w.fd.ioasAlloc(0);
    expect(errno(() => w.fd.ioasAllowIovas(ioas, [{ start: 0x2000n, last: 0x1000n }]))).toBe('EINVAL');
    expect(errno(() => w.fd.ioasAllowIovas(ioas, [{ start: 0n, last: 0x1fffn }, { start: 0x1000n, last: 0x2fffn }]))).toBe('EINVAL');
    expect(errno(() => w.fd.ioasAllowIovas(ioas, [{ start: 1n << 48n, last: (1n << 48n) + 0xfffn }]))).toBe('EADDRINUSE');
    w.fd.ioasAllowIovas(ioas, [{ start: 0n, last: 0xffff_ffffn }]);
    const dev = bind(w);
    expect(errno(() => w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: ioas }))).toBe('EADDRINUSE');
    expect(w.fd.snapshot().hwpts).toEqual([]);
    w.fd.ioasAllowIovas(ioas, []);
    w.fd.deviceAttach({ dev_id: dev, flags: IOMMUFD_ATTACH.PASID & 0, pasid: 0, pt_id: ioas });
  });
});
