/**
 * The dashboard's live fan-out: one snapshot per summary tick shared by every client, a summary
 * sent to a client only when it differs from what that client last received, PASID pages only
 * for the VMs a client subscribed to, and trace events batched per event tick (protocol.ts).
 * Work happens only while at least one client is connected, except the chart history
 * (chart-history.ts): once per chart interval the hub reads the counters (stats(), never a
 * snapshot) so that a page opened mid-run draws the last minute at once, and every rate is the
 * difference of two real readings.
 *
 * A client whose socket falls behind (MAX_BUFFERED_BYTES unsent) is skipped until it drains:
 * it then gets the latest summary/pages (never a backlog) and the events it missed are
 * reported as dropped.
 */
import { WebSocket, type RawData } from 'ws';
import type { HostSnapshot, VmSnapshot } from '../../src/api/types.js';
import type { TraceEvent } from '../../src/trace/events.js';
import { childLogger } from '../../src/log.js';
import { isVsvaError, type ErrnoName } from '../../src/errors.js';
import { tokenMatches } from './access.js';
import { EventBatcher } from './event-batcher.js';
import { buildPasidPage, buildSummary, buildVmTopology } from './summary.js';
import { TraceCounters } from './trace-counters.js';
import { ChartHistory } from './chart-history.js';
import { CONTROL_ACTIONS, type MonitorSource, type MonitorStats } from './types.js';
import {
  CLOSE_GOING_AWAY,
  CLOSE_POLICY,
  DEFAULT_PAGE_ROWS,
  MAX_BAD_MESSAGES,
  MAX_BUFFERED_BYTES,
  MAX_CLIENT_MESSAGE_BYTES,
  MAX_MESSAGES_PER_SECOND,
  MAX_PAGE_ROWS,
  MAX_SUBSCRIPTIONS,
  PROTOCOL_VERSION,
  REFRESH_TIMING_WINDOW,
  parseClientMessage,
  type ClientMessage,
  type RefreshTiming,
  type ServerMessage,
  type Subscription,
} from './protocol.js';

const log = childLogger('monitor');

export interface HubOptions {
  token: string | undefined;
  summaryIntervalMs: number;
  eventIntervalMs: number;
  maxEventsPerBatch: number;
  chartIntervalMs: number;
}

class Client {
  subs: Subscription[] = [];
  lastSummary: string | null = null;
  /** Serialized page last sent, per subscribed VM name. */
  lastPages = new Map<string, string>();
  /** Serialized iommufd topology last sent, per subscribed VM name. */
  lastTopology = new Map<string, string>();
  /** Events this client missed while its socket was backed up. */
  missedEvents = 0;
  badMessages = 0;
  windowStart = 0;
  windowCount = 0;

  constructor(
    readonly ws: WebSocket,
    readonly authorized: boolean,
  ) {}

  /** Send if the socket is open and keeping up; false when the message was not sent. */
  send(text: string): boolean {
    if (this.ws.readyState !== WebSocket.OPEN || this.ws.bufferedAmount > MAX_BUFFERED_BYTES) return false;
    this.ws.send(text);
    return true;
  }

  sendMessage(msg: ServerMessage): boolean {
    return this.send(JSON.stringify(msg, bigintToHex));
  }
}

function bigintToHex(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? '0x' + value.toString(16) : value;
}

export class MonitorHub {
  private readonly clients = new Set<Client>();
  private readonly batcher: EventBatcher;
  private readonly counters: TraceCounters | undefined;
  private readonly unsubscribe: () => void;
  private readonly timers: NodeJS.Timeout[] = [];
  private snapshot: HostSnapshot | null = null;
  private vmByName = new Map<string, VmSnapshot>();
  /** Serialized pages of the current snapshot, keyed by VM/offset/limit, shared by clients. */
  private pageCache = new Map<string, string>();
  /** Serialized iommufd topology of the current snapshot per VM name, shared by clients. */
  private topologyCache = new Map<string, string>();
  private summaryBody: string | null = null;
  private ticking: Promise<void> | null = null;
  /** Phases of the first refresh of the current timing window. */
  private firstPhases: { snapshot: number; summary: number; send: number } | null = null;
  private closed = false;
  private readonly history: ChartHistory;

  constructor(
    private readonly source: MonitorSource,
    private readonly opts: HubOptions,
  ) {
    this.batcher = new EventBatcher(opts.maxEventsPerBatch);
    this.counters = source.stats ? undefined : new TraceCounters(source.events);
    this.unsubscribe = source.events.on((ev) => this.onEvent(ev));
    this.timers.push(setInterval(() => void this.tick(), opts.summaryIntervalMs));
    this.timers.push(setInterval(() => this.flushEvents(), opts.eventIntervalMs));
    this.history = new ChartHistory(opts.chartIntervalMs);
    this.sampleChart(); // the baseline reading: the first sample is one interval away
    this.timers.push(setInterval(() => this.sampleChart(), opts.chartIntervalMs));
    for (const t of this.timers) t.unref();
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Take over an upgraded connection. */
  add(ws: WebSocket, authorized: boolean): void {
    const client = new Client(ws, authorized);
    if (this.clients.size === 0) {
      // A new window: refreshes of an earlier host state are not this one's timing.
      this.refreshMs.length = 0;
      this.phaseMs.length = 0;
      this.firstPhases = null;
      // Nothing refreshed while no client was connected: what the hub holds may be any age, so
      // the first client gets a fresh summary (and pages) from a refresh now, never that.
      this.snapshot = null;
      this.summaryBody = null;
    }
    this.clients.add(client);
    ws.on('message', (data, isBinary) => this.onMessage(client, data, isBinary));
    ws.on('error', (err) => log.debug({ err }, 'dashboard client socket error'));
    ws.on('close', () => this.clients.delete(client));
    client.sendMessage({
      type: 'hello',
      version: PROTOCOL_VERSION,
      readOnly: this.opts.token === undefined,
      controls: this.source.control && this.opts.token !== undefined ? CONTROL_ACTIONS : [],
      limits: {
        maxClientMessageBytes: MAX_CLIENT_MESSAGE_BYTES,
        maxSubscriptions: MAX_SUBSCRIPTIONS,
        maxPageRows: MAX_PAGE_ROWS,
        defaultPageRows: DEFAULT_PAGE_ROWS,
        summaryIntervalMs: this.opts.summaryIntervalMs,
        eventIntervalMs: this.opts.eventIntervalMs,
        maxEventsPerBatch: this.opts.maxEventsPerBatch,
        chartIntervalMs: this.opts.chartIntervalMs,
      },
      history: this.history.snapshot(),
    });
    if (this.summaryBody !== null) this.sendSummary(client, this.summaryBody);
    else void this.tick();
  }

  /** Take a snapshot now and push what changed (also runs on the summary timer). */
  tick(): Promise<void> {
    if (this.closed || this.clients.size === 0) return Promise.resolve();
    this.ticking ??= this.refresh().finally(() => (this.ticking = null));
    return this.ticking;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.unsubscribe();
    this.counters?.dispose();
    const closing = [...this.clients].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.ws.readyState === WebSocket.CLOSED) return resolve();
          c.ws.once('close', () => resolve());
          c.ws.close(CLOSE_GOING_AWAY, 'server closing');
          setTimeout(() => {
            c.ws.terminate();
            resolve();
          }, 500).unref();
        }),
    );
    await Promise.all(closing);
    this.clients.clear();
  }

  /** Durations (ms) of the last refreshes, oldest first, and of their phases. */
  private readonly refreshMs: number[] = [];
  private readonly phaseMs: { snapshot: number; summary: number; send: number }[] = [];

  /** The hub's own timing of its snapshot refreshes (answered in pong). */
  refreshTiming(): RefreshTiming {
    const n = this.refreshMs.length;
    if (n === 0) return { count: 0, last: null, min: null, median: null, max: null };
    const sorted = [...this.refreshMs].sort((a, b) => a - b);
    const median = n % 2 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
    const med = (k: 'snapshot' | 'summary' | 'send') => medianOf(this.phaseMs.map((p) => p[k]));
    const timing: RefreshTiming = { count: n, last: this.refreshMs[n - 1]!, min: sorted[0]!, median, max: sorted[n - 1]! };
    if (this.phaseMs.length > 0) timing.phases = { snapshot: med('snapshot'), summary: med('summary'), send: med('send') };
    if (this.firstPhases !== null) timing.first = { ...this.firstPhases };
    return timing;
  }

  private async refresh(): Promise<void> {
    let snap: HostSnapshot;
    let stats: MonitorStats | undefined;
    const t0 = performance.now();
    let t1 = t0;
    try {
      snap = await this.source.snapshot();
      t1 = performance.now();
      stats = this.source.stats ? this.source.stats() : this.counters?.stats();
    } catch (err) {
      log.warn({ err }, 'dashboard snapshot failed; keeping the previous one');
      return;
    }
    if (this.closed) return;
    this.snapshot = snap;
    this.vmByName = new Map(snap.vms.map((vm) => [vm.name, vm]));
    this.pageCache.clear();
    this.topologyCache.clear();
    this.summaryBody = JSON.stringify(buildSummary(snap, stats));
    const t2 = performance.now();
    this.refreshMs.push(t2 - t0);
    if (this.refreshMs.length > REFRESH_TIMING_WINDOW) this.refreshMs.shift();
    for (const c of this.clients) {
      this.sendSummary(c, this.summaryBody);
      this.sendPages(c, c.subs);
    }
    const phases = { snapshot: t1 - t0, summary: t2 - t1, send: performance.now() - t2 };
    this.firstPhases ??= phases;
    this.phaseMs.push(phases);
    if (this.phaseMs.length > REFRESH_TIMING_WINDOW) this.phaseMs.shift();
  }

  private sendSummary(c: Client, body: string): void {
    if (c.lastSummary === body) return;
    if (c.send(`{"type":"summary","ts":${Date.now()},"summary":${body}}`)) c.lastSummary = body;
  }

  private pageBody(sub: Subscription): string {
    const key = `${sub.offset}/${sub.limit}/${sub.name}`;
    let body = this.pageCache.get(key);
    if (body === undefined) {
      const vm = this.vmByName.get(sub.name);
      body = vm ? JSON.stringify(buildPasidPage(vm, sub.offset, sub.limit)) : 'null';
      this.pageCache.set(key, body);
    }
    return body;
  }

  private sendPages(c: Client, subs: readonly Subscription[]): void {
    if (this.snapshot === null) return;
    for (const sub of subs) {
      const body = this.pageBody(sub);
      if (c.lastPages.get(sub.name) === body) continue;
      const text = `{"type":"pasids","ts":${Date.now()},"vm":${JSON.stringify(sub.name)},"page":${body}}`;
      if (c.send(text)) c.lastPages.set(sub.name, body);
    }
    this.sendTopologies(c, subs);
  }

  /** The iommufd topology (topology.ts) of each subscribed VM, when it differs from what the client has. */
  private sendTopologies(c: Client, subs: readonly Subscription[]): void {
    for (const sub of subs) {
      let body = this.topologyCache.get(sub.name);
      if (body === undefined) {
        const vm = this.vmByName.get(sub.name);
        body = JSON.stringify(vm ? buildVmTopology(vm) : null);
        this.topologyCache.set(sub.name, body);
      }
      if (c.lastTopology.get(sub.name) === body) continue;
      const text = `{"type":"topology","ts":${Date.now()},"vm":${JSON.stringify(sub.name)},"topology":${body}}`;
      if (c.send(text)) c.lastTopology.set(sub.name, body);
    }
  }

  /** Read the counters into the chart history and send the new sample to every client. */
  private sampleChart(): void {
    if (this.closed) return;
    let stats: MonitorStats | undefined;
    try {
      stats = this.source.stats ? this.source.stats() : this.counters?.stats();
    } catch (err) {
      log.warn({ err }, 'dashboard counters failed; no chart sample this interval');
      return;
    }
    if (stats === undefined) return;
    const sample = this.history.record(stats, performance.now(), Date.now());
    if (sample === null || this.clients.size === 0) return;
    const text = JSON.stringify({ type: 'chart', sample });
    for (const c of this.clients) c.send(text);
  }

  private onEvent(ev: TraceEvent): void {
    if (this.clients.size > 0) this.batcher.push(ev);
  }

  private flushEvents(): void {
    const batch = this.batcher.take();
    if (batch === null) return;
    let shared: string | null = null;
    for (const c of this.clients) {
      let sent: boolean;
      if (c.missedEvents === 0) {
        shared ??= JSON.stringify({ type: 'events', events: batch.events, dropped: batch.dropped });
        sent = c.send(shared);
      } else {
        sent = c.sendMessage({ type: 'events', events: batch.events, dropped: batch.dropped + c.missedEvents });
      }
      if (sent) c.missedEvents = 0;
      else c.missedEvents += batch.events.length + batch.dropped;
    }
  }

  private onMessage(c: Client, data: RawData, isBinary: boolean): void {
    if (isBinary) {
      c.ws.close(CLOSE_POLICY, 'binary frames are not accepted');
      return;
    }
    const now = Date.now();
    if (now - c.windowStart >= 1000) {
      c.windowStart = now;
      c.windowCount = 0;
    }
    if (++c.windowCount > MAX_MESSAGES_PER_SECOND) {
      c.ws.close(CLOSE_POLICY, 'too many messages');
      return;
    }
    const parsed = parseClientMessage(data.toString());
    if (!parsed.ok) {
      this.reject(c, parsed.code, parsed.message);
      return;
    }
    this.handle(c, parsed.msg);
  }

  /** Answer a bad message with an error; too many of them close the connection. */
  private reject(c: Client, code: ErrnoName, message: string): void {
    c.sendMessage({ type: 'error', code, message });
    if (++c.badMessages > MAX_BAD_MESSAGES) c.ws.close(CLOSE_POLICY, 'too many bad messages');
  }

  private handle(c: Client, msg: ClientMessage): void {
    switch (msg.type) {
      case 'ping':
        c.sendMessage({ type: 'pong', id: msg.id, refresh: this.refreshTiming(), ...(this.source.figures ? { host: this.source.figures() } : {}) });
        return;
      case 'subscribe': {
        const kept = new Set(msg.vms.map((s) => s.name));
        for (const name of [...c.lastPages.keys()]) if (!kept.has(name)) c.lastPages.delete(name);
        for (const name of [...c.lastTopology.keys()]) if (!kept.has(name)) c.lastTopology.delete(name);
        // A changed window for a VM must be sent even when its rows look the same.
        const changed = msg.vms.filter((s) => {
          const old = c.subs.find((o) => o.name === s.name);
          return !old || old.offset !== s.offset || old.limit !== s.limit;
        });
        for (const s of changed) c.lastPages.delete(s.name);
        c.subs = msg.vms;
        if (this.snapshot !== null) this.sendPages(c, changed);
        else void this.tick();
        return;
      }
      case 'control':
        void this.control(c, msg);
        return;
    }
  }

  private async control(c: Client, msg: Extract<ClientMessage, { type: 'control' }>): Promise<void> {
    const id = msg.id;
    const refuse = (code: ErrnoName, message: string) => c.sendMessage({ type: 'control-result', id, ok: false, code, message });
    if (this.opts.token === undefined) return void refuse('EPERM', 'the dashboard is read-only (started without an access token)');
    if (!c.authorized && !tokenMatches(this.opts.token, msg.token)) {
      refuse('EACCES', msg.token === undefined ? 'control actions require the access token' : 'access token does not match');
      if (++c.badMessages > MAX_BAD_MESSAGES) c.ws.close(CLOSE_POLICY, 'too many bad messages');
      return;
    }
    if (!this.source.control) return void refuse('EOPNOTSUPP', `this host offers no control actions`);
    try {
      const result = await this.source.control(msg.action, msg.vm);
      log.info({ action: msg.action, vm: msg.vm }, 'dashboard control action');
      c.sendMessage({ type: 'control-result', id, ok: true, result: result ?? null });
      void this.tick();
    } catch (err) {
      if (isVsvaError(err)) refuse(err.code, err.message);
      else {
        log.warn({ err, action: msg.action }, 'dashboard control action failed');
        refuse('EIO', `control action '${msg.action}' failed`);
      }
    }
  }
}

function medianOf(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}
