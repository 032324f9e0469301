/**
 * The core flow of the host service in-process (in-memory connections, in-process guest RAM):
 * setup → memory table → map → alloc → bind → invalidate → DMA → fault / page request →
 * snapshot → disconnect.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { HostServer } from '../../../host/server/index.js';
import { TestGuest, errnoOf } from '../../integration/host/client.js';

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
    await new Promise((r) => setTimeout(r, 10));
    expect(g.events.some((e) => e.name === 'FAULT' && e.msg.reason === 0x71 && e.msg.pasid === pasid)).toBe(true);

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
    await new Promise((r) => setTimeout(r, 20));
    expect(host.vms).toHaveLength(0);
    expect(host.core.capacity.available).toBe(before + 64);
    expect(host.iommu.listDevices()).toHaveLength(0);
    expect(host.memory.listRegions().filter((r) => r.name.startsWith('vm0'))).toHaveLength(0);

    const { FrontendClient } = await import('../../../vhost/index.js');
    const fe = await FrontendClient.connect({ connect: host.connector() });
    await fe.handshake();
    expect(await errnoOf(fe.call('PASID_ALLOC', { min: 1, max: 10 }))).toBe('EPERM');
    fe.close();
  });
});
