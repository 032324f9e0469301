/**
 * A client that only connects, sets up a VM, adds 32 PASID-capable devices and closes — over
 * and over — must not grow the host's memory (issue: each device's 128 KiB PASID directory is a
 * contiguous page-table pool run; freed as single pages that runs never reuse, every cycle
 * grew the host by 4 MiB). A real host process over its Unix socket; the figures are the
 * page-table pool's own counters from the dashboard's pong (host/monitor/host-figures.ts), not
 * RSS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { DeviceCap, DeviceKind } from '../../../vhost/messages/device.js';
import type { PoolFigures } from '../../../host/monitor/types.js';
import { WsClient, wsUrl } from '../../unit/host/monitor/ws-client.js';
import { scaled, waitFor } from '../../support/wait.js';
import { vmClient } from './limits-client.js';

const CYCLES = 24;
const DEVICES = 32;
/** PASID directory of a 20-bit device: 2^20 / 64 entries × 8 bytes = 128 KiB = 32 pages. */
const DIR_PAGES = 32;

let host: StartedHost;
let ws: WsClient;
let pings = 0;

async function pool(): Promise<PoolFigures> {
  const id = ++pings;
  ws.send({ type: 'ping', id });
  const pong = await ws.next('pong', (m) => m.id === id);
  return pong.host.pageTablePool as PoolFigures;
}

async function cycle(n: number): Promise<void> {
  const fe = await vmClient(host.socket, `pool-${n}`, 4);
  try {
    for (let i = 0; i < DEVICES; i++) {
      await fe.call('DEVICE_ADD', { rid: 0x100 + i, kind: DeviceKind.PF, pasid_width: 20, caps: DeviceCap.PASID });
    }
  } finally {
    fe.close();
  }
}

beforeAll(async () => {
  host = await startHost({ graceMs: 0, dashboard: { port: 0 } });
  ws = await WsClient.open(wsUrl(host.dashboard!));
}, scaled(30_000));

afterAll(async () => {
  ws?.close();
  await host?.close();
});

describe('pool exhaustion: connect, VM_SETUP, 32 × DEVICE_ADD, close — repeated', () => {
  it('pages in use return to the empty host, the pool stops growing after the first cycle', async () => {
    const empty = await pool();
    await cycle(0);
    // Wait until the VM is released (grace 0: at once, asynchronously).
    await waitFor(async () => (await pool()).pagesInUse === empty.pagesInUse, { what: 'first VM released', timeoutMs: 5000 });
    const first = await pool();
    expect(first.pagesHighWater - empty.pagesInUse).toBeGreaterThanOrEqual(DEVICES * DIR_PAGES);

    for (let n = 1; n <= CYCLES; n++) await cycle(n);
    await waitFor(async () => (await pool()).pagesInUse === empty.pagesInUse, { what: 'every VM released', timeoutMs: 5000 });
    const last = await pool();
    expect(last.pagesInUse).toBe(empty.pagesInUse);
    // The largest footprint is that of one cycle: no growth over 24 more.
    expect(last.pagesHighWater).toBe(first.pagesHighWater);
    expect(last.bytesHighWater).toBe(first.bytesHighWater);
    expect(last.bytesReserved).toBeLessThanOrEqual(first.bytesReserved);
    // 24 cycles × 32 directories × 128 KiB would be 96 MiB if runs were not reused.
    expect(last.bytesHighWater).toBeLessThan(DEVICES * DIR_PAGES * 4096 + 8 * 1024 * 1024);
  }, scaled(60_000));
});
