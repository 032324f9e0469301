/**
 * Fault handlers and page requests: a PRI device's page request reaches its handler, the
 * response completes it, and the device's retry then succeeds once the page is mapped.
 */
import { describe, expect, it } from 'vitest';
import { PageResponseCode, REQ_NO_REPORT, type IommuFaultEvent, type PageRequest } from '../../../../host/iommu/index.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const RID = 0x0028;
const PASID = 6;

const fixtures = new FixturePerTest();

function world(pri = true) {
  const fx = fixtures.make();
  const { iommu } = fx;
  const vm = iommu.allocDomain();
  iommu.map(vm, 0n, BigInt(G), 0x1000000n, { read: true, write: true });
  const fl = new FlBuilder(fx.ram, 4, 0x1000n);
  fl.map(0x5000_0000n, 0x400000n);
  iommu.addDevice({ rid: RID, pri, ats: true });
  iommu.bindPgtablePasid(RID, PASID, vm, { flptr: fl.root });
  return { iommu, fl, did: vm.did };
}

const code = (c: string) => expect.objectContaining({ code: c });

describe('page requests', () => {
  it('delivers a page request to the handler and resolves with its response; the retry succeeds', async () => {
    const { iommu, fl, did } = world();
    const events: IommuFaultEvent[] = [];
    iommu.registerFaultHandler(RID, (ev) => events.push(ev));
    const addr = 0x5000_1234n;
    // The device's ATS translation fails without a fault record; it then asks for the page.
    expect(iommu.translate({ rid: RID, pasid: PASID, addr, write: true, noReport: true })).toBe(-1);
    expect(events).toEqual([]);
    const done = iommu.pageRequest(RID, { pasid: PASID, addr, write: true });
    expect(events).toHaveLength(1);
    const req = (events[0] as { kind: 'page-request'; request: PageRequest }).request;
    expect(req).toMatchObject({ rid: RID, pasid: PASID, addr: 0x5000_1000n, write: true, read: false, lpig: true, prgi: 0 });
    // The "guest" maps the page, flushes, and answers.
    fl.map(0x5000_1000n, 0x401000n);
    iommu.invalidatePasidIotlbPages(did, PASID, 0x5000_1000n, 0);
    iommu.pageResponse(RID, PASID, req.prgi, PageResponseCode.SUCCESS);
    await expect(done).resolves.toBe(PageResponseCode.SUCCESS);
    expect(iommu.translateRaw(RID, PASID, 0x5000_1234, 1 | REQ_NO_REPORT)).toBe(G + 0x401234);
    expect(iommu.stats()).toMatchObject({ pageRequests: 1, pageResponses: 1 });
  });

  it('answers INVALID at once when the device has no handler', async () => {
    const { iommu } = world();
    await expect(iommu.pageRequest(RID, { pasid: PASID, addr: 0x5000_2000n })).resolves.toBe(PageResponseCode.INVALID);
  });

  it('refuses bad requests and responses with precise errnos', async () => {
    const { iommu } = world();
    iommu.registerFaultHandler(RID, () => {});
    expect(() => iommu.registerFaultHandler(RID, () => {})).toThrow(code('EBUSY'));
    const p = iommu.pageRequest(RID, { pasid: PASID, addr: 0x5000_2000n, prgi: 7 });
    expect(() => iommu.pageRequest(RID, { pasid: PASID, addr: 0x5000_3000n, prgi: 7 })).toThrow(code('EBUSY'));
    expect(() => iommu.pageRequest(RID, { pasid: PASID, addr: 0x5000_3000n, prgi: 512 })).toThrow(code('EINVAL'));
    expect(() => iommu.pageResponse(RID, PASID, 8, 0)).toThrow(code('ENOENT'));
    expect(() => iommu.pageResponse(RID, PASID, 7, 2)).toThrow(code('EINVAL'));
    expect(() => iommu.pageResponse(0x99, PASID, 7, 0)).toThrow(code('ENODEV'));
    iommu.pageResponse(RID, PASID, 7, PageResponseCode.FAILURE);
    await expect(p).resolves.toBe(PageResponseCode.FAILURE);
    expect(() => iommu.pageResponse(RID, PASID, 7, 0)).toThrow(code('ENOENT'));
    iommu.addDevice({ rid: 0x30 });
    expect(() => iommu.pageRequest(0x30, { pasid: 1, addr: 0n })).toThrow(code('EOPNOTSUPP'));
  });

  it('completes outstanding page requests with FAILURE when the device goes away', async () => {
    const { iommu } = world();
    iommu.registerFaultHandler(RID, () => {});
    const p = iommu.pageRequest(RID, { pasid: PASID, addr: 0x5000_2000n });
    iommu.unbindPgtablePasid(RID, PASID);
    iommu.removeDevice(RID);
    await expect(p).resolves.toBe(PageResponseCode.FAILURE);
  });

  it('a throwing handler does not break translation', () => {
    const { iommu } = world();
    iommu.registerFaultHandler(RID, () => {
      throw new Error('handler bug');
    });
    expect(iommu.translate({ rid: RID, pasid: PASID, addr: 0x6000_0000n })).toBe(-1);
    expect(iommu.translate({ rid: RID, pasid: PASID, addr: 0x5000_0000n })).toBe(G + 0x400000);
    iommu.unregisterFaultHandler(RID);
    expect(() => iommu.unregisterFaultHandler(RID)).toThrow(code('ENOENT'));
  });
});
