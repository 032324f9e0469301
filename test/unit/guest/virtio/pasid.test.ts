/**
 * The PASID extension (docs/virtio-iommu.md §5): first-level tables per guest PASID bound on the
 * host with the guest PASID as SPID, invalidation, page requests and responses.
 */
import { describe, expect, it } from 'vitest';
import { DRIVER_FEATURES, type VirtioIommuDriver } from '../../../../guest/driver/virtio-iommu-driver.js';
import { GuestProcess } from '../../../../guest/driver/guest-process.js';
import {
  AttachTableReq, FaultFlag, FaultReason, InvalGran, InvalType, PageRespCode, REQ_READABLE_SIZE, ReqStatus, ReqType, VirtioIommuFeature,
} from '../../../../guest/virtio/index.js';
import { LeWriter } from '../../../../guest/virtio/state.js';
import type { VmSnapshot } from '../../../../src/api/types.js';
import { EP, EP2, probeDriver, rigPerTest, TWO_DEVICES, type VirtioRig } from './helpers.js';

const GVA = 0x7f00_0000_0000n;
const TEXT = new TextEncoder().encode('through pasid 5');

let rig: VirtioRig;
let drv: VirtioIommuDriver;
let proc: GuestProcess;

rigPerTest({ devices: TWO_DEVICES }, async (r) => {
  rig = r;
  drv = await probeDriver(r);
  expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
  proc = await GuestProcess.create(r.vm, r.alloc);
  const [gpa] = await proc.mapNew(GVA, 4096);
  await r.vm.memwrite(gpa!, TEXT);
});

async function vmSnap(): Promise<VmSnapshot> {
  return (await rig.host.snapshot()).vms.find((v) => v.name === rig.vm.name)!;
}

const bind = (over: Partial<Parameters<VirtioIommuDriver['attachTable']>[0]> = {}) =>
  drv.attachTable({ domain: 1, endpoint: EP, pasid: 5, pgd: proc.pgd, addrWidth: 48, ...over });

const dmaRead = (addr: bigint, pasid = 5, bdf = '00:03.0') => rig.vm.dma(bdf, { pasid, addr, length: TEXT.length });

describe('ATTACH_TABLE', () => {
  it('binds the guest table for guest PASID 5 to a host PASID whose SPID is 5', async () => {
    expect(await bind()).toBe(ReqStatus.OK);
    const s = await vmSnap();
    expect(s.pasids).toHaveLength(1);
    const p = s.pasids[0]!;
    expect(p.gpasid).toBe(5);
    expect(p.state).toBe('active');
    expect(p.bindings).toEqual([{ bdf: '00:03.0', pgtt: 'nested', flptr: `0x${proc.pgd.toString(16)}` }]);
    expect(rig.model.devicePasid(EP, 5)).toBe(p.hpasid);
    const r = await dmaRead(GVA);
    expect(r.ok && Buffer.from(r.data!).toString()).toBe('through pasid 5');
  });

  it('reuses the host PASID when the same guest PASID is bound on a second endpoint', async () => {
    expect(await drv.attach(1, EP2)).toBe(ReqStatus.OK);
    expect(await bind()).toBe(ReqStatus.OK);
    expect(await bind({ endpoint: EP2 })).toBe(ReqStatus.OK);
    const s = await vmSnap();
    expect(s.pasids).toHaveLength(1);
    expect(s.pasids[0]!.bindings.map((b) => b.bdf).sort()).toEqual(['00:03.0', '00:04.0']);
    expect((await dmaRead(GVA, 5, '00:04.0')).ok).toBe(true);
  });

  it.each([
    ['an unsupported format', { format: 1 }, ReqStatus.UNSUPP],
    ['an unknown flag', { flags: 1 << 4 }, ReqStatus.INVAL],
    ['PASID 0', { pasid: 0 }, ReqStatus.INVAL],
    ['a PASID wider than 20 bits', { pasid: 1 << 20 }, ReqStatus.RANGE],
    ['an endpoint that does not exist', { endpoint: 0x99 }, ReqStatus.NOENT],
    ['a domain that does not exist', { domain: 4 }, ReqStatus.NOENT],
    ['an endpoint not attached to the domain', { endpoint: EP2 }, ReqStatus.INVAL],
    ['an address width that is not 48 or 57', { addrWidth: 39 }, ReqStatus.INVAL],
    ['unknown fl_flags', { flFlags: 1n << 7n }, ReqStatus.INVAL],
    ['a pgd that is not page aligned', { pgd: 0x10_0010n }, ReqStatus.RANGE],
  ])('rejects %s and binds nothing', async (_what, over, status) => {
    expect(await bind(over)).toBe(status);
    expect((await vmSnap()).pasids).toEqual([]);
    expect(rig.model.devicePasid(EP, 5)).toBe(5);
  });

  it('rejects non-zero reserved bytes with INVAL', async () => {
    const req = new LeWriter(REQ_READABLE_SIZE[ReqType.ATTACH_TABLE]!).u8(0, ReqType.ATTACH_TABLE).u32(AttachTableReq.DOMAIN, 1)
      .u32(AttachTableReq.ENDPOINT, EP).u16(AttachTableReq.FORMAT, 4).u32(AttachTableReq.PASID, 5).u64(AttachTableReq.PGD, proc.pgd)
      .u32(AttachTableReq.ADDR_WIDTH, 48).u8(AttachTableReq.RSVD2 + 7, 1);
    expect((await drv.submit(req.bytes)).status).toBe(ReqStatus.INVAL);
    expect((await vmSnap()).pasids).toEqual([]);
  });

  it('is an unknown request (used length 0) without VIRTIO_IOMMU_F_ATTACH_TABLE', async () => {
    await drv.remove();
    drv = await probeDriver(rig, { features: DRIVER_FEATURES & ~(1n << VirtioIommuFeature.ATTACH_TABLE) });
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    const req = new LeWriter(REQ_READABLE_SIZE[ReqType.ATTACH_TABLE]!).u8(0, ReqType.ATTACH_TABLE);
    expect((await drv.submit(req.bytes)).usedLen).toBe(0);
    expect((await drv.probeEndpoint(EP)).properties.map((p) => p.type)).toEqual([1]);
  });
});

describe('DETACH_TABLE and DETACH', () => {
  it('unbinds and frees the host PASID; DMA with the PASID no longer translates', async () => {
    expect(await bind()).toBe(ReqStatus.OK);
    expect(await drv.detachTable(1, EP, 5)).toBe(ReqStatus.OK);
    const s = await vmSnap();
    expect(s.pasids).toEqual([]);
    expect(s.set.used).toBe(0);
    expect(rig.model.devicePasid(EP, 5)).toBe(5);
  });

  it('gives INVAL for a PASID without a table, NOENT for an unknown endpoint', async () => {
    expect(await drv.detachTable(1, EP, 6)).toBe(ReqStatus.INVAL);
    expect(await drv.detachTable(1, 0x99, 5)).toBe(ReqStatus.NOENT);
  });

  it('DETACH of the endpoint from its domain unbinds its tables', async () => {
    expect(await bind()).toBe(ReqStatus.OK);
    expect(await drv.detach(1, EP)).toBe(ReqStatus.OK);
    expect((await vmSnap()).pasids).toEqual([]);
  });
});

describe('INVALIDATE', () => {
  it('a stale IOTLB entry keeps translating until the guest invalidates the address; then the fault carries guest PASID 5', async () => {
    expect(await bind()).toBe(ReqStatus.OK);
    expect((await dmaRead(GVA)).ok).toBe(true);
    await proc.unmap(GVA);
    expect((await dmaRead(GVA)).ok).toBe(true); // cached translation
    expect(await drv.invalidate({ granularity: InvalGran.VA, type: InvalType.IOTLB | InvalType.DEV_IOTLB, domain: 1, pasid: 5, virtStart: GVA, nrPages: 1n })).toBe(ReqStatus.OK);
    expect((await dmaRead(GVA)).ok).toBe(false);
    const ev = await drv.waitForEvent();
    expect(ev).toMatchObject({ kind: 'fault', reason: FaultReason.MAPPING, endpoint: EP, pasid: 5, address: GVA });
    expect(ev.flags & FaultFlag.PASID).toBe(FaultFlag.PASID);
  });

  it('by PASID and by domain', async () => {
    expect(await bind()).toBe(ReqStatus.OK);
    expect(await drv.invalidate({ granularity: InvalGran.PASID, type: InvalType.IOTLB | InvalType.PASID, domain: 1, pasid: 5 })).toBe(ReqStatus.OK);
    expect(await drv.invalidate({ granularity: InvalGran.DOMAIN, type: InvalType.IOTLB | InvalType.DEV_IOTLB | InvalType.PASID, domain: 1 })).toBe(ReqStatus.OK);
    expect((await dmaRead(GVA)).ok).toBe(true);
  });

  it.each([
    ['an unknown granularity', { granularity: 3 }, ReqStatus.INVAL],
    ['no cache type', { type: 0 }, ReqStatus.INVAL],
    ['an unknown type bit', { type: 1 << 3 }, ReqStatus.INVAL],
    ['PASID granularity without INVAL_F_PASID', { flags: 0 }, ReqStatus.INVAL],
    ['the PASID cache by address', { granularity: InvalGran.VA, type: InvalType.PASID, virtStart: GVA, nrPages: 1n }, ReqStatus.INVAL],
    ['zero pages', { granularity: InvalGran.VA, virtStart: GVA, nrPages: 0n }, ReqStatus.INVAL],
    ['a domain that does not exist', { domain: 3 }, ReqStatus.NOENT],
    ['a domain outside domain_range', { domain: 0 }, ReqStatus.RANGE],
  ])('rejects %s', async (_what, over, status) => {
    expect(await drv.invalidate({ granularity: InvalGran.PASID, type: InvalType.IOTLB, domain: 1, pasid: 5, ...over })).toBe(status);
  });
});

describe('page requests', () => {
  const MISSING = GVA + 0x1000n;

  it('a PRI-enabled table turns a translation fault into a page request; PAGE_RESP lets the retry succeed', async () => {
    expect(await bind({ pri: true })).toBe(ReqStatus.OK);
    const pending = rig.vm.dma('00:03.0', { pasid: 5, addr: MISSING, data: new Uint8Array([9, 9]) });
    const ev = await drv.waitForEvent();
    expect(ev).toMatchObject({ kind: 'page-request', endpoint: EP, pasid: 5, address: MISSING });
    if (ev.kind !== 'page-request') throw new Error('not a page request');
    expect(ev.flags & (FaultFlag.WRITE | FaultFlag.LAST | FaultFlag.PASID)).toBe(FaultFlag.WRITE | FaultFlag.LAST | FaultFlag.PASID);
    // the guest "faults the page in", then answers the group
    const [gpa] = await proc.mapNew(MISSING, 4096);
    expect(await drv.pageResponse({ endpoint: EP, pasid: 5, grpid: ev.grpid + 1, code: PageRespCode.SUCCESS })).toBe(ReqStatus.INVAL);
    expect(await drv.pageResponse({ endpoint: EP, pasid: 5, grpid: ev.grpid, code: PageRespCode.SUCCESS })).toBe(ReqStatus.OK);
    expect(await pending).toEqual({ ok: true });
    expect([...(await rig.vm.memread(gpa!, 2))]).toEqual([9, 9]);
    // the group is answered: a second response is INVAL
    expect(await drv.pageResponse({ endpoint: EP, pasid: 5, grpid: ev.grpid, code: PageRespCode.SUCCESS })).toBe(ReqStatus.INVAL);
  });

  it('an INVALID response fails the access', async () => {
    expect(await bind({ pri: true })).toBe(ReqStatus.OK);
    const pending = dmaRead(MISSING);
    const ev = await drv.waitForEvent((e) => e.kind === 'page-request');
    if (ev.kind !== 'page-request') throw new Error('not a page request');
    expect(await drv.pageResponse({ endpoint: EP, pasid: 5, grpid: ev.grpid, code: PageRespCode.INVALID })).toBe(ReqStatus.OK);
    expect((await pending).ok).toBe(false);
  });

  it('without PRI the access faults and the fault is reported', async () => {
    expect(await bind()).toBe(ReqStatus.OK);
    expect((await dmaRead(MISSING)).ok).toBe(false);
    expect(await drv.waitForEvent()).toMatchObject({ kind: 'fault', reason: FaultReason.MAPPING, pasid: 5, address: MISSING });
  });

  it('PAGE_RESP checks its fields', async () => {
    expect(await drv.pageResponse({ endpoint: 0x99, grpid: 0, code: 0 })).toBe(ReqStatus.NOENT);
    expect(await drv.pageResponse({ endpoint: EP, grpid: 0x200, code: 0 })).toBe(ReqStatus.INVAL);
    expect(await drv.pageResponse({ endpoint: EP, grpid: 0, code: 3 })).toBe(ReqStatus.INVAL);
    expect(await drv.pageResponse({ endpoint: EP, pasid: 8, grpid: 0, code: 0 })).toBe(ReqStatus.INVAL);
  });
});

describe('trace', () => {
  it('emits mmio, descriptor, bind, invalidate, page-request and fault events for the VM', async () => {
    const kinds = new Set<string>();
    const off = rig.vm.trace.on((e) => {
      if (e.side === 'guest' && e.vm === rig.vm.name) kinds.add(e.kind);
    });
    expect((await rig.vm.dma('00:03.0', { addr: 0x5000_0000n, length: 4 })).ok).toBe(false);
    await drv.waitForEvent((e) => e.kind === 'fault');
    expect(await bind({ pri: true })).toBe(ReqStatus.OK);
    expect(await drv.invalidate({ granularity: InvalGran.PASID, type: InvalType.IOTLB, domain: 1, pasid: 5 })).toBe(ReqStatus.OK);
    const pending = dmaRead(GVA + 0x1000n);
    const ev = await drv.waitForEvent();
    if (ev.kind !== 'page-request') throw new Error('not a page request');
    expect(await drv.pageResponse({ endpoint: EP, pasid: 5, grpid: ev.grpid, code: PageRespCode.INVALID })).toBe(ReqStatus.OK);
    await pending;
    off();
    for (const k of ['mmio', 'descriptor', 'bind', 'invalidate', 'page-request', 'page-response', 'fault']) expect(kinds).toContain(k);
  });
});
