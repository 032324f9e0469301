/**
 * The VM registry across host restarts (host/server/vm-reservations.ts, docs/reliability.md
 * "Host restart"): a host that stops with VMs records their names, token hashes, uids and RAM
 * files in its 0700 state directory; the next host on it gives a reserved name only to the
 * token's holder (reclaimed: set up afresh, not resumed), refuses the name (EEXIST) and the RAM
 * (EACCES) to anyone else, refuses another uid altogether (EACCES), and lets the reservations
 * go when their period ends. A state directory that is not private refuses the start.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HostServer } from '../../../../host/server/index.js';
import { VmReservations } from '../../../../host/server/vm-reservations.js';
import { FrontendClient } from '../../../../vhost/roles/frontend.js';
import { VM_SETUP_REPLY_RESUMED } from '../../../../vhost/messages/vm.js';
import { closeFd, memfdCreate, nativeAvailable } from '../../../../src/native/native.js';
import { asyncErrorCodeOf as errnoOf, expectedErrnoOf } from '../../../support/error-code.js';
import { waitFor } from '../../../support/wait.js';

const ZERO = new Uint8Array(16);
const MiB = 1 << 20;
let stateDir: string;
let sockets: string[];
const servers: HostServer[] = [];
const clients: FrontendClient[] = [];


async function serve(opts: { reservationMs?: number } = {}): Promise<string> {
  const socket = path.join(os.tmpdir(), `vsva-resv-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
  const s = new HostServer({ stateDir, graceMs: 0, ...opts });
  servers.push(s);
  await s.listen(socket);
  sockets.push(socket);
  return socket;
}

async function client(socket: string): Promise<FrontendClient> {
  const fe = await FrontendClient.connect({ path: socket });
  clients.push(fe);
  await fe.handshake();
  return fe;
}

const region = { guest_phys_addr: 0n, memory_size: BigInt(MiB), userspace_addr: 0n, mmap_offset: 0n, path: '' };

beforeEach(() => {
  stateDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-resv-')), 'state');
  sockets = [];
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
  for (const p of sockets) fs.rmSync(p, { force: true });
  fs.rmSync(path.dirname(stateDir), { recursive: true, force: true });
});

describe('VM registry across host restarts', () => {
  it.runIf(nativeAvailable())('a restarted host keeps a VM\'s name and RAM for its token only; the token reclaims both', async () => {
    const ram = memfdCreate('vsva-resv-ram', MiB);
    try {
      const s1 = await serve();
      const vic = await client(s1);
      const { session_token: token } = await vic.setupVm({ name: 'vic', pasid_quota: 4, flags: 0, session_token: ZERO });
      await vic.call('SET_MEM_TABLE', { regions: [region], fds: [ram] });
      await servers[0]!.close(); // the host stops with the VM still served
      expect(fs.statSync(stateDir).mode & 0o777).toBe(0o700);
      const rec = JSON.parse(fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8')) as { vms: { name: string; files: string[]; uid: number }[] };
      expect(rec.vms.map((v) => [v.name, v.files.length, v.uid])).toEqual([['vic', 1, process.getuid!()]]);

      const s2 = await serve({ reservationMs: 60_000 });
      const thief = await client(s2);
      expect(await errnoOf(thief.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: ZERO }))).toBe('EEXIST');
      expect(await errnoOf(thief.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: new Uint8Array(16).fill(9) }))).toBe('ENOENT');
      await thief.setupVm({ name: 'thief', pasid_quota: 1, flags: 0, session_token: ZERO });
      expect(await errnoOf(thief.call('SET_MEM_TABLE', { regions: [region], fds: [ram] }))).toBe('EACCES');
      expect(servers[1]!.vm('thief')!.mem.list).toHaveLength(0);

      const back = await client(s2);
      const r = await back.setupVm({ name: 'vic', pasid_quota: 4, flags: 0, session_token: token });
      expect(r.flags & VM_SETUP_REPLY_RESUMED).toBe(0);
      expect(Buffer.from(r.session_token).equals(Buffer.from(token))).toBe(false);
      await back.call('SET_MEM_TABLE', { regions: [region], fds: [ram] });
      // The old token is spent: it reclaims nothing any more.
      const again = await client(s2);
      expect(await errnoOf(again.setupVm({ name: 'vic', pasid_quota: 4, flags: 0, session_token: token }))).toBe('ENOENT');
      // The thief's connection still works.
      expect((await thief.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
    } finally {
      closeFd(ram);
    }
  });

  it.runIf(nativeAvailable())('another uid never gets a reserved name, not even with the token (EACCES)', async () => {
    const s1 = await serve();
    const vic = await client(s1);
    const { session_token: token } = await vic.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: ZERO });
    await servers[0]!.close();
    // The record says another user set the VM up (we are that other user's neighbour).
    const file = path.join(stateDir, 'vms.json');
    const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { vms: { uid: number }[] };
    doc.vms[0]!.uid = process.getuid!() + 1;
    fs.writeFileSync(file, JSON.stringify(doc));
    const s2 = await serve({ reservationMs: 60_000 });
    const fe = await client(s2);
    expect(await errnoOf(fe.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: ZERO }))).toBe('EACCES');
    expect(await errnoOf(fe.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: token }))).toBe('EACCES');
    await fe.setupVm({ name: 'other', pasid_quota: 1, flags: 0, session_token: ZERO });
  });

  it('reservations end with their period: then the name is anyone\'s; a host that ends with no VM leaves no state behind', async () => {
    const s1 = await serve();
    const vic = await client(s1);
    await vic.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: ZERO });
    await servers[0]!.close();
    const s2 = await serve({ reservationMs: 50 });
    expect(servers[1]!.reservations.reserved('vic')).toBeDefined();
    await waitFor(() => servers[1]!.reservations.reserved('vic') === undefined, { what: 'the reservation expired' });
    const fe = await client(s2);
    await fe.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: ZERO });
    fe.close();
    await waitFor(() => servers[1]!.vm('vic') === undefined, { what: 'the VM released' });
    await servers[1]!.close();
    expect(fs.existsSync(stateDir)).toBe(false);
  });

  it('a second host on the same state directory that goes away without serving leaves the state as it was', async () => {
    const s1 = await serve();
    const vic = await client(s1);
    await vic.setupVm({ name: 'vic', pasid_quota: 1, flags: 0, session_token: ZERO });
    await waitFor(() => fs.existsSync(path.join(stateDir, 'vms.json')), { what: 'the registry written' });
    const before = fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8');
    // E.g. a second `vsva host` whose listen failed (the socket is taken): it loaded, then closes.
    const second = new HostServer({ stateDir, graceMs: 0 });
    await second.close();
    expect(fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8')).toBe(before);
  });

  it('while a VM of the previous run may come back, fresh PASIDs stay above every PASID that run handed out; its own come back at their old values', async () => {
    const s1 = await serve();
    const a = await client(s1);
    const { session_token: token } = await a.setupVm({ name: 'a', pasid_quota: 8, flags: 0, session_token: ZERO });
    const held: number[] = [];
    for (let i = 0; i < 3; i++) held.push((await a.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid);
    await servers[0]!.close();
    const rec = JSON.parse(fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8')) as { pasidCeiling: number };
    expect(rec.pasidCeiling).toBeGreaterThan(Math.max(...held));

    const s2 = await serve({ reservationMs: 60_000 });
    const b = await client(s2);
    await b.setupVm({ name: 'b', pasid_quota: 8, flags: 0, session_token: ZERO });
    const fresh = (await b.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid;
    expect(fresh).toBeGreaterThanOrEqual(rec.pasidCeiling); // not one of a's numbers
    // Asking for one of a's numbers outright, or a range wholly below the floor: EBUSY for b.
    expect(await errnoOf(b.call('PASID_ALLOC', { min: held[0]!, max: held[0]! }))).toBe('EBUSY');
    expect(await errnoOf(b.call('PASID_ALLOC', { min: 1, max: held[2]! }))).toBe('EBUSY');
    const back = await client(s2);
    await back.setupVm({ name: 'a', pasid_quota: 8, flags: 0, session_token: token });
    for (const p of held) expect((await back.call('PASID_ALLOC', { min: p, max: p })).pasid).toBe(p);
    // Every VM of the previous run is back: allocation is lowest-free again.
    expect((await b.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeLessThan(rec.pasidCeiling);
  });

  it('refuses to start on a state directory that is not private (EACCES), or a malformed registry (EINVAL)', () => {
    fs.mkdirSync(stateDir, { mode: 0o755 });
    fs.chmodSync(stateDir, 0o755);
    expect(expectedErrnoOf(() => new HostServer({ stateDir }))).toBe('EACCES');
    fs.chmodSync(stateDir, 0o700);
    fs.writeFileSync(path.join(stateDir, 'vms.json'), '{"version":1,"vms":[{"name":1}]}');
    expect(expectedErrnoOf(() => new HostServer({ stateDir }))).toBe('EINVAL');
    fs.writeFileSync(path.join(stateDir, 'vms.json'), '{"version":1,"pasidCeiling":-1,"vms":[]}');
    expect(expectedErrnoOf(() => new HostServer({ stateDir }))).toBe('EINVAL');
    fs.rmSync(path.join(stateDir, 'vms.json'));
    const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-paths-'));
    fs.chmodSync(bad, 0o777);
    try {
      expect(() => new HostServer({ allowMemoryPaths: bad })).toThrow(/mode 0700/);
    } finally {
      fs.rmSync(bad, { recursive: true, force: true });
    }
  });
});

describe('VM registry writes', () => {
  const open = () => VmReservations.open({ stateDir, reservationMs: 0, filesOf: () => [], onExpire: () => {} });
  const names = () => (JSON.parse(fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8')) as { vms: { name: string }[] }).vms.map((v) => v.name).sort();

  it('are off the event loop: a change is written after the turn that made it, never inside it', async () => {
    const r = open();
    r.bind('a', new Uint8Array(16).fill(1), 1000);
    // The write begins in a microtask; its file operations complete in a later event-loop turn.
    await Promise.resolve();
    await Promise.resolve();
    expect(fs.existsSync(path.join(stateDir, 'vms.json'))).toBe(false);
    await waitFor(() => fs.existsSync(path.join(stateDir, 'vms.json')), { what: 'the registry written' });
    expect(names()).toEqual(['a']);
    await r.close();
  });

  it('one at a time: changes while a write is in flight are written after it, and close writes the state at its call last', async () => {
    const r = open();
    r.bind('a', new Uint8Array(16).fill(1), 1000);
    await Promise.resolve(); // the write of 'a' is in flight
    r.bind('b', new Uint8Array(16).fill(2), 1000);
    await Promise.resolve();
    await waitFor(() => fs.existsSync(path.join(stateDir, 'vms.json')) && names().length === 2, { what: 'both VMs written' });
    expect(names()).toEqual(['a', 'b']);
    r.bind('c', new Uint8Array(16).fill(3), 1000);
    await Promise.resolve(); // the write of a, b, c is in flight
    r.release('a');
    const closed = r.close(); // records taken now: b, c
    r.bind('d', new Uint8Array(16).fill(4), 1000); // after close: not written
    await closed;
    expect(names()).toEqual(['b', 'c']);
    expect(fs.readdirSync(stateDir)).toEqual(['vms.json']); // no temporary file left
  });

  it('persisted() resolves once the file holds every change made before the call (at once when nothing is pending)', async () => {
    const r = open();
    await r.persisted(); // nothing changed yet
    expect(fs.existsSync(path.join(stateDir, 'vms.json'))).toBe(false);
    r.bind('a', new Uint8Array(16).fill(1), 1000);
    await Promise.resolve(); // the write of 'a' is in flight
    r.bind('b', new Uint8Array(16).fill(2), 1000);
    const both = r.persisted(); // covers 'b' too: resolves only after the second write
    await both;
    expect(names()).toEqual(['a', 'b']);
    await r.close();
  });

  it.runIf(nativeAvailable())('the host answers VM_SETUP and SET_MEM_TABLE only once the registry records the VM and its RAM file', async () => {
    const ram = memfdCreate('vsva-resv-ack', MiB);
    try {
      const s1 = await serve();
      const vic = await client(s1);
      await vic.setupVm({ name: 'vic', pasid_quota: 4, flags: 0, session_token: ZERO });
      // Read at the reply, before any later turn: a host SIGKILLed now would leave this file.
      const rec = () => JSON.parse(fs.readFileSync(path.join(stateDir, 'vms.json'), 'utf8')) as { vms: { name: string; files: string[] }[] };
      expect(rec().vms.map((v) => v.name)).toEqual(['vic']);
      await vic.call('SET_MEM_TABLE', { regions: [region], fds: [ram] });
      expect(rec().vms.map((v) => v.files.length)).toEqual([1]);
    } finally {
      closeFd(ram);
    }
  });

  it('a write that fails (asynchronous, then at close) is logged and leaves no temporary file', async () => {
    const r = open();
    fs.mkdirSync(stateDir, { recursive: true });
    fs.mkdirSync(path.join(stateDir, 'vms.json')); // rename(2) onto a directory fails (EISDIR)
    r.bind('a', new Uint8Array(16).fill(1), 1000);
    await Promise.resolve(); // the write is in flight
    await r.close(); // waits for it, then writes at once: both fail
    expect(fs.readdirSync(stateDir)).toEqual(['vms.json']);
    expect(fs.statSync(path.join(stateDir, 'vms.json')).isDirectory()).toBe(true);
  });
});
