// Small hand-written SVG charts for the dashboard: a multi-series line chart with a y axis and
// a sparkline. Values are numbers only; labels come from the page's own constants, and every
// node is built with DOM calls (no markup strings), so no data can become markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svgEl(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** Smallest "nice" number (1, 2, 2.5, 5 × 10^k) at or above v. */
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function formatShort(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(v >= 1e10 ? 0 : 1) + 'G';
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + 'k';
  if (v === 0) return '0';
  return v < 10 && !Number.isInteger(v) ? v.toFixed(1) : String(Math.round(v));
}

/**
 * Draw series (each { label, color, values: number[] }, newest last) into `container`, the
 * newest point at the right edge; `capacity` points span the full width.
 */
export function renderLineChart(container, series, { capacity = 120, area = true } = {}) {
  const width = Math.max(container.clientWidth, 100);
  const height = Math.max(container.clientHeight, 60);
  const left = 42;
  const right = 6;
  const top = 6;
  const bottom = 16;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v > max) max = v;
  const yMax = niceCeil(max);

  const svg = svgEl('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    svg.append(svgEl('line', { class: 'grid', x1: left, x2: width - right, y1: y.toFixed(1), y2: y.toFixed(1) }));
    const label = svgEl('text', { class: 'axis-label', x: left - 6, y: (y + 3).toFixed(1), 'text-anchor': 'end' });
    label.textContent = formatShort((yMax * i) / 4);
    svg.append(label);
  }
  const tLabel = svgEl('text', { class: 'axis-label', x: left, y: height - 3 });
  tLabel.textContent = `-${Math.round(capacity)}s`;
  const nowLabel = svgEl('text', { class: 'axis-label', x: width - right, y: height - 3, 'text-anchor': 'end' });
  nowLabel.textContent = 'now';
  svg.append(tLabel, nowLabel);

  const step = plotW / Math.max(capacity - 1, 1);
  for (const s of series) {
    const n = s.values.length;
    if (n === 0) continue;
    const pts = [];
    for (let i = 0; i < n; i++) {
      const x = left + plotW - (n - 1 - i) * step;
      const y = top + plotH - (plotH * s.values[i]) / yMax;
      pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    }
    if (area && n > 1) {
      const x0 = (left + plotW - (n - 1) * step).toFixed(1);
      const base = (top + plotH).toFixed(1);
      svg.append(svgEl('polygon', { class: 'area', fill: s.color, points: `${x0},${base} ${pts.join(' ')} ${(left + plotW).toFixed(1)},${base}` }));
    }
    svg.append(svgEl('polyline', { class: 'series', stroke: s.color, points: pts.join(' ') }));
  }
  container.replaceChildren(svg);
}

/** A tiny line of `values` scaled to [0, max(values, floor)]. */
export function renderSparkline(svg, values, floor = 1) {
  const w = 64;
  const h = 16;
  let max = floor;
  for (const v of values) if (v > max) max = v;
  const n = values.length;
  const pts = [];
  for (let i = 0; i < n; i++) {
    const x = n === 1 ? w : (w * i) / (n - 1);
    pts.push(`${x.toFixed(1)},${(h - 1 - ((h - 2) * values[i]) / max).toFixed(1)}`);
  }
  let line = svg.firstChild;
  if (!line) {
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    line = svgEl('polyline');
    svg.append(line);
  }
  line.setAttribute('points', pts.join(' '));
}
