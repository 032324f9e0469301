/**
 * Scale benchmark (docs/design.md §9: "64 VMs × 1024 bound PASIDs on one host; dashboard snapshot under
 * 50 ms at that size"). One spawned host; 64 in-process VT-d guests (16 MiB of RAM each — the
 * guest half is cheap) connect to it, and each allocates 1024 PASIDs through VCMD and binds
 * each one (PASID entry + PASID-cache flush + wait) — the VMs run concurrently.
 *
 * Figures, each beside a baseline measured in the same run:
 * - set-up time per bound PASID, amortised over all VMs (VM start-up included), beside the raw
 *   Node Unix-socket ping-pong p50 (two processes); the total set-up time is in the notes.
 * - host RSS with every PASID bound, beside the RSS of the same host process before any VM
 *   connected; bytes per bound PASID in the notes.
 * - first dashboard render after 49k changes: the PASIDs' changes since set-up (each VM
 *   unbinds and re-binds 768 of its PASIDs: 49,152 in all), then a WebSocket client connects
 *   to the dashboard as the page does and is timed until it holds what the page renders first:
 *   hello, the summary, and the PASID page of the first VM (subscribed when the summary came,
 *   as dashboard.js does). Beside the same on the empty host; target ≤ 50 ms. The hub's phases
 *   of that refresh (host snapshot, summary JSON, send) are in the notes, from its pong.
 * - first GET_STATE page (docs/protocol.md §10.9) of 4 VMs after those changes, beside the
 *   same page again; target ≤ 50 ms. The whole snapshot as the harness reads it (pages of 8
 *   VMs) is informational.
 * - dashboard refresh at full size: the median of the hub's own timing of its refreshes
 *   (snapshot + counters + summary JSON, every 500 ms while a client is connected; the window
 *   restarts when a client connects), beside the same on the empty host. Target < 50 ms.
 * `quick` scales down to 8 VMs × 128 PASIDs (the figure names say the size).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startHost, type StartedHost } from '../harness/start-host.js';
import { startGuest, type StartedGuest } from '../harness/start-guest.js';
import { stat, type BenchFigure, type BenchModule, type BenchOptions } from './types.js';
import { RawClient, ratioFigure, rttRuns, startPeer, type Peer } from './pingpong-baseline.js';
import { VtdBenchDriver } from './vtd-bench-driver.js';
import WebSocket from 'ws';
import type { RefreshTiming } from '../../../host/monitor/protocol.js';
import { FrontendClient, ProtocolFeature } from '../../../vhost/index.js';

/** VMs per GET_STATE page in the page figure. */
const PAGE_VMS = 4;

/**
 * Connect to the dashboard, let its hub refresh `ticks` times (one per summary interval), and
 * return the hub's own timing of those refreshes (from its pong).
 */
async function dashboardRefresh(url: string, ticks: number, intervalMs = 500): Promise<RefreshTiming> {
  const u = new URL(url);
  const ws = new WebSocket(`ws://${u.host}/ws`, { headers: { origin: u.origin } });
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    await new Promise((r) => setTimeout(r, ticks * intervalMs + intervalMs / 2));
    return await new Promise<RefreshTiming>((resolve, reject) => {
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data)) as { type: string; refresh?: RefreshTiming };
        if (msg.type === 'pong' && msg.refresh) resolve(msg.refresh);
      });
      ws.once('error', reject);
      ws.send(JSON.stringify({ type: 'ping', id: 1 }));
    });
  } finally {
    ws.close();
  }
}

/** What a client waited for, from the start of its connection (ms), and the hub's phases of its refresh. */
interface FirstRender {
  helloMs: number;
  summaryMs: number;
  pageMs: number;
  pageRows: number;
  phases: { snapshot: number; summary: number; send: number } | null;
}

/**
 * Connect to the dashboard as the page does (host/monitor/public/dashboard.js): on the first
 * summary, subscribe to the first VM's PASID table; time hello, summary and that page from the
 * start of the connection. Then ask the hub (ping) for its phases of the refresh it ran.
 */
async function firstRender(url: string): Promise<FirstRender> {
  const u = new URL(url);
  const t0 = performance.now();
  const ws = new WebSocket(`ws://${u.host}/ws`, { headers: { origin: u.origin } });
  try {
    const got = await new Promise<Omit<FirstRender, 'phases'>>((resolve, reject) => {
      let helloMs = NaN;
      let summaryMs = NaN;
      let first: string | null = null;
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data)) as { type: string; summary?: { vms: { name: string }[] }; vm?: string; page?: { rows: unknown[] } | null };
        if (msg.type === 'hello') helloMs = performance.now() - t0;
        else if (msg.type === 'summary' && Number.isNaN(summaryMs)) {
          summaryMs = performance.now() - t0;
          first = msg.summary!.vms[0]?.name ?? null;
          if (first === null) resolve({ helloMs, summaryMs, pageMs: summaryMs, pageRows: 0 });
          else ws.send(JSON.stringify({ type: 'subscribe', vms: [{ name: first }] }));
        } else if (msg.type === 'pasids' && msg.vm === first) resolve({ helloMs, summaryMs, pageMs: performance.now() - t0, pageRows: msg.page?.rows.length ?? 0 });
      });
      ws.once('error', reject);
    });
    const refresh = await new Promise<RefreshTiming>((resolve, reject) => {
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data)) as { type: string; refresh?: RefreshTiming };
        if (msg.type === 'pong' && msg.refresh) resolve(msg.refresh);
      });
      ws.once('error', reject);
      ws.send(JSON.stringify({ type: 'ping', id: 1 }));
    });
    return { ...got, phases: refresh.first ?? null };
  } finally {
    ws.close();
    await new Promise((r) => setTimeout(r, 100)); // the hub sees the client go: the next one starts an idle hub again
  }
}

const GUEST_RAM = 16 * 1024 * 1024;
/** PASIDs of each VM unbound and re-bound before the "after changes" figures (64 × 768 = 49,152 changes). */
const CHANGED_PER_VM = 768;

/** Resident set size of a process (bytes), from /proc; null where /proc is missing. */
export function rssOf(pid: number): number | null {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function snapshotTimes(host: StartedHost, n: number): Promise<{ ms: number[]; bytes: number; pasids: number }> {
  const ms: number[] = [];
  let bytes = 0;
  let pasids = 0;
  for (let i = 0; i < n; i++) {
    const a = performance.now();
    const s = await host.snapshot();
    ms.push(performance.now() - a);
    if (i === 0) {
      bytes = JSON.stringify(s).length;
      pasids = s.vms.reduce((acc, v) => acc + v.pasids.filter((p) => p.bindings.length > 0).length, 0);
    }
  }
  return { ms, bytes, pasids };
}

export const bench: BenchModule = {
  name: 'scale',
  async run(opts: BenchOptions): Promise<BenchFigure[]> {
    const vms = opts.quick ? 8 : 64;
    const perVm = opts.quick ? 128 : 1024;
    const snaps = opts.quick ? 5 : 15;
    const size = `${vms} VMs × ${perVm} PASIDs`;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-bench-scale-'));
    let host: StartedHost | null = null;
    const guests: StartedGuest[] = [];
    let peer: Peer | null = null;
    let raw: RawClient | null = null;
    try {
      opts.progress?.(`[scale] starting host and ping-pong peer`);
      host = await startHost({ graceMs: 0, dashboard: { port: 0 } });
      peer = await startPeer(dir, 'raw');
      raw = await RawClient.connect(peer.socket);
      const r = raw;
      const rawRtt = await rttRuns(3, 1000, 500, () => r.roundTrip(1));
      const emptySnap = await snapshotTimes(host, snaps);
      const dashboardUrl = host.dashboard;
      if (!dashboardUrl) throw new Error('scale: the host did not start its dashboard');
      const emptyRefresh = await dashboardRefresh(dashboardUrl, snaps);
      const emptyRenders: FirstRender[] = [];
      for (let i = 0; i < 5; i++) emptyRenders.push(await firstRender(dashboardUrl));
      await new Promise((res) => setTimeout(res, 200));
      const rssIdle = rssOf(host.pid);

      opts.progress?.(`[scale] ${size}: starting VMs and binding`);
      const h = host;
      const t0 = performance.now();
      let done = 0;
      const drivers: { drv: VtdBenchDriver; pasids: number[] }[] = [];
      await Promise.all(
        Array.from({ length: vms }, async (_, i) => {
          const g = await startGuest({ socket: h.socket, name: `scale-${i}`, viommu: 'vtd', memory: GUEST_RAM, pasidQuota: perVm });
          guests.push(g);
          const drv = await VtdBenchDriver.create(g, { bufferBytes: 4096 });
          const pasids: number[] = [];
          for (let k = 0; k < perVm; k++) {
            const pasid = await drv.allocPasid();
            await drv.bindPasid(pasid);
            pasids.push(pasid);
          }
          drivers.push({ drv, pasids });
          done++;
          if (done % Math.max(1, vms / 8) === 0) opts.progress?.(`[scale] ${done}/${vms} VMs bound`);
        }),
      );
      const setupMs = performance.now() - t0;
      await new Promise((res) => setTimeout(res, 200));
      const rssFull = rssOf(host.pid);

      // Changes since set-up: each VM unbinds and re-binds some of its PASIDs (VMs concurrent).
      const perVmChanges = Math.min(perVm, opts.quick ? 96 : CHANGED_PER_VM);
      const changes = vms * perVmChanges;
      opts.progress?.(`[scale] ${size}: ${changes} changes (unbind + re-bind)`);
      const tc = performance.now();
      await Promise.all(
        drivers.map(async ({ drv, pasids }) => {
          for (const pasid of pasids.slice(0, perVmChanges)) {
            await drv.unbindPasid(pasid);
            await drv.bindPasid(pasid);
          }
        }),
      );
      const changesMs = performance.now() - tc;
      // The first dashboard client after the changes, before anything else read the host.
      const render = await firstRender(dashboardUrl);

      opts.progress?.(`[scale] snapshots at ${size}`);
      // First GET_STATE page with every change since set-up pending (each VM's rows are rebuilt
      // by the first read that covers it), then the same page again (nothing pending).
      const pageFe = await FrontendClient.connect({ path: host.socket });
      await pageFe.handshake({ require: ProtocolFeature.REPLY_ACK | ProtocolFeature.VSVA | ProtocolFeature.VSVA_STATE });
      let pageBytes = 0;
      const timePage = async (): Promise<number> => {
        const a = performance.now();
        const { json } = await pageFe.call('GET_STATE', { cursor: 0, max_vms: PAGE_VMS, monitor_token: h.monitorToken });
        pageBytes = json.length;
        return performance.now() - a;
      };
      const firstPageMs = await timePage();
      const againPageMs: number[] = [];
      for (let i = 0; i < snaps; i++) againPageMs.push(await timePage());
      pageFe.close();
      const fullSnap = await snapshotTimes(host, snaps);
      const fullRefresh = await dashboardRefresh(dashboardUrl, snaps);
      if (fullSnap.pasids !== vms * perVm) throw new Error(`scale: host shows ${fullSnap.pasids} bound PASIDs, expected ${vms * perVm}`);
      const bound = vms * perVm;
      const figs: BenchFigure[] = [
        ratioFigure(`set-up time per bound PASID (${size}, amortised)`, 'us', stat([(setupMs * 1000) / bound]), 'raw Node Unix-socket ping-pong p50', stat(rawRtt.map((x) => x.p50)), undefined, undefined, `total set-up ${(setupMs / 1000).toFixed(2)} s for ${bound} PASIDs (VCMD alloc + bind each; VMs concurrent); single measurement`),
      ];
      if (rssIdle !== null && rssFull !== null) {
        figs.push({
          ...ratioFigure(`host RSS with ${size} bound`, 'MiB', stat([rssFull / 2 ** 20]), 'host RSS before any VM', stat([rssIdle / 2 ** 20]), undefined, undefined, `${Math.round((rssFull - rssIdle) / bound)} bytes per bound PASID (RSS growth / PASIDs, VM state and page tables included)`),
        });
      } else {
        figs.push({ name: `host RSS with ${size} bound`, unit: 'MiB', value: stat([]), notes: '/proc not available; RSS not measured' });
      }
      const refreshStat = (t: RefreshTiming) => ({ median: t.median ?? NaN, min: t.min ?? NaN, max: t.max ?? NaN, reps: t.count });
      const dashFig = ratioFigure(`dashboard snapshot at ${size} (host-side refresh, median)`, 'ms', refreshStat(fullRefresh), 'the same on the empty host', refreshStat(emptyRefresh), '< 50 ms', undefined, `refreshes at full size only (the hub's window restarts when a client connects); timed by the host's dashboard hub: HostSnapshot + counters + summary JSON, every ${500} ms while a client is connected; ${fullRefresh.count} refreshes, max ${fullRefresh.max?.toFixed(1)} ms`);
      dashFig.met = dashFig.value.median < 50;
      figs.push(dashFig);
      const ms1 = (x: number) => x.toFixed(1);
      const ph = render.phases;
      const renderFig = ratioFigure(
        `first dashboard render at ${size} after ${changes} changes`,
        'ms',
        stat([render.pageMs]),
        'the same on the empty host (median of 5)',
        stat(emptyRenders.map((r) => r.pageMs)),
        '≤ 50 ms',
        undefined,
        `connect → summary + first VM's PASID page, client-side, a WebSocket client doing what the page does: hello ${ms1(render.helloMs)} ms, summary ${ms1(render.summaryMs)} ms, first VM's page (${render.pageRows} rows) ${ms1(render.pageMs)} ms after the connection started; the hub's phases of that refresh: ${ph ? `host snapshot ${ms1(ph.snapshot)} ms, summary JSON ${ms1(ph.summary)} ms, send ${ms1(ph.send)} ms` : 'not reported'}; changes: each VM unbound and re-bound ${perVmChanges} PASIDs (${ms1(changesMs / 1000)} s), nothing read the host since; single measurement`,
      );
      renderFig.met = render.pageMs <= 50;
      figs.push(renderFig);
      const pageFig = ratioFigure(`first GET_STATE page (${PAGE_VMS} VMs) at ${size} after ${changes} changes`, 'ms', stat([firstPageMs]), 'the same page again, nothing changed', stat(againPageMs), '≤ 50 ms', undefined, `the first read of those VMs since the changes (only the dashboard's summary read the host before); round trip from a client; ${Math.round(pageBytes / 1024)} KiB of JSON per page; single measurement`);
      pageFig.met = firstPageMs <= 50;
      figs.push(pageFig);
      figs.push(ratioFigure(`whole snapshot at ${size} via GET_STATE pages (harness)`, 'ms', stat(fullSnap.ms), 'the same on the empty host', stat(emptySnap.ms), undefined, undefined, `HostSnapshot assembled from pages of 8 VMs (${Math.round(fullSnap.bytes / 1024)} KiB of JSON in all), nothing pending; informational`));
      if (opts.quick) for (const f of figs) f.notes = `${f.notes ?? ''}; quick: scaled down from 64 VMs × 1024 PASIDs`;
      return figs;
    } finally {
      raw?.close();
      await Promise.all(guests.map((g) => g.close().catch(() => {})));
      await host?.close().catch(() => {});
      await peer?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};
