/**
 * WebSocket clients per dashboard (host/monitor/server.ts maxClients): one past the cap is
 * refused with HTTP 503; the clients already there keep their stream; a slot freed is reusable.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import { DEFAULT_MAX_DASHBOARD_CLIENTS } from '../../../../host/monitor/server.js';
import { FakeSource } from './fake-source.js';
import { WsClient, wsUrl } from './ws-client.js';
import { waitFor } from '../../../support/wait.js';

let m: MonitorHandle | null = null;
const clients: WsClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await m?.close();
  m = null;
});

async function open(): Promise<WsClient | string> {
  try {
    const c = await WsClient.open(wsUrl(m!.url, ''));
    clients.push(c);
    return c;
  } catch (e) {
    return (e as Error).message;
  }
}

describe('dashboard client cap', () => {
  it('refuses the client past maxClients with 503; the others keep their stream; a freed slot is reusable', async () => {
    m = await startMonitor(new FakeSource(), { maxClients: 3, summaryIntervalMs: 50 });
    const first = (await open()) as WsClient;
    await open();
    await open();
    expect(await open()).toBe('HTTP 503');
    expect(await open()).toBe('HTTP 503');
    await first.next('hello');
    await first.next('summary');
    first.close();
    let again: WsClient | string = '';
    await waitFor(async () => typeof (again = await open()) !== 'string', { what: 'a freed dashboard slot' });
    await (again as unknown as WsClient).next('hello');
  });

  it('has a bounded default and refuses a cap out of range (EINVAL)', async () => {
    expect(DEFAULT_MAX_DASHBOARD_CLIENTS).toBeGreaterThan(0);
    expect(DEFAULT_MAX_DASHBOARD_CLIENTS).toBeLessThanOrEqual(64);
    await expect(startMonitor(new FakeSource(), { maxClients: 0 })).rejects.toThrow(/EINVAL/);
  });
});
