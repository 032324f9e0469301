/**
 * The core flow of the host service in-process (in-memory connections, in-process guest RAM):
 * setup → memory table → map → alloc → bind → invalidate → DMA → fault / page request →
 * snapshot → disconnect.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { TestGuest, errnoOf } from '../../../integration/host/client.js';
import { waitFor } from '../../../support/wait.js';

const RID = 0x18; // 00:03.0
const servers: HostServer[] = [];
const guests: TestGuest[] = [];

async function setup(graceMs = 0) {
  const host = new HostServer({ graceMs, pageRequestTimeoutMs: 2000 });
  servers.push(host);
  const start = async (name: string, extra: Partial<Parameters<typeof TestGuest.start>[0]> = {}) => {
    const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc', ...extra });
    guests.push(g);
    return g;
  };
  return { host, start };
}

afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

describe('host service core flow (in-process)', () => {
  it('binds a guest first-level table and a pf device DMAs through it into guest RAM', async () => {
    const { start } = await setup();
    const g = await start('vm0');
    const pasid = await g.alloc();
    const root = g.fl.newRoot();
    g.fl.map(root, 0x7000_0000n, 0x20_0000);
    g.ram.write(0x20_0000, new TextEncoder().encode('hello'));
    await g.bind(RID, pasid, root, 77);
    let vm = await g.vm();
    const p = vm.pasids.find((x) => x.hpasid === pasid)!;
    expect(p).toMatchObject({ gpasid: 77, state: 'active', refs: 3, users: ['iommu', 'kvm'], bindings: [{ bdf: '00:03.0', pgtt: 'nested', flptr: `0x${root.toString(16)}` }] });

    const r = await g.read(RID, 0x7000_0000n, 5, pasid);
    expect(r.status).toBe(0);
    expect(new TextDecoder().decode(r.data)).toBe('hello');
    const w = await g.write(RID, 0x7000_0010n, new Uint8Array([1, 2, 3]), pasid);
    expect(w.status).toBe(0);
    expect([...g.ram.read(0x20_0010, 3)]).toEqual([1, 2, 3]);

    // An unmapped GVA faults: FAULT on the backend channel and a fault in the reply.
    const f = await g.read(RID, 0x7100_0000n, 4, pasid);
    expect(f.status).toBe(1);
    expect(f.reason).toBe(0x71);
    await waitFor(() => g.events.some((e) => e.name === 'FAULT' && e.msg.reason === 0x71 && e.msg.pasid === pasid), { what: 'FAULT 0x71 on the backend channel' });

    // Unbind → refs back to 1, no users, no bindings.
    await g.unbind(RID, pasid);
    vm = await g.vm();
    expect(vm.pasids.find((x) => x.hpasid === pasid)).toMatchObject({ gpasid: null, state: 'idle', refs: 1, users: [], bindings: [] });
    expect(await g.free(pasid)).toBe(1);
    vm = await g.vm();
    expect(vm.pasids).toEqual([]);
  });

  it('turns a fault into a page request with PRI enabled and retries after SUCCESS', async () => {
    const { start } = await setup();
    const g = await start('vm0');
    await g.fe.call('DEVICE_CONFIG', { rid: RID, flags: 3 });
    const pasid = await g.alloc();
    const root = g.fl.newRoot();
    g.fl.map(root, 0x1000n, 0x30_0000);
    await g.bind(RID, pasid, root, pasid);
    g.onPageRequest = (ev) => {
      // The guest "faults the page in", then flushes and answers.
      g.fl.map(root, ev.msg.addr, 0x31_0000);
    };
    g.autoRespond = 0;
    g.ram.write(0x31_0000, new Uint8Array([9, 8, 7]));
    const r = await g.read(RID, 0x5000n, 3, pasid);
    expect(r.status).toBe(0);
    expect([...r.data!]).toEqual([9, 8, 7]);
    expect(g.events.filter((e) => e.name === 'PAGE_REQUEST')).toHaveLength(1);
    expect(g.events.some((e) => e.name === 'FAULT')).toBe(false);

    g.autoRespond = 1;
    g.onPageRequest = null;
    const f = await g.read(RID, 0x9000n, 3, pasid);
    expect(f.status).toBe(1);
    expect(f.reason).toBe(0x71);
  });

  it('refuses requests before VM_SETUP with EPERM and releases a VM at disconnect', async () => {
    const { host, start } = await setup(0);
    const g = await start('vm0');
    const before = host.core.capacity.available;
    const pasid = await g.alloc();
    await g.bind(RID, pasid, g.fl.newRoot(), 5);
    g.close();
    await waitFor(() => host.vms.length === 0, { what: 'VM released' });
    expect(host.core.capacity.available).toBe(before + 64);
    expect(host.iommu.listDevices()).toHaveLength(0);
    expect(host.memory.listRegions().filter((r) => r.name.startsWith('vm0'))).toHaveLength(0);

    const { FrontendClient } = await import('../../../../vhost/index.js');
    const fe = await FrontendClient.connect({ connect: host.connector() });
    await fe.handshake();
    expect(await errnoOf(fe.call('PASID_ALLOC', { min: 1, max: 10 }))).toBe('EPERM');
    fe.close();
  });

  it('feeds the dashboard: counters per VM, trace events, and the disconnect-vm control action', async () => {
    const { host, start } = await setup(5000);
    const events: string[] = [];
    host.trace.on((e) => events.push(`${e.kind}:${e.vm ?? '-'}`));
    const g = await start('vm0');
    const pasid = await g.alloc();
    await g.bind(RID, pasid, g.fl.newRoot(), 3);
    await g.invalidate([{ cache: 1, granularity: 1, flags: 1, pasid: BigInt(pasid) }]);
    await g.read(RID, 0x1000n, 4, pasid);
    const src = host.monitorSource();
    const st = src.stats!();
    expect(st.vms.vm0).toMatchObject({ allocs: 1, binds: 1, invalidations: 1, faults: 1 });
    expect(st.total.allocs).toBe(1);
    expect(typeof st.total.iotlbMisses).toBe('number');
    for (const k of ['vm:vm0', 'alloc:vm0', 'bind:vm0', 'invalidate:vm0', 'dma:vm0', 'message:vm0']) expect(events).toContain(k);
    expect(await src.control!('disconnect-vm', 'vm0')).toEqual({ disconnected: 'vm0' });
    await waitFor(async () => ((await src.snapshot()) as { vms: { connected: boolean }[] }).vms[0]!.connected === false, { what: 'vm0 disconnected' });
    await expect(src.control!('disconnect-vm', 'nope')).rejects.toThrow(/ENOENT/);
  });

  it('attaches RID+PASID second-level and pass-through routes, maps and unmaps domains, reports nesting info', async () => {
    const { start } = await setup();
    const g = await start('vm0');
    const info = await g.fe.call('GET_NESTING_INFO');
    expect(info).toMatchObject({ format: 1, features: 0xf, addr_width: 48, pasid_bits: 20 });
    expect((info.ecap_reg >> 26n) & 1n).toBe(1n); // NEST
    expect((info.ecap_reg >> 40n) & 1n).toBe(1n); // PASID

    const dom = (await g.fe.call('DOMAIN_ALLOC', {})).domain;
    expect(dom).toBe(1);
    await g.fe.call('DMA_MAP', { domain: dom, flags: 3, iova: 0x8000_0000n, gpa: 0x30_0000n, size: 0x2000n });
    const sl = await g.alloc();
    const pt = await g.alloc();
    await g.fe.call('ATTACH', { rid: RID, pgtt: 2, flags: 1, pasid: sl, domain: dom });
    await g.fe.call('ATTACH', { rid: RID, pgtt: 4, flags: 1, pasid: pt, domain: 0 });
    g.ram.write(0x30_1000, new Uint8Array([5, 6]));
    expect([...(await g.read(RID, 0x8000_1000n, 2, sl)).data!]).toEqual([5, 6]);
    expect([...(await g.read(RID, 0x30_1000n, 2, pt)).data!]).toEqual([5, 6]);
    const vm = await g.vm();
    expect(vm.pasids.map((p) => [p.hpasid, p.refs, p.users, p.bindings])).toEqual([
      [sl, 2, ['iommu'], [{ bdf: '00:03.0', pgtt: 'sl' }]],
      [pt, 2, ['iommu'], [{ bdf: '00:03.0', pgtt: 'pt' }]],
    ]);
    // The memory table may be re-announced unchanged, not changed while mapped.
    await g.fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(g.ram.size), userspace_addr: 0n, mmap_offset: 0n, path: g.ram.path }] });
    // Unmap: nothing in range → 0 bytes; the whole mapping → its size; DMA then faults.
    expect(await g.fe.call('DMA_UNMAP', { domain: dom, iova: 0x9000_0000n, size: 0x1000n })).toEqual({ unmapped: 0n });
    expect(await g.fe.call('DMA_UNMAP', { domain: dom, iova: 0x8000_0000n, size: 0x10_0000n })).toEqual({ unmapped: 0x2000n });
    expect((await g.read(RID, 0x8000_1000n, 2, sl)).status).toBe(1);
    await g.fe.call('DETACH', { rid: RID, pgtt: 0, flags: 1, pasid: sl, domain: dom });
    await g.fe.call('DOMAIN_FREE', { domain: dom });
    // The RID itself: detach from domain 0, then DMA without PASID faults; re-attach restores it.
    expect((await g.read(RID, 0x30_1000n, 2)).status).toBe(0);
    await g.fe.call('DETACH', { rid: RID, pgtt: 0, flags: 0, pasid: 0, domain: 0 });
    expect((await g.read(RID, 0x30_1000n, 2)).status).toBe(1);
    await g.fe.call('ATTACH', { rid: RID, pgtt: 0, flags: 0, pasid: 0, domain: 0 });
    expect((await g.read(RID, 0x30_1000n, 2)).status).toBe(0);
  });
});
