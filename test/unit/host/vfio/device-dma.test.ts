/**
 * DEVICE_DMA through the container: an ordinary DMA — completed or faulted — is answered
 * synchronously (no promise, so no held reply slot in the dispatcher); only a DMA that must wait
 * for a page response returns a promise. And the container keeps IOVAs as numbers only after
 * asserting that they fit the 48-bit domain.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { DeviceDmaFlag, DeviceDmaOp, DeviceDmaStatus, type DeviceDmaReply } from '../../../../vhost/messages/device-dma.js';
import { TestGuest, errnoOf } from '../../../integration/host/client.js';

const RID = 0x18;
let host: HostServer | undefined;
let guest: TestGuest | undefined;

afterEach(async () => {
  guest?.close();
  guest = undefined;
  await host?.close();
  host = undefined;
});

/** A guest with PASID `pasid` bound on RID, GVA 0x1000 → GPA 0x20_0000 holding [1, 2, 3, 4]. */
async function boundGuest(): Promise<{ g: TestGuest; pasid: number }> {
  host = new HostServer({ graceMs: 0, pageRequestTimeoutMs: 200 });
  const g = await TestGuest.start({ name: 'vm', connect: host.connector(), backing: 'inproc' });
  guest = g;
  const pasid = await g.alloc();
  const root = g.fl.newRoot();
  g.fl.map(root, 0x1000n, 0x20_0000);
  g.ram.write(0x20_0000, new Uint8Array([1, 2, 3, 4]));
  await g.bind(RID, pasid, root, pasid);
  return { g, pasid };
}

const read = (pasid: number, addr: bigint) => ({ rid: RID, op: DeviceDmaOp.READ, flags: DeviceDmaFlag.PASID_VALID, pasid, addr, length: 4 });

describe('DEVICE_DMA replies', () => {
  it('answers a completed and a faulting DMA synchronously', async () => {
    const { pasid } = await boundGuest();
    const container = host!.vm('vm')!.container;
    const ok = container.deviceDma(read(pasid, 0x1000n));
    expect(ok).not.toBeInstanceOf(Promise);
    expect((ok as DeviceDmaReply).status).toBe(DeviceDmaStatus.OK);
    expect([...(ok as DeviceDmaReply).data!]).toEqual([1, 2, 3, 4]);
    const fault = container.deviceDma(read(pasid, 0x9000n));
    expect(fault).not.toBeInstanceOf(Promise);
    expect(fault).toEqual({ status: DeviceDmaStatus.FAULT, reason: 0x71, flags: 1, pasid, fault_addr: 0x9000n });
    // A PASID with no PASID-table entry: the SPT.2 fault, also synchronous.
    expect(container.deviceDma(read(pasid + 1, 0x1000n))).toMatchObject({ status: DeviceDmaStatus.FAULT, reason: 0x59, pasid: pasid + 1 });
  });

  it('returns a promise only while a page request waits for its response (PRI enabled)', async () => {
    const { g, pasid } = await boundGuest();
    await g.fe.call('DEVICE_CONFIG', { rid: RID, flags: 1 }); // PRI_ENABLE
    g.autoRespond = 1; // INVALID
    const container = host!.vm('vm')!.container;
    expect(container.deviceDma(read(pasid, 0x1000n))).not.toBeInstanceOf(Promise);
    const pending = container.deviceDma(read(pasid, 0x9000n));
    expect(pending).toBeInstanceOf(Promise);
    expect(await pending).toMatchObject({ status: DeviceDmaStatus.FAULT, reason: 0x71, fault_addr: 0x9000n });
  });
});

describe('DMA_MAP IOVA width', () => {
  it('maps the last page below 2^48 exactly and refuses a range that ends past it (EINVAL)', async () => {
    host = new HostServer({ graceMs: 0 });
    const g = await TestGuest.start({ name: 'vm', connect: host.connector(), backing: 'inproc' });
    guest = g;
    const domain = (await g.fe.call('DOMAIN_ALLOC', {})).domain;
    const top = (1n << 48n) - 0x1000n;
    await g.fe.call('DMA_MAP', { domain, flags: 3, iova: top, gpa: 0n, size: 0x1000n });
    const did = host.vm('vm')!.container.listDomains().find((d) => d.id === domain)!.did;
    expect(host.iommu.iovaToPhys(did, top)).toBe(BigInt(host.vm('vm')!.mem.gpaToHpa(0n, 0x1000n)));
    expect(await errnoOf(g.fe.call('DMA_MAP', { domain, flags: 3, iova: top, gpa: 0x1000n, size: 0x2000n }))).toBe('EINVAL');
    expect(await errnoOf(g.fe.call('DMA_MAP', { domain, flags: 3, iova: 1n << 53n, gpa: 0n, size: 0x1000n }))).toBe('EINVAL');
    expect(await g.fe.call('DMA_UNMAP', { domain, iova: top, size: 0x1000n })).toEqual({ unmapped: 0x1000n });
  });
});
