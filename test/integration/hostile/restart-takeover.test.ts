/**
 * After a host restart a VM resumes its name and its RAM only with its session token
 * (docs/reliability.md "Host restart"): `vsva host` is SIGKILLed under a live VM; a hostile
 * client connects to the new host first and tries to take the VM's name (EEXIST) and to map
 * the VM's RAM file (EACCES: by descriptor; by path the name no longer exists — ENOENT); the
 * victim then comes back with its token, its RAM intact, and the hostile connection still works.
 * The registry on disk holds no token, only its hash, in a 0700 directory.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../../src/app/harness/start-guest.js';
import { FrontendClient } from '../../../vhost/roles/frontend.js';
import { nativeAvailable } from '../../../src/native/native.js';
import { scaled, waitFor } from '../../support/wait.js';
import { asyncErrorCodeOf as errnoOf } from '../../support/error-code.js';

const ZERO_TOKEN = new Uint8Array(16);
const MEM = 8 << 20;
const socket = path.join(os.tmpdir(), `vsva-takeover-${process.pid}-${randomBytes(3).toString('hex')}.sock`);
const stateDir = `${socket}.state`;
const hosts: StartedHost[] = [];
const clients: FrontendClient[] = [];
let victim: StartedGuest;


async function spawnHost(): Promise<StartedHost> {
  const h = await startHost({ socket, stateDir, graceMs: 500, reservationMs: scaled(60_000) });
  hosts.push(h);
  return h;
}

beforeAll(async () => {
  await spawnHost();
  // The victim reconnects slowly: the hostile client gets to the new host first.
  victim = await startGuest({
    socket,
    name: 'victim',
    viommu: 'vtd',
    memory: MEM,
    reconnect: { initialDelayMs: scaled(5000), maxDelayMs: scaled(5000), outageWaitMs: scaled(30_000), giveUpAfterMs: scaled(60_000) },
  });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await victim?.close().catch(() => undefined);
  for (const h of hosts) await h.close().catch(() => undefined);
  fs.rmSync(stateDir, { recursive: true, force: true });
});

describe('host restart: no takeover of a VM by name or by RAM file', () => {
  it('the hostile client gets neither the name nor the RAM; the victim comes back with both', async () => {
    const secret = Buffer.from('victim-secret-0123456789');
    await victim.memwrite(0x10_0000n, secret);
    const announcedPath = victim.ram.path;
    // The registry: 0700 directory, the token's hash only.
    await waitFor(() => fs.existsSync(path.join(stateDir, 'vms.json')), { what: 'the registry written' });
    expect(fs.statSync(stateDir).mode & 0o777).toBe(0o700);
    const registry = fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8');
    expect(registry).toContain('"victim"');
    expect(registry).not.toContain(Buffer.from(victim.sessionToken).toString('hex'));

    process.kill(hosts[0]!.pid, 'SIGKILL');
    await waitFor(() => victim.link.state === 'reconnecting', { what: 'the victim noticing the host is gone' });
    await spawnHost();

    // The victim has not reconnected yet (its backoff is long): what holds it now is the reservation.
    expect((await hosts[1]!.snapshot()).vms.map((v) => v.name)).toEqual([]);
    // By name: a fresh VM_SETUP under the victim's name is refused.
    const thief = await FrontendClient.connect({ path: socket });
    clients.push(thief);
    await thief.handshake();
    expect(await errnoOf(thief.setupVm({ name: 'victim', pasid_quota: 1, flags: 0, session_token: ZERO_TOKEN }))).toBe('EEXIST');
    // A made-up token does not reclaim it either.
    expect(await errnoOf(thief.setupVm({ name: 'victim', pasid_quota: 1, flags: 0, session_token: new Uint8Array(16).fill(7) }))).toBe('ENOENT');
    // By file: the thief, as a VM of its own, announces the victim's RAM.
    await thief.setupVm({ name: 'thief', pasid_quota: 1, flags: 0, session_token: ZERO_TOKEN });
    const region = { guest_phys_addr: 0n, memory_size: BigInt(MEM), userspace_addr: 0n, mmap_offset: 0n };
    if (nativeAvailable() && victim.ram.fd !== undefined) {
      expect(await errnoOf(thief.call('SET_MEM_TABLE', { regions: [{ ...region, path: '' }], fds: [victim.ram.fd] }))).toBe('EACCES');
    }
    // By path (a victim with file RAM): the name is gone — the guest removed it once both halves held it.
    if (announcedPath.startsWith('/')) {
      expect(fs.existsSync(announcedPath)).toBe(false);
      expect(await errnoOf(thief.call('SET_MEM_TABLE', { regions: [{ ...region, path: announcedPath }] }))).toBe('ENOENT');
    }
    expect(JSON.parse((await thief.call('GET_STATE')).json).vms[0].memory).toEqual({ regions: 0, bytes: 0 });

    // The victim comes back with its token: same name, RAM intact, working.
    await waitFor(() => victim.link.state === 'up', { what: 'the victim reconnected', timeoutMs: scaled(30_000) });
    expect(victim.lastReconnect?.resumed).toBe(false);
    expect(Buffer.from(await victim.memread(0x10_0000n, secret.length)).equals(secret)).toBe(true);
    const snap = await hosts[1]!.snapshot();
    expect(snap.vms.map((v) => v.name).sort()).toEqual(['thief', 'victim']);
    expect((snap.vms.find((v) => v.name === 'victim') as unknown as { memory: { bytes: number } }).memory.bytes).toBeGreaterThanOrEqual(MEM);
    // The hostile connection still works.
    expect((await thief.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
  }, 90_000);
});
