/**
 * Large GET_STATE pages (docs/protocol.md §10.9) over a real Unix socket: VMs of a thousand
 * PASIDs each, their hPASIDs interleaved (allocated in turn), give a page several times larger
 * than the socket buffer. The reply arrives byte for byte as the host wrote it, each VM's
 * `pasids` text is exactly JSON.stringify of its rows, and so after changes to some rows (the
 * cached table text is joined again: host/server/pasid-rows.ts) and when nothing changed.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HostServer } from '../../../../host/server/index.js';
import { FrontendClient, ProtocolFeature } from '../../../../vhost/index.js';
import { TestGuest } from '../../../integration/host/client.js';

const TOKEN = 'large-pages-monitor-token-0123';
const VMS = 4;
const PER_VM = 1000;
const PF = 0x18;

let host: HostServer;
let dir: string;
let monitor: FrontendClient;
const guests: TestGuest[] = [];
const pasids: number[][] = [];

beforeAll(async () => {
  host = new HostServer({ graceMs: 0, monitorToken: TOKEN });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-large-pages-'));
  const socket = path.join(dir, 'host.sock');
  await host.listen(socket);
  for (let i = 0; i < VMS; i++) {
    guests.push(await TestGuest.start({ name: `big${i}`, connect: host.connector(), backing: 'inproc', quota: PER_VM, devices: [{ rid: PF }], mapRam: false }));
    pasids.push([]);
  }
  // In turn, so that each VM's hPASIDs interleave with the others' (as on a busy host).
  for (let k = 0; k < PER_VM; k++) {
    const got = await Promise.all(guests.map((g) => g.alloc()));
    got.forEach((p, i) => pasids[i]!.push(p));
  }
  const roots = guests.map((g) => g.fl.newRoot());
  await Promise.all(guests.map(async (g, i) => {
    for (let k = 0; k < PER_VM; k += 4) await g.bind(PF, pasids[i]![k]!, roots[i]!, 1000 + k);
  }));
  monitor = await FrontendClient.connect({ path: socket });
  await monitor.handshake({ require: ProtocolFeature.REPLY_ACK | ProtocolFeature.VSVA | ProtocolFeature.VSVA_STATE });
}, 120_000);

afterAll(async () => {
  monitor?.close();
  for (const g of guests) g.close();
  await host?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function readPage(): Promise<string> {
  return (await monitor.call('GET_STATE', { cursor: 0, max_vms: VMS, monitor_token: TOKEN })).json;
}

/** The page says what the host's objects say, to the byte where the text is cached. */
function expectExact(text: string): void {
  expect(text).toBe(host.snapshotPageJson(0, VMS)); // nothing ran in between: the same text
  for (const g of guests) {
    const vm = host.vm(g.name)!.snapshot();
    expect(text).toContain(`"pasids":${JSON.stringify(vm.pasids)},"kvm":${JSON.stringify(vm.kvm)}}`);
  }
  const parsed = JSON.parse(text) as { vms: { name: string; pasids: unknown[] }[] };
  expect(parsed.vms.map((v) => v.name)).toEqual(guests.map((g) => g.name));
  for (const v of parsed.vms) expect(v.pasids).toHaveLength(PER_VM);
}

describe('large GET_STATE pages over a Unix socket', () => {
  it('arrive byte-exact, several times the socket buffer, the first read and the next', async () => {
    const first = await readPage();
    expect(Buffer.byteLength(first)).toBeGreaterThan(256 * 1024);
    expectExact(first);
    const again = await readPage();
    expect(again).toBe(first);
    expectExact(again);
  });

  it('stay exact after some rows of every VM changed (tables joined again)', async () => {
    await Promise.all(guests.map(async (g, i) => {
      for (let k = 0; k < PER_VM; k += 4) await g.unbind(PF, pasids[i]![k]!);
      for (let k = 1; k < PER_VM; k += 50) await g.bind(PF, pasids[i]![k]!, g.fl.newRoot(), 5000 + k);
    }));
    const page = await readPage();
    expectExact(page);
    const parsed = JSON.parse(page) as { vms: { pasids: { hpasid: number; gpasid: number | null }[] }[] };
    const bound = parsed.vms[0]!.pasids.filter((p) => p.gpasid !== null).map((p) => p.gpasid);
    expect(bound).toEqual(Array.from({ length: 20 }, (_, j) => 5001 + 50 * j));
    expect(await readPage()).toBe(page);
  });
});
