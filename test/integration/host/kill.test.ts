/**
 * A guest process killed with SIGKILL mid-workload: after the grace period the host releases
 * everything the VM held (PASIDs, bindings, KVM references, mappings, devices, memory, pending
 * page requests), capacity returns to where it was, and another VM is unaffected. A reconnect
 * with the session token within the grace period keeps everything.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { GuestRam } from '../../../guest/memory/guest-ram.js';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import type { HostSnapshot } from '../../../src/api/types.js';
import { TestGuest } from './client.js';
import { scaled, sleep, waitFor } from '../../support/wait.js';

const here = fileURLToPath(new URL('.', import.meta.url));
/** Long enough for a killed guest's resume (connect, handshake, VM_SETUP) on a loaded machine. */
const GRACE_MS = scaled(2000);
let host: StartedHost;
let other: TestGuest;
const files: string[] = [];
const children: ChildProcess[] = [];

interface Ready { token: string; ram: string; size: number; pasids: number[]; roots: number[] }

function spawnGuest(name: string): Promise<{ child: ChildProcess; info: Ready }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'guest-script.ts'), host.socket, name], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let buf = '';
    child.once('exit', (code) => reject(new Error(`guest exited early (${code})`)));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        const info = JSON.parse(buf.slice(0, nl)) as Ready;
        files.push(info.ram);
        resolve({ child, info });
      }
    });
  });
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

function vmNamed(s: HostSnapshot, name: string) {
  return s.vms.find((v) => v.name === name);
}

/** Wait for a host-side condition; the grace period plus slack, scaled. */
function until(cond: () => Promise<boolean>, what: string): Promise<void> {
  return waitFor(cond, { what, timeoutMs: 10_000, intervalMs: 50 });
}

beforeAll(async () => {
  host = await startHost({ graceMs: GRACE_MS });
  other = await TestGuest.start({ name: 'steady', path: host.socket, quota: 8 });
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  other?.close();
  await host?.close();
  other?.ram.backing.close();
  for (const f of files) rmSync(f, { force: true });
});

describe('a guest process killed with SIGKILL', () => {
  it('has everything it held released after the grace period; capacity returns; other VMs unaffected', async () => {
    const p = await other.alloc();
    const root = other.fl.newRoot();
    other.fl.map(root, 0x2000n, 0x30_0000);
    await other.bind(0x18, p, root, 9);
    const base = await host.snapshot();
    const steadyBefore = vmNamed(base, 'steady');

    const { child } = await spawnGuest('victim');
    let s = await host.snapshot();
    expect(s.capacity.available).toBe(base.capacity.available - 8);
    expect(vmNamed(s, 'victim')!.pasids.map((x) => x.refs)).toEqual([3, 3, 3, 3]);
    await new Promise((r) => setTimeout(r, 100)); // let it work for a while
    await kill(child);

    // Within the grace period the state is kept, marked disconnected (once the host saw the socket close).
    await until(async () => vmNamed(await host.snapshot(), 'victim')?.connected === false, 'victim disconnected');
    s = await host.snapshot();
    expect(vmNamed(s, 'victim')).toMatchObject({ connected: false, set: { quota: 8, used: 4 } });
    await until(async () => vmNamed(await host.snapshot(), 'victim') === undefined, 'victim released');
    s = await host.snapshot();
    expect(s.capacity).toEqual(base.capacity);
    expect(vmNamed(s, 'steady')).toEqual(steadyBefore);
    // The other VM still works.
    other.ram.write(0x30_0000, new Uint8Array([4, 2]));
    const r = await other.read(0x18, 0x2000n, 2, p);
    expect([...r.data!]).toEqual([4, 2]);
  });

  it('gets its state back untouched when it reconnects with its session token in time', async () => {
    const { child, info } = await spawnGuest('phoenix');
    const before = vmNamed(await host.snapshot(), 'phoenix')!;
    await kill(child);
    await until(async () => vmNamed(await host.snapshot(), 'phoenix')?.connected === false, 'phoenix disconnected');
    const ram = GuestRam.open(info.ram, info.size);
    const g = await TestGuest.start({ name: 'phoenix', path: host.socket, ram, token: Uint8Array.from(Buffer.from(info.token, 'hex')) });
    try {
      expect(g.resumed).toBe(true);
      const s = await host.snapshot();
      const after = vmNamed(s, 'phoenix')!;
      expect(after.connected).toBe(true);
      expect(after.pasids).toEqual(before.pasids);
      expect(after.devices).toEqual(before.devices);
      // Bindings and mappings survived: DMA through PASID 0's binding works, over the new backend channel.
      g.ram.write(0x20_0000, new Uint8Array([7, 7, 7]));
      const r = await g.read(0x18, 0x1000_0000n, 3, info.pasids[0]);
      expect([...r.data!]).toEqual([7, 7, 7]);
      g.autoRespond = 1;
      const f = await g.read(0x18, 0x7000_0000n, 4, info.pasids[0]);
      expect(f.status).toBe(1);
      expect(g.events.some((e) => e.name === 'PAGE_REQUEST')).toBe(true);
      // After the grace period it is still there (it is connected).
      await sleep(GRACE_MS + 200);
      expect(vmNamed(await host.snapshot(), 'phoenix')?.pasids).toHaveLength(4);
    } finally {
      g.close();
      ram.backing.close();
    }
  });
});
