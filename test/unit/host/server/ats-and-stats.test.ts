/**
 * The guest's ATS Enable drives the IOMMU's device-TLB (DEVICE_CONFIG ATS_ENABLE → the host
 * IOMMU device's ATS Enable), and the dashboard's IOTLB counters are attributed per VM.
 * In-process host, in-memory connections, in-process guest RAM.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { TestGuest } from '../../../integration/host/client.js';

const RID = 0x18; // 00:03.0, PASID | ATS | PRI
const GVA = 0x4000_0000n;
const servers: HostServer[] = [];
const guests: TestGuest[] = [];

async function setup(names: string[]) {
  const host = new HostServer({ graceMs: 0 });
  servers.push(host);
  const gs: TestGuest[] = [];
  for (const name of names) {
    const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc' });
    guests.push(g);
    gs.push(g);
  }
  return { host, gs };
}

/** A bound PASID whose table maps GVA → `gpa`. */
async function boundPasid(g: TestGuest, gpa: number) {
  const pasid = await g.alloc();
  const root = g.fl.newRoot();
  g.fl.map(root, GVA, gpa);
  await g.bind(RID, pasid, root, 7);
  return { pasid, root };
}

const pasidInvalidate = (pasid: number) => ({ cache: 1, granularity: 2, flags: 1, pasid: BigInt(pasid), addr: GVA, granule_size: 4096n, nb_granules: 1n });

afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

describe('ATS Enable from DEVICE_CONFIG', () => {
  it('ATS off (the default): DMA costs no device-TLB invalidation and an IOTLB flush alone ends a stale translation', async () => {
    const { host, gs: [g] } = await setup(['vm0']);
    const { pasid, root } = await boundPasid(g!, 0x20_0000);
    g!.ram.write(0x20_0000, Uint8Array.of(1, 1));
    g!.ram.write(0x21_0000, Uint8Array.of(2, 2));
    const devTlb = host.iommu.stats().invalidations.devTlb;
    for (let i = 0; i < 10; i++) expect([...(await g!.read(RID, GVA, 2, pasid)).data!]).toEqual([1, 1]);
    expect(host.iommu.stats().invalidations.devTlb).toBe(devTlb);
    expect(host.iommu.stats().devTlbHits).toBe(0);
    g!.fl.map(root, GVA, 0x21_0000);
    await g!.invalidate([pasidInvalidate(pasid)]);
    expect([...(await g!.read(RID, GVA, 2, pasid)).data!]).toEqual([2, 2]);
  });

  it('ATS on: the device-TLB serves a stale translation until flushed; turning ATS off drops it', async () => {
    const { host, gs: [g] } = await setup(['vm0']);
    const { pasid, root } = await boundPasid(g!, 0x20_0000);
    g!.ram.write(0x20_0000, Uint8Array.of(5));
    await g!.fe.call('DEVICE_CONFIG', { rid: RID, flags: 2 });
    expect([...(await g!.read(RID, GVA, 1, pasid)).data!]).toEqual([5]);
    g!.fl.unmap(root, GVA);
    await g!.invalidate([pasidInvalidate(pasid)]);
    const hits = host.iommu.stats().devTlbHits;
    expect([...(await g!.read(RID, GVA, 1, pasid)).data!]).toEqual([5]); // stale, from the device-TLB
    expect(host.iommu.stats().devTlbHits).toBe(hits + 1);
    await g!.fe.call('DEVICE_CONFIG', { rid: RID, flags: 0 });
    expect(await g!.read(RID, GVA, 1, pasid)).toMatchObject({ status: 1, reason: 0x71, pasid, fault_addr: GVA });
  });
});

describe('per-VM IOTLB statistics', () => {
  it('attributes each device’s IOTLB hits and misses to its VM; the host total is their sum', async () => {
    const { host, gs: [a, b] } = await setup(['A', 'B']);
    const pa = await boundPasid(a!, 0x20_0000);
    const pb = await boundPasid(b!, 0x20_0000);
    const before = host.stats();
    expect(before.vms.A).toMatchObject({ iotlbHits: 0, iotlbMisses: 0 });
    for (let i = 0; i < 3; i++) expect((await a!.read(RID, GVA, 4, pa.pasid)).status).toBe(0);
    expect((await b!.read(RID, GVA, 4, pb.pasid)).status).toBe(0);
    const st = host.stats();
    expect(st.vms.A).toMatchObject({ iotlbHits: 2, iotlbMisses: 1 });
    expect(st.vms.B).toMatchObject({ iotlbHits: 0, iotlbMisses: 1 });
    expect(st.total.iotlbHits! - before.total.iotlbHits!).toBe(2);
    expect(st.total.iotlbMisses! - before.total.iotlbMisses!).toBe(2);
    // A's work does not move B's figures.
    await a!.read(RID, GVA, 4, pa.pasid);
    expect(host.stats().vms.B).toEqual(st.vms.B);
    expect(host.stats().vms.A!.iotlbHits).toBe(3);
  });
});
