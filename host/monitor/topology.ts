/**
 * The iommufd object graph of one VM as the dashboard draws it: the topology of Kevin Tian's
 * /dev/iommu proposal (2021) — an I/O address space, a kernel-managed paging table allocated as
 * a nest parent, user-managed (nested, VT-d stage-1) tables on it, and devices attached by RID
 * or RID+PASID — in the object kinds iommufd merged (drivers/iommu/iommufd/: IOAS, paging and
 * nested HWPTs, devices; docs/protocol.md §13).
 *
 * A pure function of the snapshot's `iommufd` field, so the hub builds it once per change and
 * the page only places boxes and curves. Five columns, left to right:
 *
 *   IOAS → paging HWPT → nested HWPT → attachment (RID or PASID) → device
 *
 * Edges: IOAS → each paging HWPT built from it; nest parent → each nested HWPT on it; HWPT →
 * each attachment of it; attachment → its device. A paging HWPT attached directly skips the
 * nested column: the nested column keeps an empty row for it and its attach edges pass through
 * that row (`via`), so they never run behind a nested HWPT's box. Rows: columns 0–3 in depth-first order from the IOASes (so the edges of one
 * tree do not cross another's), objects not reached that way after them; devices in the order
 * of their first attachment's row, unattached devices last. Node IDs are stable strings
 * ('ioas:1', 'hwpt:3', 'pasid:2:5' = device 2 PASID 5, 'rid:2', 'dev:2').
 *
 * A drawing stays readable and its message small: each column shows its first
 * MAX_TOPOLOGY_ROWS rows; the rest are counted in `hidden` (per column) and their edges left
 * out. `counts` always counts every object.
 */
import type { IommufdObjectsSnapshot } from '../../src/api/types.js';

export const TOPOLOGY_COLUMNS = ['IOAS', 'paging HWPT', 'nested HWPT', 'attachment', 'device'] as const;

/** Rows drawn per column; further objects are counted in Topology.hidden. */
export const MAX_TOPOLOGY_ROWS = 48;

export type TopologyNodeKind = 'ioas' | 'hwpt-paging' | 'hwpt-nested' | 'rid' | 'pasid' | 'device';

export interface TopologyNode {
  id: string;
  kind: TopologyNodeKind;
  /** Index into TOPOLOGY_COLUMNS. */
  column: number;
  /** Position within the column, from 0. */
  row: number;
  /** First line of the box, e.g. 'HWPT 3'. */
  label: string;
  /** Second line: the object's figures, e.g. 'NEST_PARENT · DID 5'. */
  detail: string;
  /** Short markers shown as badges: 'NEST_PARENT', 'auto', 'PASID', 'fault 7', 'global'. */
  flags: string[];
}

export type TopologyEdgeKind = 'ioas' | 'parent' | 'attach' | 'device';

export interface TopologyEdge {
  from: string;
  to: string;
  kind: TopologyEdgeKind;
  /** An empty row of a skipped column the edge passes through. */
  via?: { column: number; row: number };
}

export interface TopologyCounts {
  ioas: number;
  paging: number;
  nestParents: number;
  nested: number;
  devices: number;
  ridAttachments: number;
  pasidAttachments: number;
  faultQueues: number;
}

export interface Topology {
  columns: readonly string[];
  nodes: TopologyNode[];
  edges: TopologyEdge[];
  counts: TopologyCounts;
  /** Per column: objects beyond MAX_TOPOLOGY_ROWS, not drawn. */
  hidden: number[];
}

/** The counts alone (for the per-VM summary every client gets). */
export function topologyCounts(o: IommufdObjectsSnapshot): TopologyCounts {
  let paging = 0;
  let nestParents = 0;
  let nested = 0;
  for (const h of o.hwpts) {
    if (h.kind === 'nested') nested++;
    else {
      paging++;
      if (h.nestParent) nestParents++;
    }
  }
  let rid = 0;
  let pasid = 0;
  for (const d of o.devices) {
    if (d.rid !== null) rid++;
    pasid += d.pasids.length;
  }
  return { ioas: o.ioas.length, paging, nestParents, nested, devices: o.devices.length, ridAttachments: rid, pasidAttachments: pasid, faultQueues: o.faults.length };
}

type Hwpt = IommufdObjectsSnapshot['hwpts'][number];
type Device = IommufdObjectsSnapshot['devices'][number];

function hwptNode(h: Hwpt): Omit<TopologyNode, 'row'> {
  const flags: string[] = [];
  if (h.nestParent) flags.push('NEST_PARENT');
  if (h.auto) flags.push('auto');
  if (h.pasid) flags.push('PASID');
  if (h.fault !== null) flags.push(`fault ${h.fault}`);
  const detail = h.kind === 'nested' ? `${h.flptr ?? '?'} · DID ${h.did}` : `DID ${h.did} · ${h.users} user${h.users === 1 ? '' : 's'}`;
  return { id: `hwpt:${h.id}`, kind: h.kind === 'nested' ? 'hwpt-nested' : 'hwpt-paging', column: h.kind === 'nested' ? 2 : 1, label: `HWPT ${h.id}`, detail, flags };
}

/** The topology of one VM's iommufd objects (see the file comment for the layout rules). */
export function buildTopology(o: IommufdObjectsSnapshot): Topology {
  const hwptById = new Map(o.hwpts.map((h) => [h.id, h]));
  const devById = new Map(o.devices.map((d) => [d.id, d]));
  // Attachments per HWPT, in device-ID then PASID order (RID first).
  const attachmentsOf = new Map<number, { dev: Device; pasid: number | null; global: boolean }[]>();
  for (const d of [...o.devices].sort((a, b) => a.id - b.id)) {
    const add = (hwpt: number, pasid: number | null, global: boolean) => {
      let list = attachmentsOf.get(hwpt);
      if (list === undefined) attachmentsOf.set(hwpt, (list = []));
      list.push({ dev: d, pasid, global });
    };
    if (d.rid !== null) add(d.rid, null, false);
    for (const p of d.pasids) add(p.hwpt, p.pasid, p.global);
  }

  const columns: TopologyNode[][] = TOPOLOGY_COLUMNS.map(() => []);
  /** The next free row per column (nodes and the empty rows edges pass through). */
  const nextRow = TOPOLOGY_COLUMNS.map(() => 0);
  const placed = new Map<string, TopologyNode>();
  const edges: TopologyEdge[] = [];
  const place = (n: Omit<TopologyNode, 'row'>): TopologyNode => {
    const existing = placed.get(n.id);
    if (existing) return existing;
    const node: TopologyNode = { ...n, row: nextRow[n.column]!++ };
    columns[n.column]!.push(node);
    placed.set(node.id, node);
    return node;
  };

  const visitAttachments = (h: Hwpt): void => {
    const list = attachmentsOf.get(h.id) ?? [];
    const via = h.kind === 'paging' && list.length > 0 ? { column: 2, row: nextRow[2]!++ } : undefined;
    for (const a of list) {
      const id = a.pasid === null ? `rid:${a.dev.id}` : `pasid:${a.dev.id}:${a.pasid}`;
      const flags = a.global ? ['global'] : [];
      place(
        a.pasid === null
          ? { id, kind: 'rid', column: 3, label: `${a.dev.bdf} RID`, detail: `dev ${a.dev.id}`, flags }
          : { id, kind: 'pasid', column: 3, label: `${a.dev.bdf} PASID ${a.pasid}`, detail: `dev ${a.dev.id}`, flags },
      );
      edges.push({ from: `hwpt:${h.id}`, to: id, kind: 'attach', ...(via ? { via } : {}) });
    }
  };
  const visitHwpt = (h: Hwpt): void => {
    if (placed.has(`hwpt:${h.id}`)) return;
    place(hwptNode(h));
    if (h.kind === 'paging') {
      for (const c of [...h.children].sort((a, b) => a - b)) {
        const child = hwptById.get(c);
        if (child === undefined) continue;
        visitHwpt(child);
        edges.push({ from: `hwpt:${h.id}`, to: `hwpt:${c}`, kind: 'parent' });
      }
    }
    visitAttachments(h);
  };

  for (const i of [...o.ioas].sort((a, b) => a.id - b.id)) {
    place({ id: `ioas:${i.id}`, kind: 'ioas', column: 0, label: `IOAS ${i.id}`, detail: `${i.areas} area${i.areas === 1 ? '' : 's'} · ${formatBytes(i.mappedBytes)}`, flags: [] });
    // The paging HWPTs of this IOAS: listed by the IOAS, or naming it (whichever the snapshot has).
    const paging = new Set(i.hwpts);
    for (const h of o.hwpts) if (h.kind === 'paging' && h.ioas === i.id) paging.add(h.id);
    for (const id of [...paging].sort((a, b) => a - b)) {
      const h = hwptById.get(id);
      if (h === undefined) continue;
      visitHwpt(h);
      edges.push({ from: `ioas:${i.id}`, to: `hwpt:${id}`, kind: 'ioas' });
    }
  }
  // HWPTs not reached from an IOAS (a snapshot taken mid-change): after the others.
  for (const h of [...o.hwpts].sort((a, b) => a.id - b.id)) visitHwpt(h);

  // Devices: ordered by their first attachment's row; unattached devices last, by ID.
  const attachRows = new Map<number, number>();
  for (const n of columns[3]!) {
    const dev = Number(n.id.split(':')[1]);
    if (!attachRows.has(dev)) attachRows.set(dev, n.row);
  }
  const devices = [...o.devices].sort((a, b) => (attachRows.get(a.id) ?? Infinity) - (attachRows.get(b.id) ?? Infinity) || a.id - b.id);
  for (const d of devices) {
    const n = d.pasids.length;
    place({ id: `dev:${d.id}`, kind: 'device', column: 4, label: `${d.bdf}`, detail: `dev ${d.id} · host ${d.hostBdf}`, flags: n > 0 ? [`${n} PASID${n === 1 ? '' : 's'}`] : [] });
  }
  for (const a of columns[3]!) {
    const dev = Number(a.id.split(':')[1]);
    if (devById.has(dev)) edges.push({ from: a.id, to: `dev:${dev}`, kind: 'device' });
  }

  return truncate({ columns: TOPOLOGY_COLUMNS, nodes: columns.flat(), edges, counts: topologyCounts(o), hidden: TOPOLOGY_COLUMNS.map(() => 0) });
}

/** Keep the first MAX_TOPOLOGY_ROWS rows of each column and the edges between kept nodes. */
function truncate(t: Topology): Topology {
  if (!t.nodes.some((n) => n.row >= MAX_TOPOLOGY_ROWS) && !t.edges.some((e) => e.via && e.via.row >= MAX_TOPOLOGY_ROWS)) return t;
  const kept = new Set<string>();
  const nodes: TopologyNode[] = [];
  for (const n of t.nodes) {
    if (n.row < MAX_TOPOLOGY_ROWS) {
      nodes.push(n);
      kept.add(n.id);
    } else t.hidden[n.column]!++;
  }
  const edges: TopologyEdge[] = [];
  for (const e of t.edges) {
    if (!kept.has(e.from) || !kept.has(e.to)) continue;
    if (e.via && e.via.row >= MAX_TOPOLOGY_ROWS) edges.push({ from: e.from, to: e.to, kind: e.kind });
    else edges.push(e);
  }
  return { ...t, nodes, edges };
}

function formatBytes(n: number): string {
  if (n >= 2 ** 30 && n % 2 ** 30 === 0) return `${n / 2 ** 30} GiB`;
  if (n >= 2 ** 20 && n % 2 ** 20 === 0) return `${n / 2 ** 20} MiB`;
  if (n >= 2 ** 10 && n % 2 ** 10 === 0) return `${n / 2 ** 10} KiB`;
  return `${n} B`;
}
