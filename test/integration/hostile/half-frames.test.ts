/**
 * Timeouts and unread replies (docs/reliability.md §4.1), against a spawned
 * `vsva host` with short limits: a frame left half-sent (or trickled) is closed after the
 * half-frame timeout; a connection holding no VM is closed when silent past the idle timeout, or
 * when it has set up no VM by the set-up timeout — a VM's connection and a monitor's are not; a
 * peer that does not read its replies is paused (its requests wait, its replies are not built)
 * and resumes when it reads; the host keeps serving the other VMs throughout.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import type { FrontendClient } from '../../../vhost/roles/frontend.js';
import { VsvaRequest } from '../../../vhost/messages/codes.js';
import { sleep, withDeadline } from '../../support/wait.js';
import { closedByPeer, errnoOf, handshaken, header, rawConnect, rssOf, vmClient } from './limits-client.js';

const TOKEN = 'half-frames-monitor-token-01';
const HALF_FRAME_MS = 600;
const IDLE_MS = 1000;
const SETUP_MS = 2500;

let host: StartedHost;
let bystander: FrontendClient;

beforeAll(async () => {
  host = await startHost({
    graceMs: 0,
    monitorToken: TOKEN,
    connectionLimits: { halfFrameTimeoutMs: HALF_FRAME_MS, idleTimeoutMs: IDLE_MS, setupTimeoutMs: SETUP_MS, maxOutgoingBytes: 65_536 },
  });
  bystander = await vmClient(host.socket, 'bystander');
}, 60_000);

afterAll(async () => {
  bystander?.close();
  await host?.close();
});

async function bystanderServed(): Promise<void> {
  const { pasid } = await bystander.call('PASID_ALLOC', { min: 1, max: 0xfffff });
  expect(pasid).toBeGreaterThan(0);
  expect((await bystander.call('PASID_FREE', { min: pasid, max: pasid })).freed).toBe(1);
}

describe('half frames', () => {
  it('a frame left half-sent is closed after the half-frame timeout', async () => {
    const s = await rawConnect(host.socket);
    s.write(Buffer.concat([header(VsvaRequest.DEVICE_DMA, 1 << 20), Buffer.alloc(4096)]));
    const t0 = Date.now();
    await withDeadline(closedByPeer(s), { what: 'half frame closed', timeoutMs: HALF_FRAME_MS + 3000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(HALF_FRAME_MS - 50);
    await bystanderServed();
  });

  it('a frame trickled a byte at a time is closed too: progress within a frame does not count', async () => {
    const s = await rawConnect(host.socket);
    s.write(header(VsvaRequest.DEVICE_DMA, 4096));
    const timer = setInterval(() => s.writable && s.write(Buffer.alloc(1)), 50);
    try {
      await withDeadline(closedByPeer(s), { what: 'trickled frame closed', timeoutMs: HALF_FRAME_MS + 3000 });
    } finally {
      clearInterval(timer);
    }
    await bystanderServed();
  });

  it("a VM's connection with a half frame is closed as well (its VM is released), others keep working", async () => {
    const fe = await vmClient(host.socket, 'half-vm');
    const closed = new Promise<void>((r) => fe.onClose(() => r()));
    (fe.conn.transport as unknown as { write(d: Uint8Array): void }).write(header(VsvaRequest.GET_STATE, 64));
    await withDeadline(closed, { what: 'VM connection with a half frame closed', timeoutMs: HALF_FRAME_MS + 3000 });
    await bystanderServed();
  });
});

describe('idle and set-up timeouts', () => {
  it('a silent connection without a VM is closed after the idle timeout; a silent VM connection is not', async () => {
    const idle = await handshaken(host.socket);
    const closed = new Promise<void>((r) => idle.onClose(() => r()));
    const vm = await vmClient(host.socket, 'quiet-vm');
    await withDeadline(closed, { what: 'idle connection closed', timeoutMs: IDLE_MS + 3000 });
    expect(await errnoOf(idle.call('GET_FEATURES'))).toBe('ENOTCONN');
    await sleep(IDLE_MS + 500);
    expect((await vm.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
    vm.close();
  });

  it('a chatty connection that never sets up a VM is closed at the set-up timeout; a monitor is not', async () => {
    const chatty = await handshaken(host.socket);
    const monitor = await handshaken(host.socket);
    let chattyClosed = false;
    chatty.onClose(() => (chattyClosed = true));
    let monitorClosed = false;
    monitor.onClose(() => (monitorClosed = true));
    const t0 = Date.now();
    while (!chattyClosed && Date.now() - t0 < SETUP_MS * 4) {
      await chatty.call('GET_FEATURES').catch(() => undefined);
      await monitor.call('GET_STATE', { cursor: 0, max_vms: 4, monitor_token: TOKEN });
      await sleep(200);
    }
    expect(chattyClosed).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(SETUP_MS - 500);
    await sleep(300);
    expect(monitorClosed).toBe(false);
    monitor.close();
    await bystanderServed();
  });
});

describe('unread replies', () => {
  it('a peer that pipelines requests and reads no reply is paused: the host holds its requests, stays bounded and serves the others', async () => {
    const greedy = await vmClient(host.socket, 'greedy', 64);
    for (let i = 0; i < 64; i++) await greedy.call('PASID_ALLOC', { min: 1, max: 0xfffff }).catch(() => undefined);
    const rss0 = rssOf(host.pid);
    greedy.conn.transport.setReading(false);
    // Each GET_STATE reply carries the VM's PASID table (a few KiB): 4000 of them are far more
    // than the 64 KiB the host lets wait unsent.
    const calls = Array.from({ length: 4000 }, () => greedy.call('GET_STATE').then(() => 'ok', (e: { code?: string }) => e.code ?? 'error'));
    await sleep(1000);
    await bystanderServed();
    const rss1 = rssOf(host.pid);
    // The replies not yet written do not exist: the host holds the requests, not 4000 replies.
    if (rss0 !== null && rss1 !== null) expect(rss1 - rss0).toBeLessThan(48 * 1024 * 1024);
    greedy.conn.transport.setReading(true);
    const results = await withDeadline(Promise.all(calls), { what: 'greedy calls settled', timeoutMs: 30_000 });
    expect(results.filter((r) => r !== 'ok')).toEqual([]);
    expect(greedy.closed).toBe(false);
    greedy.close();
    await bystanderServed();
  });
});
