/**
 * Every normative status rule of virtio 1.2 §5.13.6 "Device operations", driven through the virtio-mmio window
 * and guest RAM by the Linux-like driver, with the effect checked by device DMA on the host.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { VirtioIommuDriver, DRIVER_FEATURES } from '../../../../guest/driver/virtio-iommu-driver.js';
import {
  AttachReq, FaultReason, MapFlag, MSI_WINDOW_START, ProbeType, REQ_READABLE_SIZE, ReqStatus, ReqType, ResvMemSubtype, UnmapReq,
  VirtioIommuFeature, VirtioMmio, IommuConfig,
} from '../../../../guest/virtio/index.js';
import { LeWriter } from '../../../../guest/virtio/state.js';
import { EP, EP2, dataPage, hostDomains, probeDriver, rigPerTest, TWO_DEVICES, type VirtioRig } from './helpers.js';

const R = MapFlag.READ;
const RW = MapFlag.READ | MapFlag.WRITE;
const IOVA = 0x4000_0000n;
const PG = 0x1000n;

let rig: VirtioRig;
let drv: VirtioIommuDriver;

rigPerTest({ devices: TWO_DEVICES }, async (r) => {
  rig = r;
  drv = await probeDriver(r);
});

async function read(addr: bigint, bdf = '00:03.0') {
  return rig.vm.dma(bdf, { addr, length: 4 });
}

/** A mapping of `pages` pages at IOVA + first*4K, each page of data filled with its index. */
async function mapPages(domain: number, first: number, pages: number, flags = RW): Promise<number> {
  const phys = await dataPage(rig, first, first);
  for (let i = 1; i < pages; i++) await dataPage(rig, first + i, first + i);
  return drv.map(domain, IOVA + BigInt(first) * PG, IOVA + BigInt(first + pages) * PG - 1n, phys, flags);
}

describe('unparsable and unknown requests', () => {
  it('returns a request without a full head unwritten (used length 0)', async () => {
    const r = await drv.submit(new Uint8Array([ReqType.ATTACH, 0, 0]));
    expect(r.usedLen).toBe(0);
  });

  it('returns a request shorter than its type needs unwritten', async () => {
    const r = await drv.submit(new LeWriter(12).u8(0, ReqType.ATTACH).u32(4, 1).u32(8, EP).bytes);
    expect(r.usedLen).toBe(0);
    expect(r.out).toEqual(new Uint8Array(4));
    expect(await read(0x1000n)).toMatchObject({ ok: false }); // nothing was attached (bypass 0)
  });

  it('returns an unrecognized type unwritten with used length 0', async () => {
    const r = await drv.submit(new LeWriter(24).u8(0, 0x42).bytes);
    expect(r.usedLen).toBe(0);
    expect(r.status).toBeNull();
    expect(r.out).toEqual(new Uint8Array(4));
  });
});

describe('ATTACH', () => {
  it('gives INVAL for non-zero reserved bytes and attaches nothing', async () => {
    const req = new LeWriter(REQ_READABLE_SIZE[ReqType.ATTACH]!).u8(0, ReqType.ATTACH).u32(AttachReq.DOMAIN, 1).u32(AttachReq.ENDPOINT, EP).u8(AttachReq.RESERVED + 2, 1);
    expect((await drv.submit(req.bytes)).status).toBe(ReqStatus.INVAL);
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.NOENT);
  });

  it('gives INVAL for an unknown flag', async () => {
    expect(await drv.attach(1, EP, { flags: 1 << 1 })).toBe(ReqStatus.INVAL);
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.NOENT);
  });

  it('gives NOENT for an endpoint that does not exist', async () => {
    expect(await drv.attach(1, 0x99)).toBe(ReqStatus.NOENT);
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.NOENT);
  });

  it('gives RANGE for a domain outside domain_range', async () => {
    expect(drv.config.domainRange).toEqual({ start: 1, end: 0xffff });
    expect(await drv.attach(0, EP)).toBe(ReqStatus.RANGE);
    expect(await drv.attach(0x1_0000, EP)).toBe(ReqStatus.RANGE);
  });

  it('lets two endpoints share a domain (no UNSUPP needed)', async () => {
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await drv.attach(1, EP2)).toBe(ReqStatus.OK);
    expect(await mapPages(1, 0, 1)).toBe(ReqStatus.OK);
    expect(await read(IOVA, '00:03.0')).toMatchObject({ ok: true });
    expect(await read(IOVA, '00:04.0')).toMatchObject({ ok: true });
  });

  it('gives INVAL when the BYPASS flag does not match the existing domain', async () => {
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await drv.attach(1, EP2, { bypass: true })).toBe(ReqStatus.INVAL);
    expect(await drv.attach(2, EP, { bypass: true })).toBe(ReqStatus.OK);
    expect(await drv.attach(2, EP2)).toBe(ReqStatus.INVAL);
    expect(await read(0x1000n, '00:04.0')).toMatchObject({ ok: false }); // EP2 stayed unattached
  });

  it('moves an endpoint already in another domain (DETACH + ATTACH) and frees the emptied domain', async () => {
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await mapPages(1, 0, 1)).toBe(ReqStatus.OK);
    expect(await drv.attach(2, EP)).toBe(ReqStatus.OK);
    expect(await read(IOVA)).toMatchObject({ ok: false });
    // domain 1 ceased to exist with its last endpoint
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.NOENT);
    expect((await hostDomains(rig)).map((d) => d.id).sort()).toHaveLength(2); // GPA domain + domain 2's
  });
});

describe('DETACH', () => {
  it('gives NOENT for an endpoint that does not exist', async () => {
    expect(await drv.detach(1, 0x99)).toBe(ReqStatus.NOENT);
  });

  it('gives INVAL when the domain does not exist or the endpoint is not in it', async () => {
    expect(await drv.detach(7, EP)).toBe(ReqStatus.INVAL);
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await drv.attach(2, EP2)).toBe(ReqStatus.OK);
    expect(await drv.detach(2, EP)).toBe(ReqStatus.INVAL);
    expect(await mapPages(1, 0, 1)).toBe(ReqStatus.OK);
    expect(await read(IOVA)).toMatchObject({ ok: true }); // still attached
  });

  it('ignores reserved bytes', async () => {
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    const req = new LeWriter(REQ_READABLE_SIZE[ReqType.DETACH]!).u8(0, ReqType.DETACH).u32(4, 1).u32(8, EP).u8(15, 0xff);
    expect((await drv.submit(req.bytes)).status).toBe(ReqStatus.OK);
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.NOENT);
  });
});

describe('MAP', () => {
  beforeEach(async () => {
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
  });

  it('gives RANGE when virt_start, phys_start or virt_end+1 is not granule aligned', async () => {
    expect(await drv.map(1, IOVA + 0x10n, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.RANGE);
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0010n, R)).toBe(ReqStatus.RANGE);
    expect(await drv.map(1, IOVA, IOVA + PG, 0x10_0000n, R)).toBe(ReqStatus.RANGE);
    expect(await read(IOVA)).toMatchObject({ ok: false });
  });

  it('gives INVAL for a mapping that overlaps an existing one, which stays', async () => {
    expect(await mapPages(1, 0, 2)).toBe(ReqStatus.OK);
    expect(await drv.map(1, IOVA + PG, IOVA + 3n * PG - 1n, 0x20_0000n, RW)).toBe(ReqStatus.INVAL);
    const r = await read(IOVA + PG);
    expect(r).toMatchObject({ ok: true });
    expect(r.ok && r.data![0]).toBe(1);
    expect(await read(IOVA + 2n * PG)).toMatchObject({ ok: false });
  });

  it('gives INVAL for an unknown flag, and for MMIO without VIRTIO_IOMMU_F_MMIO', async () => {
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R | (1 << 3))).toBe(ReqStatus.INVAL);
    expect(await drv.map(1, IOVA, IOVA + PG - 1n, 0x10_0000n, R | MapFlag.MMIO)).toBe(ReqStatus.INVAL);
    expect(await read(IOVA)).toMatchObject({ ok: false });
  });

  it('gives NOENT for a domain that does not exist', async () => {
    expect(await drv.map(5, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.NOENT);
  });

  it('gives INVAL on a bypass domain', async () => {
    expect(await drv.attach(2, EP2, { bypass: true })).toBe(ReqStatus.OK);
    expect(await drv.map(2, IOVA, IOVA + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.INVAL);
  });

  it('rejects a mapping that overlaps the RESV_MEM MSI window', async () => {
    expect(await drv.map(1, MSI_WINDOW_START - PG, MSI_WINDOW_START + PG - 1n, 0x10_0000n, R)).toBe(ReqStatus.INVAL);
  });

  it('gives RANGE outside input_range', async () => {
    const end = drv.config.inputRange.end;
    expect(await drv.map(1, end + 1n, end + PG, 0x10_0000n, R)).toBe(ReqStatus.RANGE);
  });

  it('does not allow writes through a mapping without WRITE', async () => {
    expect(await mapPages(1, 0, 1, R)).toBe(ReqStatus.OK);
    expect(await read(IOVA)).toMatchObject({ ok: true });
    const w = await rig.vm.dma('00:03.0', { addr: IOVA, data: new Uint8Array([1, 2, 3, 4]) });
    expect(w.ok).toBe(false);
    expect((await rig.vm.memread(0x10_0000n, 4))[0]).toBe(0);
    const ev = await drv.waitForEvent();
    expect(ev).toMatchObject({ kind: 'fault', reason: FaultReason.MAPPING, endpoint: EP, address: IOVA });
  });
});

describe('UNMAP', () => {
  beforeEach(async () => {
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
  });

  it('gives INVAL for non-zero reserved bytes and unmaps nothing', async () => {
    expect(await mapPages(1, 0, 1)).toBe(ReqStatus.OK);
    const req = new LeWriter(REQ_READABLE_SIZE[ReqType.UNMAP]!).u8(0, ReqType.UNMAP).u32(UnmapReq.DOMAIN, 1)
      .u64(UnmapReq.VIRT_START, IOVA).u64(UnmapReq.VIRT_END, IOVA + PG - 1n).u8(UnmapReq.RESERVED, 1);
    expect((await drv.submit(req.bytes)).status).toBe(ReqStatus.INVAL);
    expect(await read(IOVA)).toMatchObject({ ok: true });
  });

  it('gives NOENT for a domain that does not exist', async () => {
    expect(await drv.unmap(9, IOVA, IOVA + PG - 1n)).toBe(ReqStatus.NOENT);
  });

  it('gives INVAL on a bypass domain', async () => {
    expect(await drv.attach(2, EP2, { bypass: true })).toBe(ReqStatus.OK);
    expect(await drv.unmap(2, 0n, PG - 1n)).toBe(ReqStatus.INVAL);
    expect(await read(0x10_0000n, '00:04.0')).toMatchObject({ ok: true });
  });

  it('gives RANGE for an unmap that would split a mapping, and removes nothing', async () => {
    expect(await mapPages(1, 0, 2)).toBe(ReqStatus.OK);
    expect(await mapPages(1, 4, 1)).toBe(ReqStatus.OK);
    // covers the page-4 mapping fully but only half of the first one
    expect(await drv.unmap(1, IOVA + PG, IOVA + 5n * PG - 1n)).toBe(ReqStatus.RANGE);
    for (const p of [0n, 1n, 4n]) expect(await read(IOVA + p * PG)).toMatchObject({ ok: true });
  });

  describe('the spec examples (units of one 4 KiB page)', () => {
    const u = (n: number) => IOVA + BigInt(n) * PG;
    const unmap = (a: number, b: number) => drv.unmap(1, u(a), u(b + 1) - 1n);

    /** Each example: the mappings made (first page, page count), the unmap, its status, and which pages still translate. */
    const examples: { name: string; maps: [number, number][]; unmap: [number, number]; status: number; mapped: number[]; unmapped: number[]; hostMappings?: number }[] = [
      { name: 'unmap(0,4) on an empty space: OK, nothing removed', maps: [], unmap: [0, 4], status: ReqStatus.OK, mapped: [], unmapped: [] },
      { name: 'map(0,9); unmap(0,4): fails', maps: [[0, 10]], unmap: [0, 4], status: ReqStatus.RANGE, mapped: [0, 9], unmapped: [] },
      { name: 'map(0,4), map(5,9); unmap(0,4): unmaps only a', maps: [[0, 5], [5, 5]], unmap: [0, 4], status: ReqStatus.OK, mapped: [5], unmapped: [0, 4] },
      { name: 'map(0,4), map(10,14); unmap(0,14): unmaps both', maps: [[0, 5], [10, 5]], unmap: [0, 14], status: ReqStatus.OK, mapped: [], unmapped: [0, 10], hostMappings: 0 },
    ];
    for (const ex of examples) {
      it(ex.name, async () => {
        for (const [first, count] of ex.maps) expect(await mapPages(1, first, count)).toBe(ReqStatus.OK);
        expect(await unmap(...ex.unmap)).toBe(ex.status);
        for (const p of ex.mapped) expect(await read(u(p))).toMatchObject({ ok: true });
        for (const p of ex.unmapped) expect(await read(u(p))).toMatchObject({ ok: false });
        if (ex.hostMappings !== undefined) expect((await hostDomains(rig)).find((d) => d.rids.includes('00:03.0'))?.mappings).toBe(ex.hostMappings);
      });
    }
  });
});

describe('PROBE', () => {
  it('gives NOENT for an endpoint that does not exist', async () => {
    expect((await drv.probeEndpoint(0x99)).status).toBe(ReqStatus.NOENT);
  });

  it('reports the MSI doorbell as RESV_MEM, properties back to back, the rest zero', async () => {
    const { status, properties } = await drv.probeEndpoint(EP);
    expect(status).toBe(ReqStatus.OK);
    expect(properties[0]!.resvMem).toEqual({ subtype: ResvMemSubtype.MSI, start: 0xfee0_0000n, end: 0xfeef_ffffn });
    expect(properties.map((p) => p.type)).toEqual([ProbeType.RESV_MEM, ProbeType.PASID_SIZE, ProbeType.PAGE_TABLE_FMT]);
    const r = await drv.submit(new LeWriter(72).u8(0, ReqType.PROBE).u32(4, EP).bytes, drv.config.probeSize + 4);
    const used = properties.reduce((n, p) => n + 4 + p.length, 0);
    expect(r.out.subarray(used, drv.config.probeSize).every((b) => b === 0)).toBe(true);
  });

  it('gives INVAL and writes no property when the buffer is smaller than probe_size', async () => {
    const r = await drv.submit(new LeWriter(72).u8(0, ReqType.PROBE).u32(4, EP).bytes, 64 + 4);
    expect(r.status).toBe(ReqStatus.INVAL);
    expect(r.out.subarray(0, 64).every((b) => b === 0)).toBe(true);
  });

  it('is an unknown request (used length 0) when PROBE was not negotiated', async () => {
    await drv.remove();
    const d2 = await VirtioIommuDriver.probe(rig.vm, { alloc: rig.alloc, features: DRIVER_FEATURES & ~(1n << VirtioIommuFeature.PROBE) });
    expect(d2.has(VirtioIommuFeature.PROBE)).toBe(false);
    const r = await d2.submit(new LeWriter(72).u8(0, ReqType.PROBE).u32(4, EP).bytes, 512 + 4);
    expect(r.usedLen).toBe(0);
  });
});

describe('bypass', () => {
  it('config bypass = 0: an unattached endpoint faults with reason DOMAIN', async () => {
    expect(drv.config.bypass).toBe(0);
    expect(await read(0x10_0000n)).toMatchObject({ ok: false });
    expect(await drv.waitForEvent()).toMatchObject({ kind: 'fault', reason: FaultReason.DOMAIN, endpoint: EP });
  });

  it('config bypass = 1: an unattached endpoint reaches guest memory at IOVA = GPA', async () => {
    await rig.vm.writel(VirtioMmio.CONFIG + IommuConfig.BYPASS, 1);
    await dataPage(rig, 0, 0xab);
    const r = await read(0x10_0000n);
    expect(r.ok && r.data![0]).toBe(0xab);
  });

  it('ignores a bypass value other than 0 or 1', async () => {
    await rig.vm.writel(VirtioMmio.CONFIG + IommuConfig.BYPASS, 2);
    expect((await rig.vm.readl(VirtioMmio.CONFIG + IommuConfig.BYPASS)) & 0xff).toBe(0);
  });

  it('an ATTACH_F_BYPASS domain is identity-mapped', async () => {
    expect(await drv.attach(3, EP, { bypass: true })).toBe(ReqStatus.OK);
    await dataPage(rig, 2, 0x5a);
    const r = await read(0x10_2000n);
    expect(r.ok && r.data![0]).toBe(0x5a);
  });

  it('after DETACH the endpoint falls back to the config bypass state', async () => {
    await rig.vm.writel(VirtioMmio.CONFIG + IommuConfig.BYPASS, 1);
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await read(0x10_0000n)).toMatchObject({ ok: false });
    expect(await drv.detach(1, EP)).toBe(ReqStatus.OK);
    expect(await read(0x10_0000n)).toMatchObject({ ok: true });
  });

  it('device reset detaches everything; bypass is sticky across it', async () => {
    await rig.vm.writel(VirtioMmio.CONFIG + IommuConfig.BYPASS, 1);
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await mapPages(1, 0, 1)).toBe(ReqStatus.OK);
    await drv.remove();
    expect((await rig.vm.readl(VirtioMmio.CONFIG + IommuConfig.BYPASS)) & 0xff).toBe(1);
    expect(await read(IOVA)).toMatchObject({ ok: false });
    expect(await read(0x10_0000n)).toMatchObject({ ok: true });
    expect((await hostDomains(rig)).length).toBe(1); // only the GPA domain is left
  });
});
