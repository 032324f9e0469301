/**
 * Acceptance (issue 8): a VT-d VM and a virtio-iommu VM side by side on one host process. The
 * virtio VM's guest PASIDs are guest-private — the host allocates its own PASIDs and records the
 * guest's as SPIDs — and the snapshot shows them so.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGuest, startHost, type StartedGuest, type StartedHost } from '../../../src/app/index.js';
import { VirtioIommuDriver } from '../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { ReqStatus } from '../../../guest/virtio/index.js';
import { UAPIS, pasidRoutes } from '../vtd/helpers.js';

const MEMORY = 32 << 20;

/** The VT-d VM stays on the VFIO SVA uAPI; the virtio VM runs on each uAPI (with iommufd: two uAPIs on one host). */
describe.each(UAPIS)('a VT-d VM and a virtio-iommu VM (%s uAPI) on one host', (uapi) => {
  let host: StartedHost;
  let vtd: StartedGuest;
  let virtio: StartedGuest;

  beforeAll(async () => {
    host = await startHost();
    [vtd, virtio] = await Promise.all([
      startGuest({ socket: host.socket, viommu: 'vtd', name: 'vtd-vm', memory: MEMORY }),
      startGuest({ socket: host.socket, viommu: 'virtio', name: 'virtio-vm', memory: MEMORY, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0' }], uapi }),
    ]);
  });
  afterAll(async () => {
    await virtio?.close();
    await vtd?.close();
    await host?.close();
  });

  it("shows the virtio VM's PASIDs: host PASIDs of its own, with the guest PASIDs as SPIDs on VFIO SVA", async () => {
    const alloc = new PageAllocator(virtio, { base: 0x40_0000n, size: MEMORY - 0x40_0000 });
    const drv = await VirtioIommuDriver.probe(virtio, { alloc });
    expect(await drv.attach(1, 0x18)).toBe(ReqStatus.OK);
    expect(await drv.attach(1, 0x20)).toBe(ReqStatus.OK);
    const procs = await Promise.all([GuestProcess.create(virtio, alloc), GuestProcess.create(virtio, alloc)]);
    const gpasids = [5, 0x2345];
    for (let i = 0; i < 2; i++) {
      expect(await drv.attachTable({ domain: 1, endpoint: 0x18, pasid: gpasids[i]!, pgd: procs[i]!.pgd, addrWidth: 48 })).toBe(ReqStatus.OK);
    }
    expect(await drv.attachTable({ domain: 1, endpoint: 0x20, pasid: 5, pgd: procs[0]!.pgd, addrWidth: 48 })).toBe(ReqStatus.OK);

    // the VT-d VM works beside it (translation off: DMA at GPA)
    await vtd.memwrite(0x10_0000n, new TextEncoder().encode('vtd'));
    const r = await vtd.dma('00:03.0', { addr: 0x10_0000n, length: 3 });
    expect(r.ok && Buffer.from(r.data!).toString()).toBe('vtd');

    const snap = await host.snapshot();
    expect(snap.vms.map((v) => v.name).sort()).toEqual(['virtio-vm', 'vtd-vm']);
    const v = snap.vms.find((x) => x.name === 'virtio-vm')!;
    // guest-private: the host PASIDs are the host's own; VFIO SVA keeps the guest's as SPIDs
    // (BIND_GPASID), iommufd attaches the host PASID with GLOBAL_PASID and records none.
    const hpasidOf = (g: number) => virtio.viommu.devicePasid!(0x18, g);
    if (uapi === 'vfio-sva') {
      expect(v.pasids.map((p) => p.gpasid).sort((a, b) => a! - b!)).toEqual(gpasids);
      for (const p of v.pasids) expect(hpasidOf(p.gpasid!)).toBe(p.hpasid);
    } else {
      expect(v.pasids.map((p) => p.gpasid)).toEqual([null, null]);
      expect(v.pasids.map((p) => p.hpasid).sort((a, b) => a - b)).toEqual(gpasids.map(hpasidOf).sort((a, b) => a - b));
    }
    const p5 = pasidRoutes(v, hpasidOf(5));
    expect(p5.map((b) => b.bdf).sort()).toEqual(['00:03.0', '00:04.0']);
    expect(p5.every((b) => b.pgtt === 'nested')).toBe(true);
    expect(new Set(v.pasids.map((p) => p.hpasid)).size).toBe(2);
    expect(v.set.used).toBe(2);
    expect(snap.vms.find((x) => x.name === 'vtd-vm')!.pasids).toEqual([]);

    // DMA with the guest PASID reaches the bound process's memory
    const [gpa] = await procs[1]!.mapNew(0x4000_0000n, 0x1000);
    await virtio.memwrite(gpa!, new TextEncoder().encode('second'));
    const d = await virtio.dma('00:03.0', { pasid: 0x2345, addr: 0x4000_0000n, length: 6 });
    expect(d.ok && Buffer.from(d.data!).toString()).toBe('second');
  });
});
