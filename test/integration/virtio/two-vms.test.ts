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

const MEMORY = 32 << 20;
let host: StartedHost;
let vtd: StartedGuest;
let virtio: StartedGuest;

beforeAll(async () => {
  host = await startHost();
  [vtd, virtio] = await Promise.all([
    startGuest({ socket: host.socket, viommu: 'vtd', name: 'vtd-vm', memory: MEMORY }),
    startGuest({ socket: host.socket, viommu: 'virtio', name: 'virtio-vm', memory: MEMORY, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0' }] }),
  ]);
});
afterAll(async () => {
  await virtio?.close();
  await vtd?.close();
  await host?.close();
});

describe('a VT-d VM and a virtio-iommu VM on one host', () => {
  it("shows the virtio VM's PASIDs with their guest PASIDs as SPIDs", async () => {
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
    expect(v.pasids.map((p) => p.gpasid).sort((a, b) => a! - b!)).toEqual(gpasids);
    const p5 = v.pasids.find((p) => p.gpasid === 5)!;
    expect(p5.bindings.map((b) => b.bdf).sort()).toEqual(['00:03.0', '00:04.0']);
    expect(p5.bindings.every((b) => b.pgtt === 'nested')).toBe(true);
    // guest-private: the host PASIDs are the host's own, the guest's live on as SPIDs
    for (const p of v.pasids) expect(virtio.viommu.devicePasid!(0x18, p.gpasid!)).toBe(p.hpasid);
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
