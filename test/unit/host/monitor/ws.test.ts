import { describe, it, expect, afterEach } from 'vitest';
import { startMonitor, type MonitorHandle, type MonitorOptions } from '../../../../host/monitor/index.js';
import { MAX_BAD_MESSAGES, MAX_CLIENT_MESSAGE_BYTES, CLOSE_POLICY } from '../../../../host/monitor/protocol.js';
import { fail } from '../../../../src/errors.js';
import { FakeSource, FakeSourceWithStats, pasid, vm } from './fake-source.js';
import { WsClient, wsUrl, sleep } from './ws-client.js';

const TOKEN = 'test-token-0123456789';
const FAST: MonitorOptions = { summaryIntervalMs: 50, eventIntervalMs: 20 };

let monitors: MonitorHandle[] = [];
let clients: WsClient[] = [];

async function serve(src: FakeSource, opts: MonitorOptions = {}): Promise<MonitorHandle> {
  const m = await startMonitor(src, { ...FAST, ...opts });
  monitors.push(m);
  return m;
}

async function client(m: MonitorHandle, query = '', headers: Record<string, string> = {}): Promise<WsClient> {
  const c = await WsClient.open(wsUrl(m.url, query), headers);
  clients.push(c);
  return c;
}

afterEach(async () => {
  for (const c of clients) c.close();
  await Promise.all(monitors.map((m) => m.close()));
  monitors = [];
  clients = [];
});

describe('dashboard WebSocket: state', () => {
  it('greets a client with hello and the summary of every VM', async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    const hello = await c.next('hello');
    expect(hello).toMatchObject({ version: 1, readOnly: true, controls: [] });
    expect(hello.limits.maxClientMessageBytes).toBe(MAX_CLIENT_MESSAGE_BYTES);
    const { summary } = await c.next('summary');
    expect(summary.vmCount).toBe(2);
    expect(summary.vms.map((v: { name: string }) => v.name)).toEqual(['vm-a', 'vm-b']);
    expect(summary.vms[0]).toMatchObject({ quota: 1024, used: 2, counts: { pasids: 2, active: 1, idle: 1 } });
    expect(summary.vms[0].pasids).toBeUndefined();
  });

  it('sends a summary only when something changed', async () => {
    const src = new FakeSource();
    const m = await serve(src);
    const c = await client(m);
    await c.next('summary');
    await sleep(250); // ~5 summary ticks with nothing changing
    expect(c.drain('summary')).toEqual([]);
    expect(src.snapshotCalls).toBeGreaterThan(1);
    src.addPasid('vm-b', pasid(99, 5));
    const { summary } = await c.next('summary');
    expect(summary.vms[1].used).toBe(2);
    expect(summary.capacity.available).toBe(src.snap.capacity.available);
  });

  it('gives the first client after an idle spell the current state, not the summary held since the last client left', async () => {
    const src = new FakeSource();
    const m = await serve(src, { summaryIntervalMs: 60_000 }); // no timer tick during the test
    const a = await client(m);
    expect((await a.next('summary')).summary.vms[1].used).toBe(1);
    a.close();
    await sleep(50);
    src.addPasid('vm-b', pasid(99, 5)); // changes while nobody watches
    const calls = src.snapshotCalls;
    const b = await client(m);
    const { summary } = await b.next('summary');
    expect(summary.vms[1].used).toBe(2);
    expect(src.snapshotCalls).toBe(calls + 1);
    b.send({ type: 'subscribe', vms: [{ name: 'vm-b' }] });
    expect((await b.next('pasids')).page.rows.map((r: { hpasid: number }) => r.hpasid)).toEqual([3, 99]);
  });

  it('does not take snapshots while nobody is watching', async () => {
    const src = new FakeSource();
    await serve(src);
    await sleep(200);
    expect(src.snapshotCalls).toBe(0);
  });

  it('sends the PASID table only for subscribed VMs, and again when it changes', async () => {
    const src = new FakeSource();
    const m = await serve(src);
    const c = await client(m);
    await c.next('summary');
    await sleep(120);
    expect(c.drain('pasids')).toEqual([]);

    c.send({ type: 'subscribe', vms: [{ name: 'vm-a' }] });
    const first = await c.next('pasids');
    expect(first.vm).toBe('vm-a');
    expect(first.page.total).toBe(2);
    expect(first.page.rows.map((r: { hpasid: number }) => r.hpasid)).toEqual([1, 2]);

    await sleep(150);
    expect(c.drain('pasids')).toEqual([]); // unchanged: not re-sent

    src.addPasid('vm-a', pasid(50, 42));
    const next = await c.next('pasids');
    expect(next.page.total).toBe(3);
    expect(next.page.rows.find((r: { hpasid: number }) => r.hpasid === 50)).toMatchObject({ gpasid: 42, state: 'active', bindings: [{ bdf: '00:03.0', pgtt: 'nested' }] });

    src.addPasid('vm-b', pasid(60, 1)); // another VM's change does not produce vm-a pages
    await c.next('summary', (s) => s.summary.vms[1].used === 2);
    await sleep(100);
    expect(c.drain('pasids')).toEqual([]);
  });

  it('pages through a large table and reports unknown VMs as null', async () => {
    const rows = Array.from({ length: 1024 }, (_, i) => pasid(1024 - i, i));
    const src = new FakeSource([vm('big', rows)]);
    const m = await serve(src);
    const c = await client(m);
    c.send({ type: 'subscribe', vms: [{ name: 'big', offset: 200, limit: 50 }, { name: 'ghost' }] });
    const big = await c.next('pasids', (p) => p.vm === 'big');
    expect(big.page).toMatchObject({ total: 1024, offset: 200, limit: 50 });
    expect(big.page.rows.map((r: { hpasid: number }) => r.hpasid)).toEqual(Array.from({ length: 50 }, (_, i) => 201 + i));
    const ghost = await c.next('pasids', (p) => p.vm === 'ghost');
    expect(ghost.page).toBeNull();
    // moving the window re-sends even though the VM did not change
    c.send({ type: 'subscribe', vms: [{ name: 'big', offset: 1000, limit: 50 }] });
    const tail = await c.next('pasids', (p) => p.vm === 'big');
    expect(tail.page.rows).toHaveLength(24);
  });

  it('batches trace events, capped per batch with a dropped count', async () => {
    const src = new FakeSource();
    const m = await serve(src, { eventIntervalMs: 100, maxEventsPerBatch: 10 });
    const c = await client(m);
    await c.next('hello');
    await sleep(30);
    for (let i = 0; i < 25; i++) src.events.emit({ kind: 'bind', side: 'host', vm: 'vm-a', name: `BIND ${i}` });
    const batch = await c.next('events');
    expect(batch.events).toHaveLength(10);
    expect(batch.events[0]).toMatchObject({ kind: 'bind', vm: 'vm-a', name: 'BIND 0' });
    expect(typeof batch.events[0].ts).toBe('number');
    expect(batch.dropped).toBe(15);
    await sleep(150);
    expect(c.drain('events')).toEqual([]); // nothing new: no empty batches
  });

  it('reports counters from the source’s stats()', async () => {
    const src = new FakeSourceWithStats();
    src.bump('vm-a', 'binds', 3);
    src.bump('vm-a', 'iotlbHits', 90);
    src.bump('vm-a', 'iotlbMisses', 10);
    const m = await serve(src);
    const c = await client(m);
    const { summary } = await c.next('summary');
    expect(summary.totals).toMatchObject({ binds: 3, iotlbHits: 90, iotlbMisses: 10 });
    expect(summary.vms[0].stats).toMatchObject({ binds: 3 });
    expect(summary.vms[1].stats).toMatchObject({ binds: 0 });
  });

  it('counts trace events itself when the source has no stats()', async () => {
    const src = new FakeSource();
    const m = await serve(src);
    src.events.emit({ kind: 'alloc', side: 'host', vm: 'vm-b', name: 'PASID_ALLOC' });
    src.events.emit({ kind: 'fault', side: 'host', vm: 'vm-b', name: 'fault 0x5a' });
    const c = await client(m);
    const { summary } = await c.next('summary');
    expect(summary.vms[1].stats).toMatchObject({ allocs: 1, faults: 1, iotlbHits: null });
    expect(summary.totals).toMatchObject({ allocs: 1, faults: 1 });
  });

  it('keeps serving the last good state when a snapshot fails', async () => {
    const src = new FakeSource();
    const m = await serve(src);
    const c = await client(m);
    await c.next('summary');
    src.failSnapshot = true;
    await sleep(150);
    c.send({ type: 'ping', id: 1 });
    expect(await c.next('pong')).toMatchObject({ id: 1 });
    src.failSnapshot = false;
    src.addPasid('vm-a', pasid(77, 7));
    expect((await c.next('summary')).summary.vms[0].used).toBe(3);
  });
});

describe('dashboard WebSocket: refresh timing', () => {
  it("pong reports the hub's own snapshot refresh timing", async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    c.send({ type: 'ping', id: 1 });
    const first = await c.next('pong');
    await c.next('summary');
    c.send({ type: 'ping', id: 2 });
    const pong = await c.next('pong');
    expect(pong.id).toBe(2);
    expect(pong.refresh.count).toBeGreaterThanOrEqual(1);
    expect(pong.refresh.count).toBeGreaterThanOrEqual(first.refresh.count);
    expect(pong.refresh.median).toBeGreaterThanOrEqual(0);
    expect(pong.refresh.max).toBeGreaterThanOrEqual(pong.refresh.median);
    expect(pong.refresh.phases!.snapshot).toBeGreaterThanOrEqual(0);
    expect(pong.refresh.phases!.summary).toBeGreaterThanOrEqual(0);
    expect(pong.refresh.phases!.send).toBeGreaterThanOrEqual(0);
    expect(pong.refresh.first).toBeDefined();
  });

  it('starts a new timing window when a client connects to a hub with none', async () => {
    const m = await serve(new FakeSource());
    const a = await client(m);
    await a.next('summary');
    await sleep(500); // several refreshes
    a.send({ type: 'ping', id: 1 });
    const before = (await a.next('pong')).refresh.count;
    expect(before).toBeGreaterThanOrEqual(4);
    a.close();
    await sleep(100);
    const b = await client(m);
    await b.next('summary'); // the last summary, sent at once; a refresh follows within an interval
    await sleep(120);
    b.send({ type: 'ping', id: 2 });
    const after = (await b.next('pong')).refresh.count;
    expect(after).toBeGreaterThanOrEqual(1);
    expect(after).toBeLessThan(before);
  });
});

describe('dashboard WebSocket: validation', () => {
  it('answers a malformed message with an error and stays usable', async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    c.send('{not json');
    expect(await c.next('error')).toMatchObject({ code: 'EINVAL', message: 'message is not valid JSON' });
    c.send({ type: 'subscribe', vms: [{ name: 'vm-a', limit: 100000 }] });
    expect(await c.next('error')).toMatchObject({ code: 'EINVAL' });
    c.send({ type: 'launch-missiles' });
    expect((await c.next('error')).message).toContain('unknown message type');
    c.send({ type: 'ping', id: 2 });
    expect(await c.next('pong')).toMatchObject({ id: 2 });
  });

  it('closes with 1009 on a frame over the size limit', async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    c.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(MAX_CLIENT_MESSAGE_BYTES) }));
    expect((await c.closed).code).toBe(1009);
    // the server is fine: a new client is served
    const d = await client(m);
    expect(await d.next('hello')).toBeTruthy();
  });

  it('closes with 1008 on binary frames', async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    c.ws.send(Buffer.from([1, 2, 3]));
    expect((await c.closed).code).toBe(CLOSE_POLICY);
  });

  it('closes with 1008 after too many bad messages', async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    for (let i = 0; i <= MAX_BAD_MESSAGES; i++) c.send('[]');
    expect((await c.closed).code).toBe(CLOSE_POLICY);
    expect(c.drain('error')).toHaveLength(MAX_BAD_MESSAGES + 1);
  });

  it('closes with 1008 when a client floods messages', async () => {
    const m = await serve(new FakeSource());
    const c = await client(m);
    for (let i = 0; i < 200; i++) c.send({ type: 'ping', id: i });
    expect((await c.closed).code).toBe(CLOSE_POLICY);
  });

  it('refuses WebSocket upgrades on other paths', async () => {
    const m = await serve(new FakeSource());
    await expect(WsClient.open(m.url.replace(/^http/, 'ws') + 'other')).rejects.toThrow('HTTP 404');
  });
});

describe('dashboard WebSocket: access', () => {
  /** A fresh source, a monitor on it with `opts`, and one client connected with `query`. */
  async function connect(opts: MonitorOptions = {}, query = ''): Promise<{ src: FakeSource; c: WsClient }> {
    const src = new FakeSource();
    const c = await client(await serve(src, opts), query);
    return { src, c };
  }

  /** Ask for 'disconnect-vm' (plus `fields`) and return the control-result. */
  async function disconnectVm(c: WsClient, fields: Record<string, unknown>) {
    c.send({ type: 'control', action: 'disconnect-vm', ...fields });
    return c.next('control-result');
  }

  it('is read-only without a token: control actions get EPERM and nothing runs', async () => {
    const { src, c } = await connect();
    expect(await disconnectVm(c, { id: 1, vm: 'vm-a', token: TOKEN })).toMatchObject({ id: 1, ok: false, code: 'EPERM' });
    expect(src.controlCalls).toEqual([]);
  });

  it('with a token, refuses control without it or with a wrong one (EACCES)', async () => {
    const { src, c } = await connect({ token: TOKEN });
    expect(await c.next('hello')).toMatchObject({ readOnly: false, controls: ['disconnect-vm'] });
    expect(await disconnectVm(c, { id: 1, vm: 'vm-a' })).toMatchObject({ id: 1, ok: false, code: 'EACCES' });
    expect(await disconnectVm(c, { id: 2, vm: 'vm-a', token: 'wrong-token-0123456789' })).toMatchObject({ id: 2, ok: false, code: 'EACCES' });
    expect(src.controlCalls).toEqual([]);
  });

  it('runs a control action with the token in the message', async () => {
    const { src, c } = await connect({ token: TOKEN });
    expect(await disconnectVm(c, { id: 3, vm: 'vm-b', token: TOKEN })).toEqual({ type: 'control-result', id: 3, ok: true, result: { done: true } });
    expect(src.controlCalls).toEqual([{ action: 'disconnect-vm', vm: 'vm-b' }]);
  });

  it('runs a control action on a connection opened with the token', async () => {
    const { src, c } = await connect({ token: TOKEN }, `?token=${TOKEN}`);
    expect(await disconnectVm(c, { id: 4, vm: 'vm-a' })).toMatchObject({ id: 4, ok: true });
    expect(src.controlCalls).toHaveLength(1);
  });

  it('passes the source’s errno through and reports EOPNOTSUPP when it has no controls', async () => {
    const src = new FakeSource();
    src.control = async (_a, name) => fail('ENOENT', `no VM '${name}'`);
    const m = await serve(src, { token: TOKEN });
    const c = await client(m, `?token=${TOKEN}`);
    c.send({ type: 'control', id: 5, action: 'disconnect-vm', vm: 'nope' });
    expect(await c.next('control-result')).toMatchObject({ id: 5, ok: false, code: 'ENOENT', message: "ENOENT: no VM 'nope'" });

    const bare = new FakeSource(undefined, false);
    const m2 = await serve(bare, { token: TOKEN });
    const d = await client(m2, `?token=${TOKEN}`);
    expect(await d.next('hello')).toMatchObject({ controls: [] });
    d.send({ type: 'control', id: 6, action: 'disconnect-vm', vm: 'vm-a' });
    expect(await d.next('control-result')).toMatchObject({ id: 6, ok: false, code: 'EOPNOTSUPP' });
  });

  it('refuses an upgrade with a wrong token (401)', async () => {
    const m = await serve(new FakeSource(), { token: TOKEN });
    await expect(WsClient.open(wsUrl(m.url, '?token=nope-nope-nope-nope'))).rejects.toThrow('HTTP 401');
  });

  it('on a non-loopback bind, refuses connections without the token (401)', async () => {
    const m = await serve(new FakeSource(), { host: '0.0.0.0', token: TOKEN });
    const local = `http://127.0.0.1:${m.port}/`;
    await expect(WsClient.open(wsUrl(local))).rejects.toThrow('HTTP 401');
    const c = await WsClient.open(wsUrl(local, `?token=${TOKEN}`));
    clients.push(c);
    expect(await c.next('summary')).toBeTruthy();
  });

  it('refuses cross-origin pages and foreign Host names (403)', async () => {
    const m = await serve(new FakeSource());
    await expect(WsClient.open(wsUrl(m.url), { Origin: 'http://evil.example' })).rejects.toThrow('HTTP 403');
    await expect(WsClient.open(wsUrl(m.url), { Host: `rebind.example:${m.port}` })).rejects.toThrow('HTTP 403');
    const ok = await client(m, '', { Origin: m.url.slice(0, -1) });
    expect(await ok.next('hello')).toBeTruthy();
  });

  it('closes every client with 1001 when the monitor closes', async () => {
    const m = await startMonitor(new FakeSource(), FAST);
    const c = await WsClient.open(wsUrl(m.url));
    await c.next('hello');
    await m.close();
    expect((await c.closed).code).toBe(1001);
  });
});
