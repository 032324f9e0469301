// vsva dashboard page. Talks to the monitor's WebSocket (/ws; protocol in host/monitor/protocol.ts):
// gets a per-VM summary, the PASID table page of the selected VM (it subscribes), and batched
// trace events. Everything from the server is rendered with textContent / attributes only.
// Chart rates come from the host (hello.history: its last 60 s; then one `chart` sample per
// second), each the difference of two real readings of the counters, so a page opened mid-run
// starts with the last minute and never with a jump from an empty baseline.
//
// Stable hooks for tests (do not rename):
//   #conn-status[data-testid=conn-status]      data-state = connecting | open | closed
//   [data-testid=vm-count], [data-testid=vm-connected-count]
//   [data-testid=capacity-total], [data-testid=capacity-available]   text "1,048,575", data-value="1048575"
//   [data-testid=counter-<allocs|binds|invalidations|faults|pageRequests|iotlb>]  totals (formatted text)
//   [data-testid=vm-card][data-vm=<name>]       one per VM; data-connected, data-used, data-quota;
//                                               aria-selected="true" on the selected one; click selects
//   #vm-detail[data-testid=vm-detail][data-vm=<selected name>]
//   [data-testid=detail-used], [data-testid=detail-quota]
//   [data-testid=pasid-table] tbody rows: [data-testid=pasid-row][data-hpasid=<n>][data-gpasid=<n or ''>][data-state]
//   [data-testid=pasid-range] "1–100 of N", [data-testid=pasid-prev], [data-testid=pasid-next]
//   [data-testid=event-log] rows: [data-testid=event-row][data-kind][data-vm]
//   [data-testid=events-dropped][data-dropped=<n>]
//   [data-testid=disconnect-vm] shown only when the monitor offers control actions
//   vm-card data-uapi=<vfio-sva|iommufd>, its [data-testid=vm-uapi] badge; [data-testid=detail-uapi]
//   [data-testid=topology-panel] shown for iommufd VMs, [data-testid=topology-summary]; the drawing's
//   hooks are listed in topology.js
// URL: #vm=<name> selects a VM; #token=<t> (or ?token=<t>) is passed to the WebSocket.
// window.vsvaDashboard exposes the live state for debugging.

import { formatShort, renderLineChart, renderSparkline, svgEl } from './charts.js';
import { renderTopology, topologyCountsText } from './topology.js';

const HISTORY = 120; // chart samples (one per second) kept by the page; the host sends its last 60 s
const PAGE_ROWS = 100;
const MAX_EVENT_ROWS = 300;
const RATE_COUNTERS = ['allocs', 'binds', 'invalidations', 'faults', 'pageRequests'];
const SERIES = {
  allocs: { label: 'allocations', color: '#4fb3ff' },
  binds: { label: 'binds', color: '#3ecf8e' },
  invalidations: { label: 'invalidations', color: '#b48cff' },
  faults: { label: 'faults', color: '#ff6b6b' },
  pageRequests: { label: 'page requests', color: '#f2b84b' },
};
/** The totals tiles after VMs and capacity: [counter, label, initial value, initial rate]. */
const COUNTER_TILES = [
  ['allocs', 'Allocations', '0', '0/s'],
  ['binds', 'Binds', '0', '0/s'],
  ['invalidations', 'Invalidations', '0', '0/s'],
  ['faults', 'Faults', '0', '0/s'],
  ['pageRequests', 'Page requests', '0', '0/s'],
  ['iotlb', 'IOTLB hit ratio', '–', '–'],
];
const DETAIL_CELLS = [
  ['allocs', 'Allocs'],
  ['frees', 'Frees'],
  ['binds', 'Binds'],
  ['unbinds', 'Unbinds'],
  ['invalidations', 'Invalidations'],
  ['faults', 'Faults'],
  ['pageRequests', 'Page reqs'],
  ['iotlb', 'IOTLB hits'],
];

const $ = (id) => document.getElementById(id);
const nf = new Intl.NumberFormat('en-US');

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, String(v));
  }
  el.append(...children);
  return el;
}

const hashParams = new URLSearchParams(location.hash.slice(1));
const token = hashParams.get('token') ?? new URLSearchParams(location.search).get('token');

const state = {
  ws: null,
  hello: null,
  summary: null,
  selected: hashParams.get('vm'),
  page: { offset: 0, limit: PAGE_ROWS },
  pasidPage: null,
  topology: null,
  shownRows: { key: '', hpasids: new Set() },
  // chart history from the host: totals and per VM, one sample a second
  chartColumns: [...RATE_COUNTERS, 'iotlbRatio'],
  total: newHistory(),
  vms: new Map(),
  events: [],
  eventsPaused: false,
  eventsDropped: 0,
  eventsThisSecond: 0,
  eventRate: 0,
  nextControlId: 1,
};
window.vsvaDashboard = state;

function newHistory() {
  const hist = { iotlbRatio: [] };
  for (const c of RATE_COUNTERS) hist[c] = [];
  return hist;
}

function pushCapped(arr, v) {
  arr.push(v);
  if (arr.length > HISTORY) arr.shift();
}

// ---------------------------------------------------------------- connection

let backoff = 500;

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  setConn('connecting', 'connecting…');
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.addEventListener('open', () => {
    backoff = 500;
    setConn('open', 'live');
    subscribe();
  });
  ws.addEventListener('message', (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    onMessage(msg);
  });
  ws.addEventListener('close', () => {
    if (state.ws !== ws) return;
    state.ws = null;
    setConn('closed', 'disconnected');
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  });
}

function setConn(s, text) {
  const el = $('conn-status');
  el.dataset.state = s;
  el.textContent = text;
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function subscribe() {
  const vms = state.selected ? [{ name: state.selected, offset: state.page.offset, limit: state.page.limit }] : [];
  send({ type: 'subscribe', vms });
}

function onMessage(msg) {
  switch (msg.type) {
    case 'hello':
      state.hello = msg;
      $('readonly-badge').hidden = !msg.readOnly;
      $('disconnect-btn').hidden = !msg.controls.includes('disconnect-vm');
      applyHistory(msg.history);
      break;
    case 'chart':
      addChartSample(msg.sample);
      break;
    case 'summary':
      onSummary(msg.summary);
      break;
    case 'pasids':
      if (msg.vm === state.selected) {
        state.pasidPage = msg.page;
        renderPasidTable();
      }
      break;
    case 'topology':
      if (msg.vm === state.selected) {
        state.topology = msg.topology;
        renderTopologyPanel();
      }
      break;
    case 'events':
      onEvents(msg.events, msg.dropped);
      break;
    case 'control-result':
      onControlResult(msg);
      break;
    case 'error':
      console.warn(`dashboard: server rejected a message: ${msg.code} ${msg.message}`);
      break;
  }
}

// ---------------------------------------------------------------- summary, tiles, VM list

function onSummary(summary) {
  const first = state.summary === null;
  state.summary = summary;
  const names = new Set(summary.vms.map((v) => v.name));
  if (!state.selected || !names.has(state.selected)) {
    if (summary.vms.length > 0 && (!state.selected || first)) select(summary.vms[0].name);
  }
  for (const name of [...state.vms.keys()]) if (!names.has(name)) state.vms.delete(name);
  renderTotals();
  renderVmList();
  renderDetail();
}

function renderTotals() {
  const s = state.summary;
  $('pasid-bits').textContent = String(s.pasidBits);
  $('vm-count').textContent = String(s.vmCount);
  $('vm-connected-count').textContent = String(s.connectedCount);
  setNumber($('capacity-total'), s.capacity.total);
  setNumber($('capacity-available'), s.capacity.available);
  const usedFrac = s.capacity.total > 0 ? 1 - s.capacity.available / s.capacity.total : 0;
  const bar = $('capacity-bar');
  bar.style.width = `${Math.max(usedFrac * 100, usedFrac > 0 ? 0.5 : 0).toFixed(2)}%`;
  bar.classList.toggle('warn', usedFrac > 0.9);
  bar.title = `${(usedFrac * 100).toFixed(2)}% of host PASIDs in use`;
  for (const tile of document.querySelectorAll('.tile[data-counter]')) {
    const c = tile.dataset.counter;
    const value = tile.querySelector('.tile-value');
    const rate = tile.querySelector('.rate');
    if (c === 'iotlb') {
      value.textContent = hitRatioText(s.totals.iotlbHits, s.totals.iotlbMisses);
      const r = lastOf(state.total.iotlbRatio);
      rate.textContent = r === null ? 'no lookups' : `${(r * 100).toFixed(1)}% last second`;
      continue;
    }
    value.textContent = nf.format(s.totals[c]);
    const r = lastOf(state.total[c]) ?? 0;
    rate.textContent = `${formatRate(r)}/s`;
    rate.classList.toggle('up', r > 0);
  }
}

/** Show n formatted ("1,048,575") with the plain integer in data-value for tests. */
function setNumber(el, n) {
  el.textContent = nf.format(n);
  el.dataset.value = String(n);
}

function hitRatioText(hits, misses) {
  if (hits === null || misses === null) return '–';
  const n = hits + misses;
  return n === 0 ? '–' : `${((hits / n) * 100).toFixed(1)}%`;
}

function lastOf(arr) {
  return arr && arr.length > 0 ? arr[arr.length - 1] : null;
}

function formatRate(r) {
  if (r === null) return '–';
  return r >= 1000 ? formatShort(r) : r >= 10 || Number.isInteger(r) ? String(Math.round(r)) : r.toFixed(1);
}

const cards = new Map(); // name -> { root, dot, use, devices, counts, spark }

function makeCard(name) {
  const dot = h('span', { class: 'conn-dot' });
  const use = h('span', { class: 'vm-use' });
  const fill = h('div', { class: 'bar-fill' });
  const devices = h('span');
  const counts = h('span');
  const uapi = h('span', { class: 'uapi', 'data-testid': 'vm-uapi' });
  const spark = svgEl('svg', { class: 'spark', 'aria-hidden': 'true' });
  const root = h(
    'div',
    { class: 'vm-card', 'data-testid': 'vm-card', 'data-vm': name, role: 'option', tabindex: '0' },
    h('div', { class: 'vm-card-top' }, h('span', { class: 'vm-name' }, dot, h('span', { text: name, title: name }), uapi), use),
    h('div', { class: 'bar' }, fill),
    h('div', { class: 'vm-card-bottom' }, devices, counts, spark),
  );
  root.addEventListener('click', () => select(name));
  root.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') select(name);
  });
  return { root, dot, use, fill, devices, counts, spark, uapi };
}

function renderVmList() {
  const list = $('vm-list');
  const filter = $('vm-filter').value.trim().toLowerCase();
  const seen = new Set();
  let prev = null;
  for (const vm of state.summary.vms) {
    seen.add(vm.name);
    let card = cards.get(vm.name);
    if (!card) {
      card = makeCard(vm.name);
      cards.set(vm.name, card);
    }
    const r = card.root;
    // keep DOM order equal to summary order without re-inserting unchanged nodes
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== r) list.insertBefore(r, want);
    prev = r;
    r.dataset.connected = String(vm.connected);
    r.dataset.used = String(vm.used);
    r.dataset.quota = String(vm.quota);
    if (r.dataset.uapi !== vm.uapi) {
      r.dataset.uapi = vm.uapi;
      card.uapi.textContent = vm.uapi;
      card.uapi.className = `uapi uapi-${vm.uapi}`;
    }
    r.hidden = filter !== '' && !vm.name.toLowerCase().includes(filter);
    const selected = vm.name === state.selected;
    r.classList.toggle('selected', selected);
    r.setAttribute('aria-selected', String(selected));
    card.dot.className = `conn-dot ${vm.connected ? 'on' : 'off'}`;
    card.dot.title = vm.connected ? 'connected' : 'disconnected';
    card.use.replaceChildren(h('b', { text: nf.format(vm.used) }), ` / ${nf.format(vm.quota)}`);
    const frac = vm.quota > 0 ? vm.used / vm.quota : 0;
    card.fill.style.width = `${Math.min(frac * 100, 100).toFixed(1)}%`;
    card.fill.classList.toggle('warn', frac > 0.9);
    card.devices.textContent = `${vm.devices.length} device${vm.devices.length === 1 ? '' : 's'}`;
    card.counts.textContent = `${nf.format(vm.counts.bound)} bound`;
    const hist = state.vms.get(vm.name);
    if (hist) renderSparkline(card.spark, hist.binds.length ? hist.binds : [0]);
  }
  for (const [name, card] of cards) {
    if (!seen.has(name)) {
      card.root.remove();
      cards.delete(name);
    }
  }
}

function select(name) {
  if (state.selected !== name || state.pasidPage === null) {
    state.page = { offset: 0, limit: PAGE_ROWS };
    state.pasidPage = null;
    state.topology = null;
  }
  state.selected = name;
  const params = new URLSearchParams(location.hash.slice(1));
  params.set('vm', name);
  history.replaceState(null, '', `#${params.toString()}`);
  subscribe();
  if (state.summary) {
    renderVmList();
    renderDetail();
    renderCharts();
    renderPasidTable();
    renderTopologyPanel();
    renderEventLog();
  }
}

// ---------------------------------------------------------------- selected VM

function selectedVm() {
  return state.summary?.vms.find((v) => v.name === state.selected) ?? null;
}

function renderDetail() {
  const vm = selectedVm();
  const panel = $('vm-detail');
  panel.dataset.vm = vm ? vm.name : '';
  $('detail-name').textContent = vm ? vm.name : 'No VM selected';
  $('detail-conn').className = vm ? `conn-dot ${vm.connected ? 'on' : 'off'}` : 'conn-dot';
  $('detail-conn').title = vm ? (vm.connected ? 'connected' : 'disconnected') : '';
  $('detail-uapi').hidden = !vm;
  if (!vm) return;
  $('detail-uapi').textContent = `${vm.uapi} uAPI`;
  $('detail-uapi').className = `uapi uapi-${vm.uapi}`;
  $('detail-uapi').dataset.uapi = vm.uapi;
  $('topology-summary').textContent = vm.iommufd ? topologyCountsText(vm.iommufd) : '';
  $('detail-devices').replaceChildren(...vm.devices.map((d) => h('span', { class: `tag kind-${d.kind}`, text: `${d.bdf} ${d.kind}`, 'data-testid': 'device-tag' })));
  $('detail-used').textContent = nf.format(vm.used);
  $('detail-quota').textContent = nf.format(vm.quota);
  const frac = vm.quota > 0 ? vm.used / vm.quota : 0;
  $('detail-bar').style.width = `${Math.min(frac * 100, 100).toFixed(1)}%`;
  $('detail-bar').classList.toggle('warn', frac > 0.9);
  const c = vm.counts;
  $('detail-states').replaceChildren(
    ...[
      ['active', c.active],
      ['idle', c.idle],
      ['free-pending', c.freePending],
      ['bound', c.bound],
    ].map(([label, n]) => h('span', {}, h('b', { text: nf.format(n) }), ` ${label}`)),
  );
  const hist = state.vms.get(vm.name);
  $('detail-rates').replaceChildren(
    ...DETAIL_CELLS.map(([key, label]) => {
      let v;
      let r;
      if (key === 'iotlb') {
        v = hitRatioText(vm.stats.iotlbHits, vm.stats.iotlbMisses);
        const ratio = hist ? lastOf(hist.iotlbRatio) : null;
        r = ratio === null ? 'no lookups' : `${(ratio * 100).toFixed(1)}% now`;
      } else {
        v = nf.format(vm.stats[key]);
        r = `${formatRate(hist && hist[key] ? (lastOf(hist[key]) ?? 0) : 0)}/s`;
      }
      return h('div', { class: 'rate-cell', 'data-counter': key }, h('div', { class: 'tile-label', text: label }), h('div', { class: 'v', text: v }), h('div', { class: 'r', text: r }));
    }),
  );
}

function renderPasidTable() {
  const tbody = $('pasid-rows');
  const page = state.pasidPage;
  const empty = $('pasid-empty');
  if (!page || page.rows.length === 0) {
    tbody.replaceChildren();
    empty.hidden = false;
    const vm = selectedVm();
    // iommufd attaches device PASIDs without the system allocator: those are in the drawing above
    const none = vm && vm.uapi === 'iommufd' ? 'No PASIDs from the IOASID set (device PASID attachments are drawn above)' : 'No PASIDs';
    empty.textContent = !state.selected ? 'No VM selected' : page === null && vm === null ? 'VM not found' : none;
    $('pasid-range').textContent = page ? `0 of ${nf.format(page.total)}` : '';
    $('pasid-prev').disabled = !page || page.offset === 0;
    $('pasid-next').disabled = true;
    if (page && page.total > 0 && page.offset >= page.total) {
      state.page.offset = Math.max(0, page.total - state.page.limit);
      subscribe();
    }
    return;
  }
  empty.hidden = true;
  const key = `${state.selected}/${page.offset}`;
  const prevShown = state.shownRows.key === key ? state.shownRows.hpasids : null;
  const rows = page.rows.map((p) => {
    const tr = h('tr', { 'data-testid': 'pasid-row', 'data-hpasid': p.hpasid, 'data-gpasid': p.gpasid ?? '', 'data-state': p.state });
    if (prevShown && !prevShown.has(p.hpasid)) tr.className = 'fresh';
    tr.append(
      h('td', { class: 'num', text: p.hpasid }),
      p.gpasid === null ? h('td', { class: 'num none', text: '—' }) : h('td', { class: 'num', text: p.gpasid }),
      h('td', {}, h('span', { class: `state state-${p.state}`, text: p.state })),
      h('td', { class: 'num', text: p.refs }),
      h('td', {}, ...p.users.map((u) => h('span', { class: `tag user-${u}`, text: u })), p.users.length === 0 ? h('span', { class: 'none', text: '—' }) : ''),
      h(
        'td',
        {},
        ...(p.bindings.length === 0
          ? [h('span', { class: 'none', text: 'unbound' })]
          : p.bindings.map((b) =>
              h('div', { class: 'binding' }, `${b.bdf} · `, h('span', { class: 'pgtt', text: b.pgtt }), b.flptr ? ' · ' : '', b.flptr ? h('span', { class: 'flptr', text: b.flptr }) : ''),
            )),
      ),
    );
    return tr;
  });
  tbody.replaceChildren(...rows);
  state.shownRows = { key, hpasids: new Set(page.rows.map((p) => p.hpasid)) };
  const from = page.offset + 1;
  const to = page.offset + page.rows.length;
  $('pasid-range').textContent = `${nf.format(from)}–${nf.format(to)} of ${nf.format(page.total)}`;
  $('pasid-prev').disabled = page.offset === 0;
  $('pasid-next').disabled = to >= page.total;
}

/** The selected VM's iommufd objects (hidden for a VFIO SVA VM). */
function renderTopologyPanel() {
  const topo = state.topology;
  $('topology-panel').hidden = !topo;
  renderTopology($('topology'), topo);
}

function movePage(dir) {
  const page = state.pasidPage;
  const next = state.page.offset + dir * state.page.limit;
  if (next < 0 || (page && next >= page.total)) return;
  state.page.offset = next;
  subscribe();
}

// ---------------------------------------------------------------- history and charts

function countEventRate() {
  state.eventRate = state.eventsThisSecond;
  state.eventsThisSecond = 0;
  $('event-rate').textContent = `${nf.format(state.eventRate)} events/s`;
}

/** Start the charts over from the host's recent history (on every hello, so a reconnect has no gap or duplicate). */
function applyHistory(history) {
  state.total = newHistory();
  state.vms = new Map();
  if (!history) return;
  if (Array.isArray(history.columns)) state.chartColumns = history.columns;
  for (const s of history.samples) addChartSample(s, false);
  renderCharts();
}

/** Append one host chart sample (rows in the order of state.chartColumns). */
function addChartSample(sample, render = true) {
  addRow(state.total, sample.total);
  for (const [name, row] of Object.entries(sample.vms)) {
    let hist = state.vms.get(name);
    if (!hist) state.vms.set(name, (hist = newHistory()));
    addRow(hist, row);
  }
  if (render && state.summary) renderTotals();
}

function addRow(hist, row) {
  state.chartColumns.forEach((col, i) => {
    if (hist[col]) pushCapped(hist[col], row[i] ?? null);
  });
}

function seriesOf(hist) {
  return RATE_COUNTERS.map((c) => ({ ...SERIES[c], values: hist[c] }));
}

function renderCharts() {
  // the window grows with the history (at least 30 s, at most HISTORY) so a fresh page is not empty
  const span = Math.min(HISTORY, Math.max(30, state.total.allocs.length));
  $('activity-window').textContent = `per second, last ${span} s`;
  renderLineChart($('activity-chart'), seriesOf(state.total), { capacity: span });
  const hist = state.vms.get(state.selected) ?? newHistory();
  renderLineChart($('vm-chart'), seriesOf(hist), { capacity: span, area: false });
}

function renderLegend() {
  $('activity-legend').replaceChildren(
    ...RATE_COUNTERS.map((c) => {
      const swatch = h('span', { class: 'swatch' });
      swatch.style.background = SERIES[c].color; // CSSOM, allowed by the CSP (no inline style attributes)
      return h('span', {}, swatch, SERIES[c].label);
    }),
  );
}

// ---------------------------------------------------------------- events

function onEvents(events, dropped) {
  state.eventsThisSecond += events.length + dropped;
  if (dropped > 0) {
    state.eventsDropped += dropped;
    const el = $('events-dropped');
    el.hidden = false;
    el.dataset.dropped = String(state.eventsDropped);
    el.textContent = `${nf.format(state.eventsDropped)} dropped (rate-limited)`;
  }
  for (const ev of events) state.events.push(ev);
  if (state.events.length > MAX_EVENT_ROWS * 2) state.events.splice(0, state.events.length - MAX_EVENT_ROWS);
  if (state.eventsPaused) return;
  const tbody = $('event-rows');
  const rows = events.filter(eventVisible).map(eventRow).reverse();
  tbody.prepend(...rows);
  while (tbody.childElementCount > MAX_EVENT_ROWS) tbody.lastElementChild.remove();
}

function eventVisible(ev) {
  return !$('events-selected-only').checked || ev.vm === state.selected;
}

function renderEventLog() {
  const rows = state.events.filter(eventVisible).slice(-MAX_EVENT_ROWS).map(eventRow).reverse();
  $('event-rows').replaceChildren(...rows);
}

function formatTime(tsMicros) {
  const d = new Date(tsMicros / 1000);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function eventRow(ev) {
  const args = ev.args ? Object.entries(ev.args).map(([k, v]) => `${k}=${v}`).join(' ') : '';
  const dur = typeof ev.dur === 'number' ? ` (${ev.dur} µs)` : '';
  return h(
    'tr',
    { 'data-testid': 'event-row', 'data-kind': ev.kind, 'data-vm': ev.vm ?? '' },
    h('td', { class: 'time', text: formatTime(ev.ts) }),
    h('td', { text: ev.vm ?? '—' }),
    h('td', { class: 'muted', text: ev.side }),
    h('td', {}, h('span', { class: `kind kind-${ev.kind}`, text: ev.kind })),
    h('td', { text: ev.name + dur }),
    h('td', { class: 'details', text: args }),
  );
}

// ---------------------------------------------------------------- controls

function onControlResult(msg) {
  const btn = $('disconnect-btn');
  btn.disabled = false;
  btn.textContent = msg.ok ? 'Disconnected' : `Failed: ${msg.code}`;
  btn.title = msg.ok ? '' : msg.message;
  setTimeout(() => (btn.textContent = 'Disconnect'), 2500);
}

function buildCounterTiles() {
  for (const [key, label, value, rate] of COUNTER_TILES) {
    $('tiles').append(
      h('div', { class: 'tile', 'data-counter': key }, h('div', { class: 'tile-label', text: label }), h('div', { class: 'tile-value', 'data-testid': `counter-${key}`, text: value }), h('div', { class: 'tile-sub rate', text: rate })),
    );
  }
}

function setup() {
  buildCounterTiles();
  renderLegend();
  $('pasid-prev').addEventListener('click', () => movePage(-1));
  $('pasid-next').addEventListener('click', () => movePage(1));
  $('vm-filter').addEventListener('input', () => state.summary && renderVmList());
  $('events-selected-only').addEventListener('change', renderEventLog);
  $('events-pause').addEventListener('click', () => {
    state.eventsPaused = !state.eventsPaused;
    $('events-pause').textContent = state.eventsPaused ? 'Resume' : 'Pause';
    $('events-pause').classList.toggle('active', state.eventsPaused);
    if (!state.eventsPaused) renderEventLog();
  });
  $('disconnect-btn').addEventListener('click', () => {
    if (!state.selected) return;
    $('disconnect-btn').disabled = true;
    send({ type: 'control', id: state.nextControlId++, action: 'disconnect-vm', vm: state.selected, ...(token ? { token } : {}) });
  });
  window.addEventListener('resize', renderCharts);
  setInterval(() => {
    countEventRate();
    if (state.summary) {
      renderTotals();
      renderDetail();
      renderVmList();
    }
    renderCharts();
  }, 1000);
  renderCharts();
  connect();
}

setup();
