import { describe, it, expect } from 'vitest';
import { makeModel, RID } from './harness.js';
import { DMAR, FSTS, GCMD, GSTS, ICS, IQEI } from '../../../../src/vtd/registers.js';
import { encodeDescriptor, INV_DESCRIPTORS, InvDescType, type InvDescTypeValue } from '../../../../src/vtd/descriptors.js';
import { wordsToBytes } from '../../../../src/vtd/layout.js';
import { PageAllocator } from '../../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../../guest/driver/guest-process.js';
import { VtdDriver, SVA_DID } from '../../../../guest/driver/vtd-driver.js';

const IQ = 0x20_0000;
const STATUS = 0x30_0000;

/** A model with QI enabled: 256-bit (dw = 1, 8 KiB, 256 entries) or 128-bit (4 KiB, 256 entries). */
async function queue(dw: 0 | 1) {
  const m = makeModel();
  await m.h.writeq(DMAR.IQA, BigInt(IQ) | (dw ? 0x801n : 0n));
  await m.h.writel(DMAR.GCMD, GCMD.QIE);
  const size = dw ? 32 : 16;
  let tail = 0;
  const put = (words: readonly bigint[]) => {
    m.ram.write(IQ + tail * size, wordsToBytes(words));
    return tail++;
  };
  const go = () => m.h.writeq(DMAR.IQT, BigInt(tail * size));
  const head = async () => Number(await m.h.readq(DMAR.IQH)) / size;
  const wait = (data: number) => encodeDescriptor(InvDescType.WAIT, { SW: 1, STATUS_DATA: data, STATUS_ADDR: BigInt(STATUS) >> 2n }, dw);
  return { ...m, put, go, head, wait, size };
}

/** A valid 256-bit descriptor of each type. */
function valid(type: InvDescTypeValue): bigint[] {
  switch (type) {
    case InvDescType.CC:
      return encodeDescriptor(type, { G: 1 }, 1);
    case InvDescType.IOTLB:
      return encodeDescriptor(type, { G: 1 }, 1);
    case InvDescType.WAIT:
      return encodeDescriptor(type, { IF: 1 }, 1);
    case InvDescType.PIOTLB:
      return encodeDescriptor(type, { G: 2, PASID: 5, DID: 2 }, 1);
    case InvDescType.PC:
      return encodeDescriptor(type, { G: 3 }, 1);
    default:
      return encodeDescriptor(type, {}, 1);
  }
}

/** Set the lowest reserved bit of the descriptor's 256-bit layout. */
function withReservedBit(type: InvDescTypeValue, words: bigint[]): bigint[] {
  const layout = INV_DESCRIPTORS[type].d256;
  const w = layout.reserved.findIndex((m) => m !== 0n);
  const mask = layout.reserved[w]!;
  const out = [...words];
  out[w] = out[w]! | (mask & -mask);
  return out;
}

describe('invalidation queue', () => {
  for (const type of Object.keys(INV_DESCRIPTORS).map(Number) as InvDescTypeValue[]) {
    it(`type 0x${type.toString(16)} with a reserved bit set stops the queue there with IQE; clearing IQE resumes`, async () => {
      const q = await queue(1);
      q.put(q.wait(1));
      const bad = q.put(withReservedBit(type, valid(type)));
      q.put(q.wait(2));
      await q.go();
      expect(q.ram.readU32(STATUS)).toBe(1); // the wait before the bad descriptor completed
      expect((await q.h.readl(DMAR.FSTS)) & FSTS.IQE).toBe(FSTS.IQE);
      expect(Number((await q.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.RSVD_FIELD_VIOLATION);
      expect(await q.head()).toBe(bad);
      // No fetch while IQE is set, even on a new IQT write.
      await q.go();
      expect(await q.head()).toBe(bad);
      expect(q.ram.readU32(STATUS)).toBe(1);
      // Software fixes the slot and clears IQE: fetching resumes from IQH.
      q.ram.write(IQ + bad * 32, wordsToBytes(valid(type)));
      await q.h.writel(DMAR.FSTS, FSTS.IQE);
      expect(await q.head()).toBe(3);
      expect(q.ram.readU32(STATUS)).toBe(2);
      expect((await q.h.readl(DMAR.FSTS)) & FSTS.IQE).toBe(0);
    });
  }

  it('refuses 256-bit-only types in a 128-bit queue (IQEI 5) and unknown types (IQEI 3)', async () => {
    const q = await queue(0);
    q.put(encodeDescriptor(InvDescType.IOTLB, { G: 1 }, 0));
    q.put([0x7n, 0n]); // PASID-cache type in a 128-bit queue
    await q.go();
    expect(await q.head()).toBe(1);
    expect(Number((await q.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.INVALID_DESCRIPTOR_WIDTH);
    q.ram.write(IQ + 16, wordsToBytes([0xan, 0n]));
    await q.h.writel(DMAR.FSTS, FSTS.IQE);
    expect(await q.head()).toBe(1);
    expect(Number((await q.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.INVALID_DESCRIPTOR_TYPE);
  });

  it('refuses IQT bit 4 with 256-bit descriptors and a tail beyond the queue, fetching nothing', async () => {
    const q = await queue(1);
    q.put(q.wait(9));
    await q.h.writeq(DMAR.IQT, 0x30n);
    expect(Number((await q.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.QUEUE_TAIL_MISALIGNED);
    expect(await q.head()).toBe(0);
    expect(q.ram.readU32(STATUS)).toBe(0);
    // Clearing IQE with the bad tail still in IQT fails again at once.
    await q.h.writel(DMAR.FSTS, FSTS.IQE);
    expect((await q.h.readl(DMAR.FSTS)) & FSTS.IQE).toBe(FSTS.IQE);
    await q.h.writeq(DMAR.IQA, BigInt(IQ) | 0x800n); // QS 0: 128 × 256-bit descriptors
    await q.h.writeq(DMAR.IQT, BigInt(200 * 32)); // latched, not fetched while IQE is set
    await q.h.writel(DMAR.FSTS, FSTS.IQE);
    expect(Number((await q.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.INVALID_TAIL_PTR);
    expect(q.ram.readU32(STATUS)).toBe(0);
  });

  it('wait with IF sets ICS.IWC and raises the completion event (held while masked)', async () => {
    const q = await queue(1);
    q.put(encodeDescriptor(InvDescType.WAIT, { IF: 1 }, 1));
    await q.go();
    expect(await q.h.readl(DMAR.ICS)).toBe(ICS.IWC);
    expect(await q.h.readl(DMAR.IECTL)).toBe(0xc000_0000); // IM and IP
    expect(q.model.counters().interrupts.invalidation).toBe(0);
    await q.h.writel(DMAR.IECTL, 0);
    expect(q.model.counters().interrupts.invalidation).toBe(1);
    await q.h.writel(DMAR.ICS, ICS.IWC);
    expect(await q.h.readl(DMAR.ICS)).toBe(0);
  });

  it('does nothing while QIE is clear, and IQH restarts at 0 when QIE is set', async () => {
    const m = makeModel();
    await m.h.writeq(DMAR.IQA, BigInt(IQ) | 0x801n);
    m.ram.write(IQ, wordsToBytes(encodeDescriptor(InvDescType.WAIT, { SW: 1, STATUS_DATA: 5, STATUS_ADDR: BigInt(STATUS) >> 2n }, 1)));
    await m.h.writeq(DMAR.IQT, 0x20n);
    expect(m.ram.readU32(STATUS)).toBe(0);
    expect((await m.h.readl(DMAR.GSTS)) & GSTS.QIES).toBe(0);
  });
});

describe('queue runs against the host', () => {
  async function boundDriver() {
    const m = makeModel();
    const alloc = new PageAllocator(m.h, { base: 0x40_0000n, size: 0x80_0000 });
    const drv = await VtdDriver.init(m.h, alloc);
    await drv.attachDevice('00:03.0', { pri: true });
    const proc = await GuestProcess.create(m.h, alloc);
    await proc.mapNew(0x1000_0000n, 0x1000);
    const pasid = await drv.bindProcess('00:03.0', proc);
    return { ...m, drv, proc, pasid, alloc };
  }

  it('forwards a first-level PASID entry as a nested bind and its flushes as one batched CACHE_INVALIDATE', async () => {
    const { host, drv, pasid, proc, model } = await boundDriver();
    const bind = host.calls.find((c) => c.name === 'BIND_GPASID')!.payload as Record<string, unknown>;
    expect(bind).toMatchObject({ rid: RID, gpgd: proc.pgd, hpasid: BigInt(pasid), gpasid: BigInt(pasid), addr_width: 48, flags: 1n, format: 1, version: 1, argsz: 72 });
    expect(model.shadow().find((e) => e.pasid === pasid)).toMatchObject({ did: SVA_DID, binding: { kind: 'nested', flptr: proc.pgd } });
    expect(host.calls.some((c) => c.name === 'DEVICE_CONFIG' && (c.payload as { flags: number }).flags === 3)).toBe(true);
    const before = host.calls.length;
    await drv.submit([0, 2, 4, 6].map((i) => encodeDescriptor(InvDescType.PIOTLB, { G: 3, DID: SVA_DID, PASID: pasid, ADDR: 0x1000_0n + BigInt(i), AM: 0 }, 1)));
    const sent = host.calls.slice(before);
    expect(sent.map((c) => c.name)).toEqual(['CACHE_INVALIDATE']);
    const entries = (sent[0]!.payload as { entries: { granularity: number; pasid: bigint; addr: bigint; nb_granules: bigint }[] }).entries;
    expect(entries.map((e) => [e.granularity, e.pasid, e.addr, e.nb_granules])).toEqual([0, 2, 4, 6].map((i) => [2, BigInt(pasid), (0x1000_0n + BigInt(i)) << 12n, 1n]));
  });

  it('forwards page-selective flushes of adjacent pages (one DID, PASID, IH) as the aligned block they cover', async () => {
    const { host, drv, pasid } = await boundDriver();
    const before = host.calls.length;
    await drv.submit([0, 1, 2, 3].map((i) => encodeDescriptor(InvDescType.PIOTLB, { G: 3, DID: SVA_DID, PASID: pasid, ADDR: 0x1000_0n + BigInt(i), AM: 0 }, 1)));
    const sent = host.calls.slice(before);
    expect(sent.map((c) => c.name)).toEqual(['CACHE_INVALIDATE']);
    const entries = (sent[0]!.payload as { entries: { granularity: number; flags: number; pasid: bigint; addr: bigint; granule_size: bigint; nb_granules: bigint }[] }).entries;
    expect(entries.map((e) => [e.granularity, e.flags, e.pasid, e.addr, e.granule_size, e.nb_granules])).toEqual([[2, 1, BigInt(pasid), 0x1000_0n << 12n, 4096n, 4n]]);
  });

  it('does not forward a PIOTLB flush whose DID does not match the bound entry', async () => {
    const { host, drv, pasid } = await boundDriver();
    const before = host.calls.length;
    await drv.submit([encodeDescriptor(InvDescType.PIOTLB, { G: 2, DID: SVA_DID + 1, PASID: pasid }, 1)]);
    expect(host.calls.slice(before)).toEqual([]);
  });

  it('unbinds on teardown and frees the PASID through VCMD', async () => {
    const { host, drv, pasid, model } = await boundDriver();
    await drv.unbind('00:03.0', pasid);
    const names = host.calls.map((c) => c.name);
    expect(names.slice(names.lastIndexOf('UNBIND_GPASID'))).toEqual(['UNBIND_GPASID', 'PASID_FREE']);
    expect(model.shadow().filter((e) => e.pasid !== null)).toEqual([]);
    expect(model.vcmd!.owned.size).toBe(0);
  });

  it('shadows a second-level PASID entry into a host domain and re-shadows on IOTLB invalidation', async () => {
    const { host, drv, model, ram, alloc } = await boundDriver();
    // Guest SL table: 4 levels, IOVA 0x200000 → GPA 0x500000 (R/W).
    const tables = [await alloc.alloc(), await alloc.alloc(), await alloc.alloc(), await alloc.alloc()];
    const iova = 0x20_0000n;
    const idx = (l: number) => Number((iova >> BigInt(12 + 9 * (l - 1))) & 511n);
    for (let l = 4; l > 1; l--) ram.writeU64(Number(tables[4 - l]!) + idx(l) * 8, tables[5 - l]! | 3n);
    ram.writeU64(Number(tables[3]!) + idx(1) * 8, 0x50_0000n | 3n);
    const words = [tables[0]! | (2n << 2n) | (2n << 6n) | 1n, 7n, 0n, 0n, 0n, 0n, 0n, 0n];
    await drv.writePasidEntry('00:03.0', 40, words);
    await drv.pasidFlushCaches(7, 40);
    const e = model.shadow().find((x) => x.pasid === 40)!;
    expect(e.binding).toMatchObject({ kind: 'sl', slptptr: tables[0] });
    expect(host.calls.filter((c) => c.name === 'DMA_MAP').at(-1)!.payload).toMatchObject({ iova, gpa: 0x50_0000n, size: 0x1000n, flags: 3 });
    expect(host.calls.filter((c) => c.name === 'ATTACH').at(-1)!.payload).toMatchObject({ rid: RID, pgtt: 2, pasid: 40 });
    // Remap to another page; the IOTLB page-selective flush re-shadows it.
    ram.writeU64(Number(tables[3]!) + idx(1) * 8, 0x60_0000n | 1n);
    await drv.submit([encodeDescriptor(InvDescType.IOTLB, { G: 3, DID: 7, ADDR: iova >> 12n, AM: 0 }, 1)]);
    const tail = host.calls.slice(-2).map((c) => [c.name, c.payload]);
    expect(tail[0]).toEqual(['DMA_UNMAP', { domain: (e.binding as { domain: number }).domain, iova, size: 0x1000n }]);
    expect(tail[1]![1]).toMatchObject({ iova, gpa: 0x60_0000n, flags: 1 });
  });
});
