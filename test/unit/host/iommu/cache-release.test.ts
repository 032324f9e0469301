/**
 * Translation caches are freed with what they belong to (docs/performance.md, "Cache
 * invalidation scaling"): rounds of N VMs × M nested-bound PASIDs with ATS enabled, each PASID
 * and the default domain doing DMA (IOTLB, paging-structure, device-TLB and PASID-cache entries
 * filled), half the PASIDs unbound while the VM lives, the rest torn down by the VM's release.
 * After every round the host holds no IOTLB bucket or entry, no paging-structure entry, no cached
 * PASID entry, no request context and no device-TLB bucket — and while a VM lives, an unbound
 * PASID's caches and context are already gone. In-process host, in-memory connections.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { TestGuest } from '../../../integration/host/client.js';
import { waitFor } from '../../../support/wait.js';

const RID = 0x18;
const VMS = 4;
const PASIDS = 24;
const ROUNDS = 3;
const GVA = 0x7000_0000n;

const servers: HostServer[] = [];
const guests: TestGuest[] = [];

afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

const EMPTY = { iotlbBuckets: 0, iotlbEntries: 0, pscEntries: 0, pasidCacheEntries: 0, contexts: 0, devTlbBuckets: 0, devTlbEntries: 0 };

/** A VM whose PASIDs are bound on one first-level table mapping 4 pages at GVA, each PASID DMA'd over. */
async function busyVm(host: HostServer, name: string): Promise<{ g: TestGuest; pasids: number[] }> {
  const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc', quota: PASIDS, devices: [{ rid: RID }] });
  guests.push(g);
  // ATS Enable (DEVICE_CONFIG flags bit 1): requests fill the device-TLB too.
  await g.fe.call('DEVICE_CONFIG', { rid: RID, flags: 2 });
  const root = g.fl.newRoot();
  for (let i = 0; i < 4; i++) g.fl.map(root, GVA + BigInt(i) * 0x1000n, 0x20_0000 + i * 0x1000);
  const pasids: number[] = [];
  for (let i = 0; i < PASIDS; i++) pasids.push(await g.alloc());
  for (const [i, p] of pasids.entries()) await g.bind(RID, p, root, i + 1);
  for (const p of pasids) {
    for (let i = 0; i < 4; i++) expect((await g.read(RID, GVA + BigInt(i) * 0x1000n, 8, p)).status).toBe(0);
  }
  // Requests without PASID through the default domain (GPA = IOVA) fill that route's caches too.
  expect((await g.read(RID, 0x3000n, 8)).status).toBe(0);
  return { g, pasids };
}

describe('translation caches after teardown', () => {
  it('an unbound PASID leaves no bucket, paging-structure entry, cached PASID entry or context behind', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const { g, pasids } = await busyVm(host, 'vm0');
    const full = host.iommu.cacheCounts();
    expect(full.iotlbBuckets).toBe(PASIDS + 1);
    expect(full.pscEntries).toBeGreaterThan(0);
    expect(full.pasidCacheEntries).toBe(PASIDS + 1);
    expect(full.contexts).toBe(PASIDS + 1);
    expect(full.devTlbBuckets).toBe(PASIDS + 1);
    const hitsBefore = host.iommu.listDevices()[0]!.iotlbHits;
    await g.unbind(RID, pasids[0]!);
    const after = host.iommu.cacheCounts();
    expect(after).toMatchObject({ iotlbBuckets: PASIDS, pasidCacheEntries: PASIDS, contexts: PASIDS, devTlbBuckets: PASIDS });
    expect(after.iotlbEntries).toBe(full.iotlbEntries - 4);
    expect(after.pscEntries).toBeLessThan(full.pscEntries);
    // The dropped context's counts stay in the device's totals.
    expect(host.iommu.listDevices()[0]!.iotlbHits).toBe(hitsBefore);
  });

  it(`${ROUNDS} rounds of ${VMS} VMs × ${PASIDS} PASIDs: bind, DMA, teardown; every cache is empty after each round`, async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    expect(host.iommu.cacheCounts()).toEqual(EMPTY);
    for (let round = 0; round < ROUNDS; round++) {
      const vms = [];
      for (let v = 0; v < VMS; v++) vms.push(await busyVm(host, `r${round}-vm${v}`));
      expect(host.iommu.cacheCounts().iotlbBuckets).toBe(VMS * (PASIDS + 1));
      // Half the PASIDs of each VM unbound while it lives; the rest go with the VM's release.
      for (const { g, pasids } of vms) for (const p of pasids.slice(0, PASIDS / 2)) await g.unbind(RID, p);
      for (const { g } of vms) g.close();
      await waitFor(() => host.vms.length === 0, { what: `round ${round}: every VM released` });
      expect(host.iommu.cacheCounts()).toEqual(EMPTY);
      expect(host.iommu.stats()).toMatchObject({ iotlbBuckets: 0, iotlbEntries: 0, pasidCacheEntries: 0, devices: 0 });
    }
  });
});
