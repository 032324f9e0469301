/**
 * DMA through the IOMMU into host memory: reads, writes and copies spanning pages and large-page
 * boundaries over scattered mappings; a fault stops the job at the first faulting address with
 * nothing moved past it.
 */
import { describe, expect, it } from 'vitest';
import { FileBacking } from '../../../../src/memory/backing.js';
import { DMA_UNBACKED_HPA, type HostIommu } from '../../../../host/iommu/index.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const RID = 0x0020;
const PASID = 4;

const fixtures = new FixturePerTest();

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

/**
 * GVA 0x1000_0000: 4 KiB pages mapped to GPAs in reverse order (0x40f000, 0x40e000, …), then a
 * 2 MiB page at GVA 0x1020_0000 → GPA 0x600000. GPA → HPA: G + GPA (2 MiB SL leaves).
 */
function world(): { iommu: HostIommu; fl: FlBuilder } {
  const fx = fixtures.make();
  const { iommu } = fx;
  const vm = iommu.allocDomain();
  iommu.map(vm, 0n, BigInt(G), 0x1000000n, { read: true, write: true });
  const fl = new FlBuilder(fx.ram, 4, 0x1000n);
  for (let i = 0; i < 16; i++) fl.map(0x1000_0000n + BigInt(i) * 4096n, 0x40f000n - BigInt(i) * 4096n);
  fl.map(0x1020_0000n, 0x600000n, '2M');
  iommu.addDevice({ rid: RID });
  iommu.bindPgtablePasid(RID, PASID, vm, { flptr: fl.root });
  return { iommu, fl };
}

describe('DMA read and write', () => {
  it('writes and reads back across scattered 4 KiB pages', () => {
    const { iommu } = world();
    const data = pattern(3 * 4096 + 100, 1);
    expect(iommu.dmaWrite({ rid: RID, pasid: PASID, addr: 0x1000_0f00n }, data)).toEqual({ ok: true, done: data.length });
    // The first 256 bytes went to the end of GPA 0x40f000, the next 4 KiB to GPA 0x40e000.
    expect(fixtures.current.ram.buffer.subarray(0x40ff00, 0x410000)).toEqual(Buffer.from(data.subarray(0, 256)));
    expect(fixtures.current.ram.buffer.subarray(0x40e000, 0x40f000)).toEqual(Buffer.from(data.subarray(256, 256 + 4096)));
    const r = iommu.dmaRead({ rid: RID, pasid: PASID, addr: 0x1000_0f00n }, data.length);
    expect(r.ok).toBe(true);
    expect(r.data).toEqual(data);
  });

  it('crosses from 4 KiB pages into a 2 MiB page and within it', () => {
    const { iommu, fl } = world();
    fl.map(0x101f_f000n, 0x500000n); // the 4 KiB page just below the 2 MiB page
    const data = pattern(0x3000, 9);
    expect(iommu.dmaWrite({ rid: RID, pasid: PASID, addr: 0x101f_f800n }, data).ok).toBe(true);
    expect(fixtures.current.ram.buffer.subarray(0x500800, 0x501000)).toEqual(Buffer.from(data.subarray(0, 0x800)));
    expect(fixtures.current.ram.buffer.subarray(0x600000, 0x602800)).toEqual(Buffer.from(data.subarray(0x800)));
  });

  it('stops a write at the first faulting address, writing nothing past it', () => {
    const { iommu } = world();
    const data = pattern(0x3000, 3);
    // GVA 0x1000_f000 is the last mapped 4 KiB page; 0x1001_0000 is not mapped.
    const r = iommu.dmaWrite({ rid: RID, pasid: PASID, addr: 0x1000_f800n }, data);
    expect(r).toMatchObject({ ok: false, done: 0x800, fault: { reason: 0x71, addr: 0x1001_0000n, pasid: PASID, write: true } });
    expect(fixtures.current.ram.buffer.subarray(0x400800, 0x401000)).toEqual(Buffer.from(data.subarray(0, 0x800)));
    const r2 = iommu.dmaRead({ rid: RID, pasid: PASID, addr: 0x1000_f000n }, 0x2000);
    expect(r2).toMatchObject({ ok: false, done: 0x1000 });
    expect(r2.data.length).toBe(0x1000);
  });

  it('reports a translated HPA that no memory backs (reason DMA_UNBACKED_HPA)', () => {
    const { iommu, fl } = world();
    const vm = iommu.domain(iommu.device(RID).pasidAttachments.get(PASID)!.domain.did);
    iommu.map(vm, 0x1000000n, 0x30_0000_0000n, 0x1000n, { read: true, write: true });
    fl.map(0x2000_0000n, 0x1000000n);
    const r = iommu.dmaRead({ rid: RID, pasid: PASID, addr: 0x2000_0010n }, 16);
    expect(r).toMatchObject({ ok: false, done: 0, fault: { reason: DMA_UNBACKED_HPA, addr: 0x2000_0010n, hpa: 0x30_0000_0010n } });
    // The record names the request that hit it: its requester, PASID and direction.
    const w = iommu.dmaWrite({ rid: RID, pasid: PASID, addr: 0x2000_0020n }, new Uint8Array(8));
    expect(w).toMatchObject({ ok: false, done: 0, fault: { reason: DMA_UNBACKED_HPA, rid: RID, pasid: PASID, write: true, addr: 0x2000_0020n } });
  });

  it('refuses a request whose direction contradicts the call (EINVAL), moving nothing', () => {
    const { iommu } = world();
    const at = { rid: RID, pasid: PASID, addr: 0x1000_0000n };
    const before = Buffer.from(fixtures.current.ram.buffer.subarray(0x40f000, 0x410000));
    expect(() => iommu.dmaRead({ ...at, write: true }, 16)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => iommu.dmaWrite({ ...at, write: false }, new Uint8Array(16))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => iommu.dmaCopy({ ...at, write: true }, { ...at, addr: 0x1000_1000n }, 16)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => iommu.dmaCopy(at, { ...at, addr: 0x1000_1000n, write: false }, 16)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(fixtures.current.ram.buffer.subarray(0x40f000, 0x410000)).toEqual(before);
    expect(iommu.dmaWrite({ ...at, write: true }, new Uint8Array(16)).ok).toBe(true);
  });
});

describe('DMA copy', () => {
  it('copies between scattered pages and a 2 MiB page', () => {
    const { iommu } = world();
    const data = pattern(0x4000, 5);
    fixtures.current.ram.buffer.set(data, 0x600000 + 0x1234);
    const r = iommu.dmaCopy({ rid: RID, pasid: PASID, addr: 0x1020_1234n }, { rid: RID, pasid: PASID, addr: 0x1000_0100n }, 0x4000);
    expect(r).toEqual({ ok: true, done: 0x4000 });
    expect(iommu.dmaRead({ rid: RID, pasid: PASID, addr: 0x1000_0100n }, 0x4000).data).toEqual(data);
  });

  it('stops at a destination that is read-only, with the bytes before it copied', () => {
    const { iommu, fl } = world();
    fl.map(0x1000_2000n, 0x40d000n, '4K', { rw: false });
    const before = Buffer.from(fixtures.current.ram.buffer.subarray(0x40d000, 0x40e000));
    const r = iommu.dmaCopy({ rid: RID, pasid: PASID, addr: 0x1020_0000n }, { rid: RID, pasid: PASID, addr: 0x1000_1000n }, 0x2000);
    expect(r).toMatchObject({ ok: false, done: 0x1000, fault: { reason: 0x85, addr: 0x1000_2000n, write: true } });
    expect(fixtures.current.ram.buffer.subarray(0x40d000, 0x40e000)).toEqual(before);
  });

  it('moves data between an in-process region and a file-backed one', () => {
    const fx = fixtures.make();
    const { iommu, mem } = fx;
    const file = FileBacking.create(0x10000);
    try {
      mem.addRegion('file-ram', 0x8000_0000, file);
      const d = iommu.allocDomain();
      iommu.map(d, 0n, BigInt(G), 0x10000n, { read: true, write: true });
      iommu.map(d, 0x10000n, 0x8000_0000n, 0x10000n, { read: true, write: true });
      iommu.addDevice({ rid: RID });
      iommu.attachDevice(RID, d);
      const data = pattern(0x3000, 2);
      fx.ram.buffer.set(data, 0x800);
      expect(iommu.dmaCopy({ rid: RID, addr: 0x800n }, { rid: RID, addr: 0x10400n }, 0x3000)).toEqual({ ok: true, done: 0x3000 });
      const back = new Uint8Array(0x3000);
      file.read(0x400, back);
      expect(back).toEqual(data);
    } finally {
      file.close();
    }
  });
});
