/**
 * Limits a hostile client cannot get round (docs/reliability.md §4.1), against a
 * spawned `vsva host` with small limits: quota 0 is the bounded default quota, not the rest of
 * the capacity; VMs per uid (EUSERS); connections in total (EMFILE) and per uid (EUSERS),
 * answered on the refused connection's first request; every refusal leaves the host serving
 * the VMs it has, and a slot freed is usable again.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import type { FrontendClient } from '../../../vhost/roles/frontend.js';
import { waitFor } from '../../support/wait.js';
import { errnoOf, handshaken, vmClient } from './limits-client.js';

let host: StartedHost | null = null;
const clients: FrontendClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await host?.close();
  host = null;
});

async function own(fe: FrontendClient): Promise<{ set: { quota: number } }> {
  return (JSON.parse((await fe.call('GET_STATE')).json) as { vms: { set: { quota: number } }[] }).vms[0]!;
}

/** A handshaken connection, or the errno its handshake got. */
async function tryConnect(socket: string): Promise<FrontendClient | string> {
  try {
    const fe = await handshaken(socket);
    clients.push(fe);
    return fe;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

describe('VM limits', () => {
  it('quota 0 gets the default quota, not the rest; VMs per uid past the cap: EUSERS', async () => {
    host = await startHost({ pasidBits: 8, graceMs: 0, defaultVmQuota: 16, maxVmsPerUid: 3 });
    const a = await vmClient(host.socket, 'q0-a', 0);
    clients.push(a);
    expect((await own(a)).set.quota).toBe(16);
    const b = await vmClient(host.socket, 'q0-b', 0);
    clients.push(b);
    expect((await own(b)).set.quota).toBe(16);
    const s = await host.snapshot();
    expect(s.capacity).toEqual({ total: 255, available: 255 - 32 });
    const c = await vmClient(host.socket, 'explicit', 100);
    clients.push(c);
    expect((await own(c)).set.quota).toBe(100);
    // A fourth VM from this uid.
    const d = await handshaken(host.socket);
    clients.push(d);
    expect(await errnoOf(d.call('VM_SETUP', { name: 'fourth', pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) }))).toBe('EUSERS');
    // The others still work; a released VM frees its slot.
    expect((await a.call('PASID_ALLOC', { min: 1, max: 255 })).pasid).toBeGreaterThan(0);
    b.close();
    await waitFor(async () => (await host!.snapshot()).vms.length === 2, { what: 'q0-b released' });
    expect((await d.setupVm({ name: 'fourth', pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) })).vm_id).toBeGreaterThan(0);
    c.close();
    await waitFor(async () => (await host!.snapshot()).capacity.available === 255 - 16 - 1, { what: 'explicit released' });
  }, 60_000);

  it('quota 0 when less than the default is left: what is left', async () => {
    host = await startHost({ pasidBits: 5, graceMs: 0, defaultVmQuota: 16 });
    const big = await vmClient(host.socket, 'big', 25);
    clients.push(big);
    const rest = await vmClient(host.socket, 'rest', 0);
    clients.push(rest);
    expect((await own(rest)).set.quota).toBe(6);
    const none = await handshaken(host.socket);
    clients.push(none);
    expect(await errnoOf(none.call('VM_SETUP', { name: 'none', pasid_quota: 0, flags: 1, session_token: new Uint8Array(16) }))).toBe('ENOSPC');
  }, 60_000);
});

describe('connection limits', () => {
  it('past maxConnections a new connection is answered EMFILE; the host keeps serving; a freed slot is reusable', async () => {
    host = await startHost({ graceMs: 0, connectionLimits: { maxConnections: 8, maxConnectionsPerUid: 64 } });
    const vm = await vmClient(host.socket, 'served'); // main + backend channel: 2
    clients.push(vm);
    const held: FrontendClient[] = [];
    for (let i = 0; i < 6; i++) {
      const c = await tryConnect(host.socket);
      expect(typeof c).not.toBe('string');
      held.push(c as FrontendClient);
    }
    expect(await tryConnect(host.socket)).toBe('EMFILE');
    expect(await tryConnect(host.socket)).toBe('EMFILE');
    expect((await vm.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
    held[0]!.close();
    let again: FrontendClient | string = 'EMFILE';
    await waitFor(async () => {
      again = await tryConnect(host!.socket);
      return typeof again !== 'string';
    }, { what: 'a freed connection slot' });
    expect(typeof again).not.toBe('string');
  }, 60_000);

  it('past maxConnectionsPerUid a new connection from the same uid is answered EUSERS', async () => {
    host = await startHost({ graceMs: 0, connectionLimits: { maxConnectionsPerUid: 4 } });
    const vm = await vmClient(host.socket, 'served');
    clients.push(vm);
    for (let i = 0; i < 2; i++) expect(typeof (await tryConnect(host.socket))).not.toBe('string');
    expect(await tryConnect(host.socket)).toBe('EUSERS');
    expect((await vm.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
  }, 60_000);

  it('refuses limit values out of range (EINVAL) before listening', async () => {
    expect(await errnoOf(startHost({ spawn: false, connectionLimits: { maxConnections: 0 } }))).toBe('EINVAL');
    expect(await errnoOf(startHost({ spawn: false, connectionLimits: { halfFrameTimeoutMs: -1 } }))).toBe('EINVAL');
    expect(await errnoOf(startHost({ spawn: false, maxVmsPerUid: 0 }))).toBe('EINVAL');
    expect(await errnoOf(startHost({ spawn: false, defaultVmQuota: 1.5 }))).toBe('EINVAL');
  });
});
