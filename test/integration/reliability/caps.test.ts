/**
 * Bounded resources (docs/reliability.md §4): every guest-controlled quantity the host keeps
 * has a cap, and the request past it fails with the documented errno and changes nothing.
 * In-process host, in-memory connections. (Pending page requests past
 * --max-page-requests → EAGAIN is covered in test/unit/host/container-errors.test.ts; the
 * guest-side queue caps in test/property/fuzz.)
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostServer, MAX_DEVICES, MAX_DOMAINS, MAX_MAPPINGS } from '../../../host/server/index.js';
import { FrontendClient, DEFAULT_PROTOCOL_FEATURES, MAX_REQUEST_PAYLOAD, VHOST_USER_HDR_SIZE, writeHeader, DeviceKind } from '../../../vhost/index.js';
import { FrontendMessages } from '../../../vhost/messages/catalogue.js';
import { CACHE_INVALIDATE_MAX_ENTRIES } from '../../../vhost/messages/invalidate.js';
import { TestGuest, errnoOf } from '../host/client.js';
import { RawPeer, status } from '../../unit/vhost/raw-peer.js';
import { snapshotInvariants, vmIn } from './helpers.js';

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

async function guest(host: HostServer, name = 'cap', quota = 4): Promise<TestGuest> {
  const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc', quota, devices: [{ rid: 0x18 }] });
  open.push(g);
  return g;
}

function stable(host: HostServer, name: string): string {
  return JSON.stringify({ ...vmIn(host.snapshot(), name), stats: null });
}

describe('caps on what a guest can make the host hold', () => {
  it(`devices: ${MAX_DEVICES} per VM, then ENOSPC`, async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await guest(host);
    for (let i = 1; i < MAX_DEVICES; i++) await g.fe.call('DEVICE_ADD', { rid: 0x100 + i, kind: DeviceKind.PF, pasid_width: 0, caps: 0 });
    const before = stable(host, 'cap');
    expect(await errnoOf(g.fe.call('DEVICE_ADD', { rid: 0x200, kind: DeviceKind.PF, pasid_width: 0, caps: 0 }))).toBe('ENOSPC');
    expect(stable(host, 'cap')).toBe(before);
  });

  it(`domains: ${MAX_DOMAINS} per VM (domain 0 included), then ENOSPC`, async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await guest(host);
    for (let i = 1; i < MAX_DOMAINS; i++) await g.fe.call('DOMAIN_ALLOC', {});
    expect(await errnoOf(g.fe.call('DOMAIN_ALLOC', {}))).toBe('ENOSPC');
    expect((vmIn(host.snapshot(), 'cap') as unknown as { domains: unknown[] }).domains).toHaveLength(MAX_DOMAINS);
  });

  it(`DMA mappings: ${MAX_MAPPINGS} per VM, then ENOSPC (an identical re-MAP is still a success)`, async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await guest(host);
    const dom = (await g.fe.call('DOMAIN_ALLOC', {})).domain;
    const existing = (vmIn(host.snapshot(), 'cap') as unknown as { domains: { mappings: number }[] }).domains.reduce((n, d) => n + d.mappings, 0);
    const todo = MAX_MAPPINGS - existing;
    for (let i = 0; i < todo; i += 4096) {
      const batch: Promise<unknown>[] = [];
      for (let k = i; k < Math.min(todo, i + 4096); k++) batch.push(g.fe.call('DMA_MAP', { domain: dom, flags: 1, iova: BigInt(k) << 12n, gpa: 0n, size: 0x1000n }));
      await Promise.all(batch);
    }
    expect(await errnoOf(g.fe.call('DMA_MAP', { domain: dom, flags: 1, iova: BigInt(todo) << 12n, gpa: 0n, size: 0x1000n }))).toBe('ENOSPC');
    await g.fe.call('DMA_MAP', { domain: dom, flags: 1, iova: 0n, gpa: 0n, size: 0x1000n });
  }, 20_000);

  it('PASIDs: the VM set quota, then ENOSPC; a quota above the free capacity is ENOSPC at VM_SETUP', async () => {
    const host = new HostServer({ graceMs: 0, pasidBits: 4 });
    open.push(host);
    const g = await guest(host, 'cap', 3);
    for (let i = 0; i < 3; i++) await g.alloc();
    expect(await errnoOf(g.alloc())).toBe('ENOSPC');
    const fe = await FrontendClient.connect({ connect: host.connector() });
    open.push(fe);
    await fe.handshake();
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'big', pasid_quota: 13, flags: 1, session_token: new Uint8Array(16) }))).toBe('ENOSPC');
    expect(snapshotInvariants(host.snapshot())).toEqual([]);
  });

  it('VMs: maxVms per host (connected or in grace), then ENOSPC at VM_SETUP', async () => {
    const host = new HostServer({ graceMs: 0, maxVms: 2 });
    open.push(host);
    await guest(host, 'a', 1);
    await guest(host, 'b', 1);
    const fe = await FrontendClient.connect({ connect: host.connector() });
    open.push(fe);
    await fe.handshake();
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'c', pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) }))).toBe('ENOSPC');
    expect(host.snapshot().vms.map((v) => v.name)).toEqual(['a', 'b']);
  });

  it(`CACHE_INVALIDATE batches: ${CACHE_INVALIDATE_MAX_ENTRIES} entries, a count past it is EINVAL and handles nothing`, async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await guest(host);
    const peer = new RawPeer(await host.connector()());
    const feats = new Uint8Array(8);
    new DataView(feats.buffer).setBigUint64(0, DEFAULT_PROTOCOL_FEATURES, true);
    peer.send(FrontendMessages.SET_PROTOCOL_FEATURES.code, 0x9, feats);
    await peer.waitFor(1);
    peer.received.length = 0;
    // The count is checked before the session (EINVAL before EPERM): no VM needed.
    const n = CACHE_INVALIDATE_MAX_ENTRIES + 1;
    const payload = new Uint8Array(8 + 64 * n);
    new DataView(payload.buffer).setUint32(0, n, true);
    peer.send(FrontendMessages.CACHE_INVALIDATE.code, 0x9, payload);
    const [m] = await peer.waitFor(1);
    expect(status(m!)).toBe(-22);
    expect(peer.closed).toBe(false);
    peer.transport.close();
    expect(snapshotInvariants(host.snapshot())).toEqual([]);
    expect(g.fe.closed).toBe(false);
  });

  it(`message size: a request header announcing more than ${MAX_REQUEST_PAYLOAD} bytes closes that connection only (E2BIG)`, async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await guest(host);
    const peer = new RawPeer(await host.connector()());
    const hdr = Buffer.alloc(VHOST_USER_HDR_SIZE);
    writeHeader(hdr, 0, FrontendMessages.DEVICE_DMA.code, 0x9, MAX_REQUEST_PAYLOAD + 1);
    peer.transport.write(hdr);
    await peer.waitFor(1);
    expect(peer.closed).toBe(true);
    expect(peer.received).toEqual([]);
    // The VM on its own connection is unaffected.
    expect(await g.alloc()).toBeGreaterThan(0);
  });

  it('memory regions: at most 8 in SET_MEM_TABLE (EINVAL past it)', async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await guest(host);
    const region = { guest_phys_addr: 0n, memory_size: 0x1000n, userspace_addr: 0n, mmap_offset: 0n, path: g.ram.path };
    const regions = Array.from({ length: 9 }, (_, i) => ({ ...region, guest_phys_addr: BigInt(i) << 12n }));
    const before = stable(host, 'cap');
    expect(await errnoOf(g.fe.call('SET_MEM_TABLE', { regions }))).toBe('EINVAL');
    expect(stable(host, 'cap')).toBe(before);
  });
});
