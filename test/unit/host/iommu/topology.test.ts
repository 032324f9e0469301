/**
 * The two topologies of Kevin Tian's /dev/iommu proposal (vfio "remove the unused mdev iommu hook"
 * thread, 2021): RID1 attached to three domains (its default IOVA domain, vm1's GPA
 * domain through PASID-x, vm2's GPA domain through PASID-y), RID2 attached to vm2's domain; then
 * guest SVA in both VMs adds nested first-level bindings under the GPA domains.
 */
import { describe, expect, it } from 'vitest';
import { formatTopology, type RouteView } from '../../../../host/iommu/index.js';
import { FlBuilder, GUEST_HPA as G, FixturePerTest } from './helpers.js';

const RID1 = 0x0008; // 00:01.0
const RID2 = 0x0010; // 00:02.0
const PASID_X = 0x10;
const PASID_Y = 0x11;
const PASID_A = 0x20;
const PASID_B = 0x21;
const PASID_C = 0x22;

const fixtures = new FixturePerTest();

function routes(r: RouteView[]): string[] {
  return r.map((x) => `${x.bdf}${x.pasid === null ? '' : `/${x.pasid.toString(16)}`}:${x.pgtt}${x.nestingParent === undefined ? '' : `^${x.nestingParent}`}`);
}

function buildBefore() {
  const fx = fixtures.make();
  const { iommu } = fx;
  const domain1 = iommu.allocDomain({ name: 'default IOVA' });
  const domain2 = iommu.allocDomain({ name: 'vm1 GPA' });
  const domain3 = iommu.allocDomain({ name: 'vm2 GPA' });
  // vm1's RAM is the first 16 MiB of the guest region, vm2's the next 16 MiB.
  iommu.map(domain2, 0n, BigInt(G), 0x1000000n, { read: true, write: true });
  iommu.map(domain3, 0n, BigInt(G + 0x1000000), 0x1000000n, { read: true, write: true });
  iommu.map(domain1, 0x10_0000_0000n, BigInt(G + 0x2000000), 0x100000n, { read: true, write: true });
  iommu.addDevice({ rid: RID1, name: 'RID1' });
  iommu.addDevice({ rid: RID2, name: 'RID2' });
  iommu.attachDevice(RID1, domain1);
  iommu.attachPasid(RID1, PASID_X, domain2);
  iommu.attachPasid(RID1, PASID_Y, domain3);
  iommu.attachDevice(RID2, domain3);
  return { iommu, domain1, domain2, domain3 };
}

describe('the /dev/iommu proposal topology before guest SVA', () => {
  it('lists each domain with its RID and RID+PASID routes', () => {
    const { iommu, domain1, domain2, domain3 } = buildBefore();
    const t = iommu.inspect();
    const byDid = new Map(t.domains.map((d) => [d.did, d]));
    expect(routes(byDid.get(domain1.did)!.routes)).toEqual(['00:01.0:second-level']);
    expect(routes(byDid.get(domain2.did)!.routes)).toEqual(['00:01.0/10:second-level']);
    expect(routes(byDid.get(domain3.did)!.routes)).toEqual(['00:01.0/11:second-level', '00:02.0:second-level']);
    const rid1 = t.devices.find((d) => d.rid === RID1)!;
    expect(rid1.defaultDomain).toBe(domain1.did);
    expect(new Set(rid1.routes.map((r) => r.did))).toEqual(new Set([domain1.did, domain2.did, domain3.did]));
    expect(formatTopology(t)).toContain(`|-- domain${domain3.did} (vm2 GPA, paging)`);
  });

  it('routes each request to its domain: RID1 → IOVA, RID1+PASID-x → vm1, RID1+PASID-y and RID2 → vm2', () => {
    const { iommu } = buildBefore();
    expect(iommu.translate({ rid: RID1, addr: 0x10_0000_1000n })).toBe(G + 0x2001000);
    expect(iommu.translate({ rid: RID1, pasid: PASID_X, addr: 0x5000n })).toBe(G + 0x5000);
    expect(iommu.translate({ rid: RID1, pasid: PASID_Y, addr: 0x5000n })).toBe(G + 0x1005000);
    expect(iommu.translate({ rid: RID2, addr: 0x5000n })).toBe(G + 0x1005000);
    // RID2 has no route at PASID-x.
    expect(iommu.translate({ rid: RID2, pasid: PASID_X, addr: 0x5000n })).toBe(-1);
    expect(iommu.lastFault().reason).toBe(0x59);
  });
});

describe('the /dev/iommu proposal topology after guest SVA in vm1 and vm2', () => {
  it('adds nested bindings under their nesting parents, implicitly attached', () => {
    const { iommu, domain1, domain2, domain3 } = buildBefore();
    const { ram } = fixtures.current;
    // Guest page tables live in each VM's RAM (vm2's RAM starts 16 MiB into the region).
    const vm1p1 = new FlBuilder(ram, 4, 0x100000n);
    const vm1p2 = new FlBuilder(ram, 4, 0x200000n);
    const vm2 = (gpa: bigint): number => 0x1000000 + Number(gpa);
    const vm2p1 = new FlBuilder(ram, 4, 0x100000n, vm2);
    const vm2p2 = new FlBuilder(ram, 5, 0x200000n, vm2);
    vm1p1.map(0x7000_0000n, 0x800000n);
    vm1p2.map(0x7000_0000n, 0x801000n);
    vm2p1.map(0x7000_0000n, 0x800000n);
    vm2p2.map(0x7000_0000n, 0x802000n);
    iommu.bindPgtablePasid(RID1, PASID_A, domain2, { flptr: vm1p1.root });
    iommu.bindPgtablePasid(RID1, PASID_B, domain2, { flptr: vm1p2.root });
    iommu.bindPgtablePasid(RID1, PASID_C, domain3, { flptr: vm2p1.root });
    iommu.bindPgtablePasid(RID2, PASID_A, domain3, { flptr: vm2p2.root, levels: 5 });

    const t = iommu.inspect();
    const byDid = new Map(t.domains.map((d) => [d.did, d]));
    expect(routes(byDid.get(domain1.did)!.routes)).toEqual(['00:01.0:second-level']);
    expect(routes(byDid.get(domain2.did)!.routes)).toEqual([
      '00:01.0/10:second-level',
      `00:01.0/20:nested^${domain2.did}`,
      `00:01.0/21:nested^${domain2.did}`,
    ]);
    expect(routes(byDid.get(domain3.did)!.routes)).toEqual([
      '00:01.0/11:second-level',
      `00:01.0/22:nested^${domain3.did}`,
      '00:02.0:second-level',
      `00:02.0/20:nested^${domain3.did}`,
    ]);
    const nested = byDid.get(domain3.did)!.routes.find((r) => r.rid === RID2 && r.pasid === PASID_A)!;
    expect(nested).toMatchObject({ flptr: '0x200000', flLevels: 5 });

    // Each nested route translates through its own process table and its VM's second level.
    expect(iommu.translate({ rid: RID1, pasid: PASID_A, addr: 0x7000_0000n })).toBe(G + 0x800000);
    expect(iommu.translate({ rid: RID1, pasid: PASID_B, addr: 0x7000_0000n })).toBe(G + 0x801000);
    expect(iommu.translate({ rid: RID1, pasid: PASID_C, addr: 0x7000_0000n })).toBe(G + 0x1800000);
    expect(iommu.translate({ rid: RID2, pasid: PASID_A, addr: 0x7000_0000n })).toBe(G + 0x1802000);

    // Unbinding removes exactly that route.
    iommu.unbindPgtablePasid(RID1, PASID_B);
    expect(routes(iommu.inspect().domains.find((d) => d.did === domain2.did)!.routes)).toEqual([
      '00:01.0/10:second-level',
      `00:01.0/20:nested^${domain2.did}`,
    ]);
    expect(iommu.translate({ rid: RID1, pasid: PASID_B, addr: 0x7000_0000n })).toBe(-1);
    expect(iommu.lastFault().reason).toBe(0x59);
  });
});
