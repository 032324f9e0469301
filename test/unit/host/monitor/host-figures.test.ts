/**
 * The host process's resource figures (host/monitor/host-figures.ts) and their place in the
 * dashboard's pong: memory, heap after a forced collection (only with a `gc` global, at most
 * once per MIN_GC_INTERVAL_MS), open descriptors and the page-table pool's counters.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostFiguresReader, openFdCount } from '../../../../host/monitor/host-figures.js';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import type { PoolFigures } from '../../../../host/monitor/types.js';
import { FakeSource } from './fake-source.js';
import { WsClient, wsUrl } from './ws-client.js';

const POOL: PoolFigures = { pagesInUse: 3, pagesHighWater: 40, chunks: 1, bytesReserved: 2 << 20, bytesHighWater: 4 << 20, freePages: 509, chunksReleased: 1 };

const globals = globalThis as { gc?: () => void };
const savedGc = globals.gc;
let monitor: MonitorHandle | undefined;
let client: WsClient | undefined;

afterEach(async () => {
  globals.gc = savedGc;
  client?.close();
  await monitor?.close();
  monitor = undefined;
  client = undefined;
});

describe('host figures', () => {
  it('reports memory, descriptors and the pool; no heap-after-GC figure without a gc global', () => {
    delete globals.gc;
    const f = new HostFiguresReader(() => POOL).read();
    expect(f.rssBytes).toBeGreaterThan(0);
    expect(f.heapUsedBytes).toBeGreaterThan(0);
    expect(f.heapUsedAfterGcBytes).toBeNull();
    expect(f.codeSpaceAfterGcBytes).toBeNull();
    expect(f.gcAgeMs).toBeNull();
    expect(f.pageTablePool).toEqual(POOL);
    expect(f.iommu).toBeNull();
    expect(f.openFds).toBe(openFdCount());
    expect(f.openFds).toBeGreaterThan(2);
  });

  it('collects at most once per interval when a gc global exists', () => {
    let collections = 0;
    globals.gc = () => void collections++;
    const r = new HostFiguresReader(() => null);
    const a = r.read();
    const b = r.read();
    expect(collections).toBe(1);
    expect(a.heapUsedAfterGcBytes).toBeGreaterThan(0);
    expect(a.codeSpaceAfterGcBytes).toBeGreaterThan(0);
    expect(a.codeSpaceAfterGcBytes).toBeLessThan(a.heapUsedAfterGcBytes!);
    expect(b.heapUsedAfterGcBytes).toBe(a.heapUsedAfterGcBytes);
    expect(b.gcAgeMs).toBeGreaterThanOrEqual(0);
    expect(b.pageTablePool).toBeNull();
  });

  it('reports the host IOMMU sizes its source gives', () => {
    const sizes = { domains: 3, devices: 2, iotlbEntries: 40, iotlbBuckets: 5, pasidCacheEntries: 7 };
    expect(new HostFiguresReader(() => null, () => sizes).read().iommu).toEqual(sizes);
  });

  it('pong carries the figures when the source reports them, and none otherwise', async () => {
    const src = new FakeSource();
    monitor = await startMonitor(src, { summaryIntervalMs: 50 });
    client = await WsClient.open(wsUrl(monitor.url));
    client.send({ type: 'ping', id: 1 });
    expect((await client.next('pong')).host).toBeUndefined();
    (src as FakeSource & { figures?: () => unknown }).figures = () => new HostFiguresReader(() => POOL).read();
    client.send({ type: 'ping', id: 2 });
    const pong = await client.next('pong');
    expect(pong.id).toBe(2);
    expect(pong.host.pageTablePool).toEqual(POOL);
    expect(pong.host.rssBytes).toBeGreaterThan(0);
  });
});
