/**
 * `vsva host` as a real child process (startHost), two VMs over the real Unix socket with guest
 * RAM in shared files: concurrent allocation, binding, invalidation, DMA and page faults;
 * snapshots with each VM's PASIDs (state, refs, users, bindings) and the reference counts of "IOASID Extensions for SIOV" (Jacob Pan, LPC 2020)
 * at each step; isolation between the VMs.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import type { HostSnapshot } from '../../../src/api/types.js';
import { TestGuest, errnoOf } from './client.js';
import { waitFor } from '../../support/wait.js';

const PF = 0x18; // 00:03.0
const ADI = 0x20; // 00:04.0
let host: StartedHost;
let a: TestGuest;
let b: TestGuest;

/** The docs/design.md §7 fields only (extras such as counters move with every request). */
function contract(s: HostSnapshot): HostSnapshot {
  return {
    pasidBits: s.pasidBits,
    capacity: s.capacity,
    vms: s.vms.map((v) => ({ name: v.name, connected: v.connected, set: v.set, devices: v.devices, pasids: v.pasids })),
  };
}

function vmOf(s: HostSnapshot, name: string) {
  const v = s.vms.find((x) => x.name === name);
  if (!v) throw new Error(`no VM ${name}`);
  return v;
}

beforeAll(async () => {
  host = await startHost({ graceMs: 300, pageRequestTimeoutMs: 3000 });
  [a, b] = await Promise.all([
    TestGuest.start({ name: 'vmA', path: host.socket, quota: 16, devices: [{ rid: PF }, { rid: ADI, kind: 'adi' }] }),
    TestGuest.start({ name: 'vmB', path: host.socket, quota: 16, devices: [{ rid: PF }] }),
  ]);
});

afterAll(async () => {
  a?.close();
  b?.close();
  await host?.close();
  a?.ram.backing.close();
  b?.ram.backing.close();
});

/** One VM's workload: n PASIDs, each bound with guest PASID 100+i, written and read by DMA. */
async function workload(g: TestGuest, n: number, tag: number) {
  const pasids: number[] = [];
  for (let i = 0; i < n; i++) pasids.push(await g.alloc());
  const roots: number[] = [];
  for (let i = 0; i < n; i++) {
    const root = g.fl.newRoot();
    roots.push(root);
    g.fl.map(root, 0x4000_0000n, 0x20_0000 + i * 0x1000);
    await g.bind(PF, pasids[i]!, root, 100 + i);
  }
  await Promise.all(pasids.map(async (p, i) => {
    const data = new Uint8Array([tag, i, 0xaa, 0x55]);
    const w = await g.write(PF, 0x4000_0000n, data, p);
    expect(w.status).toBe(0);
    const r = await g.read(PF, 0x4000_0000n, 4, p);
    expect([...r.data!]).toEqual([...data]);
    expect([...g.ram.read(0x20_0000 + i * 0x1000, 4)]).toEqual([...data]);
  }));
  return { pasids, roots };
}

describe('vsva host with two VMs over a real socket', () => {
  it('serves two VMs concurrently: alloc, bind, DMA, invalidate, page faults; snapshots show refs and users', async () => {
    const [ra, rb] = await Promise.all([workload(a, 3, 0xa), workload(b, 3, 0xb)]);
    let s = await host.snapshot();
    expect(s.pasidBits).toBe(20);
    for (const [name, r] of [['vmA', ra], ['vmB', rb]] as const) {
      const v = vmOf(s, name);
      expect(v.connected).toBe(true);
      expect(v.set).toEqual({ quota: 16, used: 3 });
      expect(v.pasids.map((p) => p.hpasid).sort()).toEqual([...r.pasids].sort());
      for (const [i, hp] of r.pasids.entries()) {
        // "IOASID Extensions for SIOV" (LPC 2020) after bind: alloc 1 + iommu 1 + kvm 1.
        expect(v.pasids.find((p) => p.hpasid === hp)).toEqual({
          hpasid: hp, gpasid: 100 + i, state: 'active', refs: 3, users: ['iommu', 'kvm'],
          bindings: [{ bdf: '00:03.0', pgtt: 'nested', flptr: `0x${r.roots[i]!.toString(16)}` }],
        });
      }
    }
    // Both VMs use guest PASIDs 100..102, mapped to distinct host PASIDs.
    expect(new Set([...ra.pasids, ...rb.pasids]).size).toBe(6);
    expect(vmOf(s, 'vmA').devices).toEqual([{ bdf: '00:03.0', kind: 'pf' }, { bdf: '00:04.0', kind: 'adi' }]);

    // Invalidation: with ATS enabled the pf caches translations in its device-TLB. The guest
    // unmaps a page; the IOTLB flush alone leaves the device-TLB stale; the device-TLB flush ends it.
    const p0 = ra.pasids[0]!;
    await a.fe.call('DEVICE_CONFIG', { rid: PF, flags: 2 });
    expect((await a.read(PF, 0x4000_0000n, 4, p0)).status).toBe(0);
    a.fl.unmap(ra.roots[0]!, 0x4000_0000n);
    const range = { flags: 1, pasid: BigInt(p0), addr: 0x4000_0000n, granule_size: 4096n, nb_granules: 1n, granularity: 2 };
    expect(await a.invalidate([{ ...range, cache: 1 }])).toEqual({ handled: 1, first_error: 0 });
    expect((await a.read(PF, 0x4000_0000n, 4, p0)).status).toBe(0);
    expect(await a.invalidate([{ ...range, cache: 2, rid: PF }])).toEqual({ handled: 1, first_error: 0 });
    const f = await a.read(PF, 0x4000_0000n, 4, p0);
    expect(f).toMatchObject({ status: 1, reason: 0x71, pasid: p0, fault_addr: 0x4000_0000n });

    // Page fault with PRI, concurrently in both VMs: the guest maps the page and answers SUCCESS.
    await Promise.all([a, b].map(async (g, k) => {
      const r = k === 0 ? ra : rb;
      await g.fe.call('DEVICE_CONFIG', { rid: PF, flags: 3 });
      g.onPageRequest = (ev) => g.fl.map(r.roots[1]!, ev.msg.addr, 0x28_0000);
      g.autoRespond = 0;
      g.ram.write(0x28_0000, new Uint8Array([k, 1, 2, 3]));
      const res = await g.read(PF, 0x5000_0000n, 4, r.pasids[1]);
      expect(res.status).toBe(0);
      expect([...res.data!]).toEqual([k, 1, 2, 3]);
      expect(g.events.filter((e) => e.name === 'PAGE_REQUEST').length).toBeGreaterThan(0);
    }));

    // ADI: the guest programs guest PASID 100; the VDCM translates it (find_by_spid) and holds 'vdcm'.
    // (The same PASID on two devices is one address space: the ADI is bound to the same table.)
    a.fl.map(ra.roots[0]!, 0x4000_1000n, 0x28_0000);
    await a.bind(ADI, p0, ra.roots[0]!, 100);
    s = await host.snapshot();
    // A second device binding: one more 'iommu' reference; BIND fired only at the first one.
    expect(vmOf(s, 'vmA').pasids.find((p) => p.hpasid === p0)).toMatchObject({ refs: 4, users: ['iommu', 'kvm'] });
    const adi = await a.read(ADI, 0x4000_1000n, 4, 100);
    expect(adi).toMatchObject({ status: 0 });
    expect(adi.data![1]).toBe(1);
    s = await host.snapshot();
    // Two device bindings (2 × iommu) + kvm + vdcm + the allocation.
    expect(vmOf(s, 'vmA').pasids.find((p) => p.hpasid === p0)).toMatchObject({ refs: 5, users: ['iommu', 'kvm', 'vdcm'], gpasid: 100 });

    // Unbind both devices: the last unbind fires UNBIND, which drops kvm and vdcm; refs back to 1.
    await a.unbind(ADI, p0);
    s = await host.snapshot();
    expect(vmOf(s, 'vmA').pasids.find((p) => p.hpasid === p0)).toMatchObject({ refs: 4, users: ['iommu', 'kvm', 'vdcm'] });
    await a.unbind(PF, p0);
    s = await host.snapshot();
    expect(vmOf(s, 'vmA').pasids.find((p) => p.hpasid === p0)).toEqual({ hpasid: p0, gpasid: null, state: 'idle', refs: 1, users: [], bindings: [] });
    expect(await a.free(p0)).toBe(1);
    s = await host.snapshot();
    expect(vmOf(s, 'vmA').pasids.some((p) => p.hpasid === p0)).toBe(false);
    expect(vmOf(s, 'vmB').pasids).toHaveLength(3);
  });

  it('keeps the VMs apart: B cannot free, bind, unbind or invalidate A’s PASIDs, nor reach A’s memory', async () => {
    const pa = await a.alloc();
    const root = a.fl.newRoot();
    a.fl.map(root, 0x6000_0000n, 0x3f_0000);
    await a.bind(PF, pa, root, 500);
    const before = contract(await host.snapshot());

    expect(await errnoOf(b.free(pa))).toBe('ENOENT');
    expect(await errnoOf(b.bind(PF, pa, b.fl.newRoot(), 501))).toBe('ENOENT');
    expect(await errnoOf(b.unbind(PF, pa))).toBe('ENOENT');
    expect(await b.invalidate([{ cache: 1, granularity: 1, flags: 1, pasid: BigInt(pa) }])).toEqual({ handled: 0, first_error: -2 });
    // B's pf tagged with A's PASID: B's device has no PASID entry for it, so the request faults
    // (0x59, PASID-table entry not present) — read nothing, write nothing into A's RAM — and
    // the fault goes to B only.
    a.ram.write(0x3f_0000, Uint8Array.of(0xa1, 0xa2, 0xa3, 0xa4));
    const aEvents = a.events.length;
    const bEvents = b.events.length;
    const rd = await b.read(PF, 0x6000_0000n, 4, pa);
    expect(rd).toMatchObject({ status: 1, reason: 0x59, flags: 1, pasid: pa, fault_addr: 0x6000_0000n });
    expect(rd.data).toBeUndefined();
    const wr = await b.write(PF, 0x6000_0000n, Uint8Array.of(0xb1, 0xb2, 0xb3, 0xb4), pa);
    expect(wr).toMatchObject({ status: 1, reason: 0x59, pasid: pa, fault_addr: 0x6000_0000n });
    expect([...a.ram.read(0x3f_0000, 4)]).toEqual([0xa1, 0xa2, 0xa3, 0xa4]);
    await waitFor(() => b.events.length >= bEvents + 2, { what: "B's two FAULTs" });
    expect(b.events.slice(bEvents).map((e) => [e.name, e.name === 'FAULT' ? e.msg.reason : null, e.msg.pasid])).toEqual([['FAULT', 0x59, pa], ['FAULT', 0x59, pa]]);
    expect(a.events.length).toBe(aEvents);
    // A's own device reaches the same GVA through the same PASID.
    expect([...(await a.read(PF, 0x6000_0000n, 4, pa)).data!]).toEqual([0xa1, 0xa2, 0xa3, 0xa4]);
    // B cannot announce A's RAM file as its own memory, nor map a GPA outside its memory table.
    expect(await errnoOf(b.fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0x1000_0000n, memory_size: 0x1000n, userspace_addr: 0n, mmap_offset: 0n, path: a.ram.path }] }))).toBe('EACCES');
    expect(await errnoOf(b.fe.call('DMA_MAP', { domain: 0, flags: 3, iova: 0x1000_0000n, gpa: 0x1000_0000n, size: 0x1000n }))).toBe('EFAULT');
    // B's device reaches only B's RAM: IOVAs beyond B's mapped memory fault.
    const r = await b.read(PF, BigInt(b.ram.size), 4);
    expect(r.status).toBe(1);

    expect(contract(await host.snapshot())).toEqual(before);

    // Even through its own nested binding, B's device reaches only what B's GPA domain maps: a
    // first-level table pointing at guest-physical memory B does not have faults, reads nothing.
    const pb = await b.alloc();
    const broot = b.fl.newRoot();
    b.fl.map(broot, 0x7000n, b.ram.size + 0x1000); // a GPA beyond B's RAM
    await b.bind(PF, pb, broot, 502);
    const far = await b.read(PF, 0x7000n, 4, pb);
    expect(far.status).toBe(1);
    expect(far.data).toBeUndefined();
    await b.unbind(PF, pb);
    await b.free(pb);
    await a.unbind(PF, pa);
    await a.free(pa);
  });
});
