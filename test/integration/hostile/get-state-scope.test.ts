/**
 * State a VM can see is its own (docs/protocol.md §10.9): over a real socket to a spawned
 * `vsva host`, GET_STATE on a VM's connection shows that VM only; before VM_SETUP it is EPERM;
 * the whole host needs the monitor token (wrong token EACCES, malformed EINVAL); the harness's
 * HostHandle.snapshot() still reads every VM; the host keeps serving the VMs throughout.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { HostServer } from '../../../host/server/index.js';
import type { FrontendClient } from '../../../vhost/roles/frontend.js';
import type { HostSnapshot } from '../../../src/api/types.js';
import { errnoOf, handshaken, vmClient } from './limits-client.js';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

const TOKEN = 'scope-test-monitor-token-0001';

type Page = HostSnapshot & { next: number | null; vmCount: number; iommu?: unknown };

let host: StartedHost;
let alpha: FrontendClient;
let beta: FrontendClient;
const opened: FrontendClient[] = [];

beforeAll(async () => {
  host = await startHost({ graceMs: 0, monitorToken: TOKEN });
  alpha = await vmClient(host.socket, 'alpha');
  beta = await vmClient(host.socket, 'beta');
  opened.push(alpha, beta);
  await alpha.call('PASID_ALLOC', { min: 1, max: 0xfffff });
  await beta.call('PASID_ALLOC', { min: 1, max: 0xfffff });
  await beta.call('PASID_ALLOC', { min: 1, max: 0xfffff });
}, 60_000);

afterAll(async () => {
  for (const c of opened) c.close();
  await host?.close();
});

describe('GET_STATE scope', () => {
  it("a VM's connection sees that VM only: no other VM's name, PASIDs or the host-wide counters", async () => {
    const text = (await alpha.call('GET_STATE')).json;
    const s = JSON.parse(text) as Page;
    expect(s.vms.map((v) => v.name)).toEqual(['alpha']);
    expect(s.vms[0]!.pasids).toHaveLength(1);
    expect(s.pasidBits).toBe(20);
    expect(s.capacity.total).toBe(2 ** 20 - 1);
    expect(s.iommu).toBeUndefined();
    expect(text).not.toContain('beta');
    const p = JSON.parse((await beta.call('GET_STATE', { cursor: 0, max_vms: 64 })).json) as Page;
    expect(p.vms.map((v) => v.name)).toEqual(['beta']);
    expect(p.vmCount).toBe(1);
    expect(p.next).toBeNull();
    expect(p.vms[0]!.pasids).toHaveLength(2);
  });

  it('a page past its own VM is empty, then EINVAL', async () => {
    const id = (JSON.parse((await alpha.call('GET_STATE')).json) as { vms: { id: number }[] }).vms[0]!.id;
    expect((JSON.parse((await alpha.call('GET_STATE', { cursor: id, max_vms: 1 })).json) as Page).vms).toHaveLength(1);
    expect((JSON.parse((await alpha.call('GET_STATE', { cursor: id + 1, max_vms: 1 })).json) as Page).vms).toHaveLength(0);
    expect(await errnoOf(alpha.call('GET_STATE', { cursor: id + 2, max_vms: 1 }))).toBe('EINVAL');
  });

  it('before VM_SETUP: EPERM; a wrong monitor token EACCES, a malformed one EINVAL; the right one: every VM', async () => {
    const c = await handshaken(host.socket);
    opened.push(c);
    expect(await errnoOf(c.call('GET_STATE'))).toBe('EPERM');
    expect(await errnoOf(c.call('GET_STATE', { cursor: 0, max_vms: 8 }))).toBe('EPERM');
    expect(await errnoOf(c.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: 'not-the-token-0000000' }))).toBe('EACCES');
    expect(await errnoOf(c.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: TOKEN.slice(0, -1) }))).toBe('EACCES');
    // Malformed tokens never leave the client (the codec refuses them); on the wire: EINVAL.
    expect(await errnoOf(c.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: 'short' }))).toBe('EINVAL');
    const whole = JSON.parse((await c.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: TOKEN })).json) as Page;
    expect(whole.vms.map((v) => v.name)).toEqual(['alpha', 'beta']);
    expect(whole.vmCount).toBe(2);
    expect(whole.iommu).toBeDefined();
    // A VM's connection may present the token too.
    const fromVm = JSON.parse((await alpha.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: TOKEN })).json) as Page;
    expect(fromVm.vms.map((v) => v.name)).toEqual(['alpha', 'beta']);
    // The refused connection still works, and so do the VMs.
    await c.setupVm({ name: 'gamma', pasid_quota: 2, flags: 1, session_token: new Uint8Array(16) });
    expect((JSON.parse((await c.call('GET_STATE')).json) as Page).vms.map((v) => v.name)).toEqual(['gamma']);
    expect((await beta.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
  });

  it("the harness's snapshot() reads the whole host with the handle's token", async () => {
    const s = await host.snapshot();
    expect(s.vms.map((v) => v.name)).toEqual(expect.arrayContaining(['alpha', 'beta']));
    expect(host.monitorToken).toBe(TOKEN);
  });

  it('a host without a monitor token serves no whole-host view: EACCES', async () => {
    const socket = path.join(os.tmpdir(), `vsva-scope-${process.pid}-${randomBytes(3).toString('hex')}.sock`);
    const bare = new HostServer({ graceMs: 0 });
    await bare.listen(socket);
    try {
      const c = await vmClient(socket, 'solo');
      expect(await errnoOf(c.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: TOKEN }))).toBe('EACCES');
      expect((JSON.parse((await c.call('GET_STATE')).json) as Page).vms.map((v) => v.name)).toEqual(['solo']);
      c.close();
    } finally {
      await bare.close();
    }
  });
});
