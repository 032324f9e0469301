/**
 * Acceptance (issue 8): a Linux-like virtio-iommu driver — virtio-mmio registers and guest memory
 * only — against a host in another process: negotiate, set up both queues, PROBE, ATTACH, MAP,
 * DMA through the device, UNMAP, the DMA faults and the fault arrives on the eventq; then the
 * PASID path: a first-level table for guest PASID 5, DMA with that PASID, invalidate, detach.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGuest, startHost, type StartedGuest, type StartedHost } from '../../../src/app/index.js';
import { VirtioIommuDriver } from '../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import {
  FaultFlag, FaultReason, InvalGran, InvalType, MapFlag, PGTF_VTD, ProbeType, ReqStatus, ResvMemSubtype, VirtioIommuFeature, VirtioStatus,
} from '../../../guest/virtio/index.js';
import type { EventReport } from '../../../guest/virtio/events.js';
import { UAPIS, pasidRoutes } from '../vtd/helpers.js';

const MEMORY = 32 << 20;
const EP = 0x18; // 00:03.0
const IOVA = 0x8000_0000n;
const GVA = 0x5555_0000_0000n;

describe.each(UAPIS)('virtio-iommu driver against a host process, %s uAPI', (uapi) => {
  let host: StartedHost;
  let guest: StartedGuest;
  let alloc: PageAllocator;
  let drv: VirtioIommuDriver;
  const seen: EventReport[] = [];

  beforeAll(async () => {
    host = await startHost();
    guest = await startGuest({ socket: host.socket, viommu: 'virtio', name: 'virtio-vm', memory: MEMORY, uapi });
    alloc = new PageAllocator(guest, { base: 0x40_0000n, size: MEMORY - 0x40_0000 });
  });
  afterAll(async () => {
    await guest?.close();
    await host?.close();
  });

  it('negotiates features and brings up requestq and eventq', async () => {
    drv = await VirtioIommuDriver.probe(guest, { alloc, onEvent: (e) => void seen.push(e) });
    for (const f of [VirtioIommuFeature.MAP_UNMAP, VirtioIommuFeature.PROBE, VirtioIommuFeature.BYPASS_CONFIG, VirtioIommuFeature.ATTACH_TABLE]) {
      expect(drv.has(f)).toBe(true);
    }
    expect(await drv.status()).toBe(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK);
    expect(drv.config.probeSize).toBe(512);
  });

  it('PROBE reports the MSI window and the PASID properties', async () => {
    const { status, properties } = await drv.probeEndpoint(EP);
    expect(status).toBe(ReqStatus.OK);
    expect(properties.find((p) => p.type === ProbeType.RESV_MEM)?.resvMem?.subtype).toBe(ResvMemSubtype.MSI);
    expect(properties.find((p) => p.type === ProbeType.PASID_SIZE)?.pasidBits).toBe(20);
    // The registers of the IOMMU behind the endpoint: on iommufd, what GET_HW_INFO reported.
    const fmt = properties.find((p) => p.type === ProbeType.PAGE_TABLE_FMT)?.pageTable;
    expect(fmt?.format).toBe(PGTF_VTD);
    if (uapi === 'iommufd') expect({ cap: fmt?.cap, ecap: fmt?.ecap }).toEqual(guest.uapi.hwInfo(EP));
  });

  it('ATTACH + MAP: the device reads guest memory through the IOVA', async () => {
    const page = await alloc.alloc(1);
    await guest.memwrite(page, new TextEncoder().encode('mapped by virtio'));
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await drv.map(1, IOVA, IOVA + 0xfffn, page, MapFlag.READ | MapFlag.WRITE)).toBe(ReqStatus.OK);
    const r = await guest.dma('00:03.0', { addr: IOVA, length: 16 });
    expect(r.ok && Buffer.from(r.data!).toString()).toBe('mapped by virtio');
    expect(await guest.dma('00:03.0', { addr: IOVA + 0x10n, data: new Uint8Array([1, 2]) })).toEqual({ ok: true });
    expect([...(await guest.memread(page + 0x10n, 2))]).toEqual([1, 2]);
  });

  it('UNMAP: the DMA faults and the fault arrives on the eventq', async () => {
    expect(await drv.unmap(1, IOVA, IOVA + 0xfffn)).toBe(ReqStatus.OK);
    const r = await guest.dma('00:03.0', { addr: IOVA + 8n, data: new Uint8Array([7]) });
    expect(r.ok).toBe(false);
    const ev = await drv.waitForEvent((e) => e.kind === 'fault');
    expect(ev).toMatchObject({ kind: 'fault', reason: FaultReason.MAPPING, endpoint: EP, address: IOVA + 8n });
    expect(ev.flags & (FaultFlag.WRITE | FaultFlag.ADDRESS)).toBe(FaultFlag.WRITE | FaultFlag.ADDRESS);
    expect(seen).toContainEqual(ev);
  });

  it('PASID path: attach a first-level table for guest PASID 5, DMA with it, invalidate, detach', async () => {
    const proc = await GuestProcess.create(guest, alloc);
    const [gpa] = await proc.mapNew(GVA, 0x1000);
    await guest.memwrite(gpa!, new TextEncoder().encode('svm via pasid 5'));
    expect(await drv.attachTable({ domain: 1, endpoint: EP, pasid: 5, pgd: proc.pgd, addrWidth: proc.addressWidth })).toBe(ReqStatus.OK);

    const snap = (await host.snapshot()).vms.find((v) => v.name === 'virtio-vm')!;
    expect(snap.pasids).toHaveLength(1);
    // VFIO SVA records the guest PASID as the host PASID's SPID (BIND_GPASID); iommufd attaches
    // the host PASID (GLOBAL_PASID) and has no SPID.
    expect(snap.pasids[0]).toMatchObject({ gpasid: uapi === 'vfio-sva' ? 5 : null, state: 'active' });
    expect(pasidRoutes(snap, snap.pasids[0]!.hpasid)).toEqual([{ bdf: '00:03.0', pgtt: 'nested', flptr: `0x${proc.pgd.toString(16)}` }]);

    const r = await guest.dma('00:03.0', { pasid: 5, addr: GVA, length: 15 });
    expect(r.ok && Buffer.from(r.data!).toString()).toBe('svm via pasid 5');

    await proc.unmap(GVA);
    expect(await drv.invalidate({ granularity: InvalGran.VA, type: InvalType.IOTLB | InvalType.DEV_IOTLB, domain: 1, pasid: 5, virtStart: GVA, nrPages: 1n })).toBe(ReqStatus.OK);
    expect((await guest.dma('00:03.0', { pasid: 5, addr: GVA, length: 4 })).ok).toBe(false);
    expect(await drv.waitForEvent((e) => e.kind === 'fault' && e.pasid === 5)).toMatchObject({ reason: FaultReason.MAPPING, address: GVA });

    expect(await drv.invalidate({ granularity: InvalGran.PASID, type: InvalType.IOTLB | InvalType.PASID, domain: 1, pasid: 5 })).toBe(ReqStatus.OK);
    expect(await drv.detachTable(1, EP, 5)).toBe(ReqStatus.OK);
    const after = (await host.snapshot()).vms.find((v) => v.name === 'virtio-vm')!;
    expect(after.pasids).toEqual([]);
    expect(after.set.used).toBe(0);
  });

  it('DETACH and reset leave nothing attached', async () => {
    expect(await drv.detach(1, EP)).toBe(ReqStatus.OK);
    await drv.remove();
    expect(await guest.readl(0x70)).toBe(0);
  });
});
