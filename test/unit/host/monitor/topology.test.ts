/**
 * The dashboard's iommufd topology (host/monitor/topology.ts): columns, rows, edges and counts of
 * a VM's object graph, the per-VM summary's uAPI and counts, and the hub sending a subscribed
 * VM's topology on subscribe and again only when its objects changed.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { buildTopology, topologyCounts, MAX_TOPOLOGY_ROWS, TOPOLOGY_COLUMNS } from '../../../../host/monitor/topology.js';
import { buildSummary, buildVmTopology } from '../../../../host/monitor/summary.js';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import { FakeSource, pasid, vm } from './fake-source.js';
import { WsClient, wsUrl, sleep } from './ws-client.js';
import { sampleObjects } from './iommufd-objects.js';

function where(t: ReturnType<typeof buildTopology>, column: number): string[] {
  return t.nodes.filter((n) => n.column === column).sort((a, b) => a.row - b.row).map((n) => n.id);
}

describe('iommufd topology data', () => {
  it('lays the objects out IOAS → paging HWPT → nested HWPT → attachment → device', () => {
    const t = buildTopology(sampleObjects());
    expect(t.columns).toEqual(TOPOLOGY_COLUMNS);
    expect(where(t, 0)).toEqual(['ioas:1']);
    expect(where(t, 1)).toEqual(['hwpt:3', 'hwpt:7']);
    expect(where(t, 2)).toEqual(['hwpt:4', 'hwpt:5']);
    // depth first: HWPT 4's attachments, then HWPT 5's, then the RID on the automatic HWPT 7
    expect(where(t, 3)).toEqual(['pasid:2:1', 'pasid:8:3', 'pasid:2:2', 'rid:2']);
    // devices by their first attachment's row; the unattached one last
    expect(where(t, 4)).toEqual(['dev:2', 'dev:8', 'dev:9']);
    for (const c of [0, 1, 2, 3, 4]) expect(t.nodes.filter((n) => n.column === c).map((n) => n.row)).toEqual([...where(t, c).keys()]);
    // the automatic HWPT attached directly: its edge passes through an empty row of the nested column
    expect(t.edges.find((e) => e.to === 'rid:2')).toEqual({ from: 'hwpt:7', to: 'rid:2', kind: 'attach', via: { column: 2, row: 2 } });
    expect(t.edges.filter((e) => e.via !== undefined)).toHaveLength(1);
  });

  it('joins parent and child, HWPT and attachment, attachment and device', () => {
    const t = buildTopology(sampleObjects());
    const edges = (kind: string) => t.edges.filter((e) => e.kind === kind).map((e) => `${e.from}>${e.to}`).sort();
    expect(edges('ioas')).toEqual(['ioas:1>hwpt:3', 'ioas:1>hwpt:7']);
    expect(edges('parent')).toEqual(['hwpt:3>hwpt:4', 'hwpt:3>hwpt:5']);
    expect(edges('attach')).toEqual(['hwpt:4>pasid:2:1', 'hwpt:4>pasid:8:3', 'hwpt:5>pasid:2:2', 'hwpt:7>rid:2']);
    expect(edges('device')).toEqual(['pasid:2:1>dev:2', 'pasid:2:2>dev:2', 'pasid:8:3>dev:8', 'rid:2>dev:2']);
    const ids = new Set(t.nodes.map((n) => n.id));
    for (const e of t.edges) expect(ids.has(e.from) && ids.has(e.to)).toBe(true);
  });

  it('labels each object with its figures and flags', () => {
    const t = buildTopology(sampleObjects());
    const node = (id: string) => t.nodes.find((n) => n.id === id)!;
    expect(node('ioas:1')).toMatchObject({ kind: 'ioas', label: 'IOAS 1', detail: '1 area · 16 MiB' });
    expect(node('hwpt:3')).toMatchObject({ kind: 'hwpt-paging', flags: ['NEST_PARENT', 'PASID'], detail: 'DID 5 · 2 users' });
    expect(node('hwpt:7').flags).toEqual(['auto']);
    expect(node('hwpt:5')).toMatchObject({ kind: 'hwpt-nested', detail: '0x104000 · DID 5', flags: ['PASID', 'fault 6'] });
    expect(node('pasid:8:3')).toMatchObject({ kind: 'pasid', label: '00:04.0 PASID 3', flags: ['global'] });
    expect(node('rid:2')).toMatchObject({ kind: 'rid', label: '00:03.0 RID' });
    expect(node('dev:2')).toMatchObject({ kind: 'device', detail: 'dev 2 · host 01:00.0', flags: ['2 PASIDs'] });
    expect(node('dev:9').flags).toEqual([]);
  });

  it('counts the objects of each kind', () => {
    expect(topologyCounts(sampleObjects())).toEqual({ ioas: 1, paging: 2, nestParents: 1, nested: 2, devices: 3, ridAttachments: 1, pasidAttachments: 3, faultQueues: 1 });
    expect(buildTopology(sampleObjects()).counts).toEqual(topologyCounts(sampleObjects()));
  });

  it('draws an empty context and objects a snapshot caught mid-change', () => {
    expect(buildTopology({ ioas: [], hwpts: [], devices: [], faults: [] })).toMatchObject({ nodes: [], edges: [] });
    const o = sampleObjects();
    o.ioas = []; // the HWPTs are still listed: drawn without their IOAS, nothing dangling
    const t = buildTopology(o);
    expect(where(t, 1)).toEqual(['hwpt:3', 'hwpt:7']);
    expect(t.edges.filter((e) => e.kind === 'ioas')).toEqual([]);
    o.devices[0]!.pasids.push({ pasid: 9, hwpt: 4242, global: false }); // a HWPT the snapshot lacks
    expect(buildTopology(o).nodes.some((n) => n.id === 'pasid:2:9')).toBe(false);
  });

  it('draws at most MAX_TOPOLOGY_ROWS rows per column and counts the rest', () => {
    const o = sampleObjects();
    const n = MAX_TOPOLOGY_ROWS + 10;
    for (let i = 0; i < n; i++) {
      const id = 100 + i;
      o.hwpts.push({ id, kind: 'nested', parent: 3, children: [], nestParent: false, auto: false, pasid: true, did: 5, flptr: '0x200000', fault: null, users: 1 });
      o.hwpts[0]!.children.push(id);
      o.devices[2]!.pasids.push({ pasid: 10 + i, hwpt: id, global: false });
    }
    const t = buildTopology(o);
    expect(t.counts).toMatchObject({ nested: n + 2, pasidAttachments: n + 3 });
    for (const c of [0, 1, 2, 3, 4]) expect(t.nodes.filter((x) => x.column === c).length).toBeLessThanOrEqual(MAX_TOPOLOGY_ROWS);
    expect(t.hidden).toEqual([0, 0, n + 2 - MAX_TOPOLOGY_ROWS, n + 4 - MAX_TOPOLOGY_ROWS, 0]);
    const ids = new Set(t.nodes.map((x) => x.id));
    for (const e of t.edges) {
      expect(ids.has(e.from) && ids.has(e.to)).toBe(true);
      if (e.via) expect(e.via.row).toBeLessThan(MAX_TOPOLOGY_ROWS);
    }
    expect(buildTopology(sampleObjects()).hidden).toEqual([0, 0, 0, 0, 0]);
  });

  it('puts the uAPI and the counts in each VM’s summary; a VFIO SVA VM has no topology', () => {
    const sva = vm('sva', [pasid(1, 1)]);
    const fd = { ...vm('fd', []), uapi: 'iommufd' as const, iommufd: sampleObjects() };
    const old = vm('old-host', []); // a snapshot without `uapi`
    const s = buildSummary({ pasidBits: 20, capacity: { total: 10, available: 9 }, vms: [{ ...sva, uapi: 'vfio-sva' }, fd, old] }, undefined);
    expect(s.vms.map((v) => v.uapi)).toEqual(['vfio-sva', 'iommufd', 'vfio-sva']);
    expect(s.vms[1]!.iommufd).toMatchObject({ ioas: 1, nested: 2, pasidAttachments: 3 });
    expect(s.vms[0]!.iommufd).toBeNull();
    expect(buildVmTopology(sva)).toBeNull();
    expect(buildVmTopology(fd)!.nodes.length).toBe(12);
  });
});

describe('iommufd topology over the dashboard WebSocket', () => {
  let monitor: MonitorHandle | undefined;
  let client: WsClient | undefined;
  afterEach(async () => {
    client?.close();
    await monitor?.close();
  });

  it('sends a subscribed VM’s topology, again only when its objects change, and null for a VFIO SVA VM', async () => {
    const fd = { ...vm('fd', []), uapi: 'iommufd' as const, iommufd: sampleObjects() };
    const src = new FakeSource([{ ...vm('sva', [pasid(1, 1)]), uapi: 'vfio-sva' }, fd]);
    monitor = await startMonitor(src, { summaryIntervalMs: 50, eventIntervalMs: 20 });
    client = await WsClient.open(wsUrl(monitor.url));
    const { summary } = await client.next('summary');
    expect(summary.vms.map((v: { uapi: string }) => v.uapi)).toEqual(['vfio-sva', 'iommufd']);

    client.send({ type: 'subscribe', vms: [{ name: 'fd' }] });
    const first = await client.next('topology');
    expect(first.vm).toBe('fd');
    expect(first.topology.counts).toMatchObject({ nested: 2, devices: 3 });
    await sleep(200); // several ticks with nothing changing
    expect(client.drain('topology')).toEqual([]);

    // a new nested HWPT on the nest parent, attached at PASID 4 of device 9
    const o = src.snap.vms[1]!.iommufd!;
    o.hwpts.push({ id: 10, kind: 'nested', parent: 3, children: [], nestParent: false, auto: false, pasid: true, did: 5, flptr: '0x108000', fault: null, users: 1 });
    o.hwpts[0]!.children.push(10);
    o.devices[2]!.pasids.push({ pasid: 4, hwpt: 10, global: false });
    const next = await client.next('topology');
    expect(next.topology.counts).toMatchObject({ nested: 3, pasidAttachments: 4 });
    expect(next.topology.edges).toContainEqual({ from: 'hwpt:3', to: 'hwpt:10', kind: 'parent' });
    const { summary: after } = await client.next('summary', (m) => m.summary.vms[1].iommufd.nested === 3);
    expect(after.vms[1].iommufd.pasidAttachments).toBe(4);

    client.send({ type: 'subscribe', vms: [{ name: 'sva' }] });
    expect(await client.next('topology')).toMatchObject({ vm: 'sva', topology: null });
  });
});
