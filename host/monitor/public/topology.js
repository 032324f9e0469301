// The iommufd topology of the selected VM as an SVG drawing: boxes in five columns (IOAS →
// paging HWPT → nested HWPT → RID / PASID attachment → device) joined by curves, as the host
// laid them out (host/monitor/topology.ts: every node has its column and row; this file only
// places them). Built with DOM calls only (no markup strings), so no data can become markup.
//
// Stable hooks for tests (do not rename):
//   [data-testid=topology] the <svg>; data-ioas, data-paging, data-nest-parents, data-nested,
//                          data-devices, data-rid-attachments, data-pasid-attachments (counts)
//   [data-testid=topology-node][data-id=<node id>][data-kind=<ioas|hwpt-paging|hwpt-nested|rid|pasid|device>]
//   [data-testid=topology-edge][data-from][data-to][data-kind=<ioas|parent|attach|device>]
//   [data-testid=topology-hidden][data-column=<n>] "+N more" under a column the host cut short

import { svgEl } from './charts.js';

const BOX_W = 150;
const BOX_H = 60;
const COL_GAP = 44;
const ROW_GAP = 14;
const HEAD_H = 26;
const PAD = 10;

const COUNT_ATTRS = [
  ['ioas', 'data-ioas'],
  ['paging', 'data-paging'],
  ['nestParents', 'data-nest-parents'],
  ['nested', 'data-nested'],
  ['devices', 'data-devices'],
  ['ridAttachments', 'data-rid-attachments'],
  ['pasidAttachments', 'data-pasid-attachments'],
];

function text(x, y, cls, s) {
  const t = svgEl('text', { x, y, class: cls });
  t.textContent = s;
  return t;
}

/** Draw `topo` (or nothing for null) into the <svg> `svg`. */
export function renderTopology(svg, topo) {
  svg.replaceChildren();
  if (!topo) {
    for (const [, attr] of COUNT_ATTRS) svg.removeAttribute(attr);
    svg.setAttribute('width', '0');
    svg.setAttribute('height', '0');
    return;
  }
  for (const [key, attr] of COUNT_ATTRS) svg.setAttribute(attr, String(topo.counts[key]));
  // rows per column: its nodes and the empty rows skipping edges pass through
  const rowsPerColumn = topo.columns.map(() => 0);
  for (const n of topo.nodes) rowsPerColumn[n.column] = Math.max(rowsPerColumn[n.column], n.row + 1);
  for (const e of topo.edges) if (e.via) rowsPerColumn[e.via.column] = Math.max(rowsPerColumn[e.via.column], e.via.row + 1);
  const maxRows = Math.max(1, ...rowsPerColumn);
  const hidden = topo.hidden ?? [];
  const footH = hidden.some((n) => n > 0) ? 22 : 0;
  const width = PAD * 2 + topo.columns.length * BOX_W + (topo.columns.length - 1) * COL_GAP;
  const height = PAD * 2 + HEAD_H + maxRows * BOX_H + (maxRows - 1) * ROW_GAP + footH;
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);

  const colX = (c) => PAD + c * (BOX_W + COL_GAP);
  // a column with fewer nodes is centred against the tallest one
  const rowY = (c, r) => {
    const n = rowsPerColumn[c];
    const span = n * BOX_H + (n - 1) * ROW_GAP;
    const full = maxRows * BOX_H + (maxRows - 1) * ROW_GAP;
    return PAD + HEAD_H + (full - span) / 2 + r * (BOX_H + ROW_GAP);
  };

  topo.columns.forEach((name, c) => svg.append(text(colX(c) + BOX_W / 2, PAD + 12, 'topo-col', name)));
  hidden.forEach((n, c) => {
    if (n <= 0) return;
    const t = text(colX(c) + BOX_W / 2, height - PAD - 4, 'topo-col', `+${n} more`);
    t.setAttribute('data-testid', 'topology-hidden');
    t.setAttribute('data-column', String(c));
    svg.append(t);
  });

  const pos = new Map(topo.nodes.map((n) => [n.id, { x: colX(n.column), y: rowY(n.column, n.row) }]));
  const edges = svgEl('g', { class: 'topo-edges' });
  for (const e of topo.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + BOX_W;
    const y1 = a.y + BOX_H / 2;
    const x2 = b.x;
    const y2 = b.y + BOX_H / 2;
    const curve = (xa, ya, xb, yb) => {
      const mid = (xa + xb) / 2;
      return `C${mid},${ya} ${mid},${yb} ${xb},${yb}`;
    };
    let d;
    if (e.via) {
      // through the empty row of the skipped column: curve in, straight across, curve out
      const vx = colX(e.via.column);
      const vy = rowY(e.via.column, e.via.row) + BOX_H / 2;
      d = `M${x1},${y1} ${curve(x1, y1, vx, vy)} L${vx + BOX_W},${vy} ${curve(vx + BOX_W, vy, x2, y2)}`;
    } else d = `M${x1},${y1} ${curve(x1, y1, x2, y2)}`;
    edges.append(
      svgEl('path', {
        d,
        class: `topo-edge edge-${e.kind}`,
        'data-testid': 'topology-edge',
        'data-from': e.from,
        'data-to': e.to,
        'data-kind': e.kind,
      }),
    );
  }
  svg.append(edges);

  for (const n of topo.nodes) {
    const { x, y } = pos.get(n.id);
    const g = svgEl('g', { class: `topo-node node-${n.kind}`, 'data-testid': 'topology-node', 'data-id': n.id, 'data-kind': n.kind, transform: `translate(${x},${y})` });
    const title = svgEl('title');
    title.textContent = [n.label, n.detail, ...n.flags].join(' · ');
    g.append(title, svgEl('rect', { width: BOX_W, height: BOX_H, rx: 7 }), text(9, 17, 'topo-label', n.label), text(9, 33, 'topo-detail', n.detail));
    // badges along the bottom edge, left to right, as many as fit
    let bx = 9;
    for (const f of n.flags) {
      const w = 8 + f.length * 5.4;
      if (bx + w > BOX_W - 4) break;
      g.append(svgEl('rect', { x: bx, y: 41, width: w, height: 13, rx: 4, class: 'topo-flag' }), text(bx + 4, 51, 'topo-flag-text', f));
      bx += w + 4;
    }
    svg.append(g);
  }
}

/** "2 IOAS · 1 nest parent · 3 nested · 2 devices · 4 PASIDs" for a summary's counts. */
export function topologyCountsText(c) {
  const p = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
  return [p(c.ioas, 'IOAS', 'IOAS'), p(c.paging, 'paging HWPT'), p(c.nested, 'nested HWPT'), p(c.devices, 'device'), p(c.pasidAttachments, 'PASID')].join(' · ');
}
