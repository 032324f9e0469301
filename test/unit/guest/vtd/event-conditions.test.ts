/**
 * Interrupt conditions of the invalidation completion and page request events, as a Linux
 * driver meets them (VT-d spec §11.4.9.5 IECTL.IP, §11.4.11.5 PECTL.IP): setting ICS.IWC or
 * PRS.PPR while it is already set is not a new interrupt condition; once software clears the
 * status bit, the next completion / request raises the event again.
 */
import { describe, expect, it } from 'vitest';
import { PageAllocator } from '../../../../guest/driver/page-allocator.js';
import { VtdDriver } from '../../../../guest/driver/vtd-driver.js';
import { InvDescType, encodeDescriptor } from '../../../../src/vtd/descriptors.js';
import { decode } from '../../../../src/vtd/layout.js';
import { CCMD_REG, DMAR, ICS, IOTLB_REG, PRS } from '../../../../src/vtd/registers.js';
import { PageRequestFlag } from '../../../../vhost/messages/backend.js';
import { IOMMU_PAGE_RESP } from '../../../../vhost/messages/page.js';
import { RID, makeModel } from './harness.js';

async function boot() {
  const m = makeModel();
  const alloc = new PageAllocator(m.h, { base: 0x10_0000n, size: 8 * 1024 * 1024 });
  const drv = await VtdDriver.init(m.h, alloc);
  return { ...m, drv };
}

describe('event interrupt conditions', () => {
  it('a wait with IF raises the completion event only when ICS.IWC was clear', async () => {
    const { h, model, drv } = await boot();
    await h.writel(DMAR.IECTL, 0);
    const waitIf = encodeDescriptor(InvDescType.WAIT, { IF: 1 }, 1);
    await drv.submit([waitIf]);
    expect(await h.readl(DMAR.ICS)).toBe(ICS.IWC);
    expect(model.counters().interrupts.invalidation).toBe(1);
    await drv.submit([waitIf]); // IWC still set: no new condition
    expect(model.counters().interrupts.invalidation).toBe(1);
    await h.writel(DMAR.ICS, ICS.IWC);
    await drv.submit([waitIf]);
    expect(model.counters().interrupts.invalidation).toBe(2);
  });

  it('a page request raises the page request event only when PRS.PPR was clear (Linux prq_event_thread clears PPR first)', async () => {
    const { h, model, drv } = await boot();
    await drv.attachDevice('00:03.0', { pri: true });
    await h.writel(DMAR.PECTL, 0);
    const request = (prgi: number) =>
      model.onBackendMessage({ name: 'PAGE_REQUEST', msg: { rid: RID, prgi, flags: PageRequestFlag.READ | PageRequestFlag.LPIG, pasid: 0, addr: BigInt(prgi) << 12n } });
    request(1);
    request(2);
    expect((await h.readl(DMAR.PRS)) & PRS.PPR).toBe(PRS.PPR);
    expect(model.counters().pageRequests.queued).toBe(2);
    expect(model.counters().interrupts['page-request']).toBe(1);
    await h.writel(DMAR.PRS, PRS.PPR);
    const seen = await drv.servicePageRequests(() => 'success');
    expect(seen.map((r) => r.prgi)).toEqual([1, 2]);
    request(3);
    expect(model.counters().interrupts['page-request']).toBe(2);
  });

  it('a full page request queue sets PRS.PRO and answers a last-in-group request SUCCESS itself; PRE clear answers INVALID', async () => {
    const { h, model, drv, host } = await boot();
    await drv.attachDevice('00:03.0', { pri: true });
    const request = (prgi: number, flags = PageRequestFlag.READ | PageRequestFlag.LPIG) =>
      model.onBackendMessage({ name: 'PAGE_REQUEST', msg: { rid: RID, prgi, flags, pasid: 0, addr: BigInt(prgi) << 12n } });
    // PQS 0: 4 KiB of 32-byte descriptors; full when advancing PQT would reach PQH (127 fit).
    for (let i = 0; i < 127; i++) request(i & 0x1ff);
    expect((await h.readl(DMAR.PRS)) & PRS.PRO).toBe(0);
    const responses = () => host.calls.filter((c) => c.name === 'PAGE_RESPONSE').map((c) => (c.payload as { code: number; grpid: number }));
    request(300, PageRequestFlag.READ); // not last in group: dropped, no response
    request(301);
    expect((await h.readl(DMAR.PRS)) & PRS.PRO).toBe(PRS.PRO);
    expect(model.counters().pageRequests).toMatchObject({ queued: 127, overflow: 2 });
    await Promise.resolve();
    expect(responses()).toEqual([expect.objectContaining({ grpid: 301, code: IOMMU_PAGE_RESP.SUCCESS })]);
    // Software drains the queue and clears PRO (Linux prq_event_thread); requests are queued again.
    await drv.servicePageRequests(() => 'success');
    expect((await h.readl(DMAR.PRS)) & PRS.PRO).toBe(0);
    request(302);
    expect(model.counters().pageRequests.queued).toBe(128);
    // A device whose context entry has PRE clear: the IOMMU answers INVALID itself.
    await drv.attachDevice('00:04.0');
    model.onBackendMessage({ name: 'PAGE_REQUEST', msg: { rid: 0x20, prgi: 5, flags: PageRequestFlag.READ | PageRequestFlag.LPIG, pasid: 0, addr: 0x5000n } });
    await Promise.resolve();
    expect(responses().at(-1)).toMatchObject({ grpid: 5, code: IOMMU_PAGE_RESP.INVALID });
  });

  it('register-based invalidations report the granularity done and clear ICC / IVT', async () => {
    const { h } = makeModel();
    // Linux __iommu_flush_context: CCMD = ICC | CIRG, poll until ICC clears; CAIG says what was done.
    for (const [cirg, caig] of [[1n, 1n], [2n, 2n], [3n, 3n], [0n, 0n]] as const) {
      await h.writeq(DMAR.CCMD, (1n << 63n) | (cirg << 61n) | (BigInt(RID) << 16n) | 1n);
      const f = decode(CCMD_REG, [await h.readq(DMAR.CCMD)]).fields;
      expect({ icc: f.ICC, caig: f.CAIG }).toEqual({ icc: 0n, caig });
    }
    // Linux __iommu_flush_iotlb: IVA then IOTLB_REG = IVT | IIRG | DID, poll until IVT clears; IAIG.
    for (const [iirg, iaig] of [[1n, 1n], [2n, 2n], [3n, 3n], [0n, 0n]] as const) {
      await h.writeq(DMAR.IVA, 0x4000n);
      await h.writeq(DMAR.IOTLB, (1n << 63n) | (iirg << 60n) | (1n << 32n));
      const f = decode(IOTLB_REG, [await h.readq(DMAR.IOTLB)]).fields;
      expect({ ivt: f.IVT, iaig: f.IAIG }).toEqual({ ivt: 0n, iaig });
    }
  });
});
