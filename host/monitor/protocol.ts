/**
 * The dashboard's WebSocket protocol: JSON text frames, one message each, `type` first.
 *
 * Server → client
 *   hello    { version, readOnly, controls, limits, history }    once, on connect; history is
 *                                                                the host's last 60 s of chart
 *                                                                samples (ChartHistorySnapshot)
 *   chart    { sample: ChartSample }                            every chart interval (1 s): rates
 *                                                                over the interval, from two real
 *                                                                readings of the counters
 *   summary  { ts, summary: DashboardSummary }                   on connect, then ≤ 1 per
 *                                                                summary interval, only when changed
 *   pasids   { ts, vm, page: PasidPage | null }                  for each subscribed VM, on
 *                                                                subscribe and when its page changed
 *   topology { ts, vm, topology: Topology | null }              for each subscribed VM, on subscribe
 *                                                                and when its iommufd objects changed
 *                                                                (null: a VFIO SVA VM, or no such VM)
 *   events   { events: TraceEvent[], dropped }                   batched every event interval
 *   control-result { id, ok: true, result } | { id, ok: false, code, message }
 *   error    { code, message }                                   a bad client message (errno name)
 *
 * Client → server
 *   subscribe { vms: [{ name, offset?, limit? }] }   replace the set of VMs whose PASID table the
 *                                                     client wants (≤ MAX_SUBSCRIPTIONS; [] = none)
 *   control   { id?, action, vm?, token? }           a control action (token required)
 *   ping      { id? }                                 answered with pong { id, refresh }: refresh is
 *                                                     the hub's own timing of its last snapshots
 *                                                     (HostSnapshot + summary build, ms); host
 *                                                     is the process's figures (types.ts
 *                                                     HostFigures) when the source reports them
 *
 * Errors (errno names as in src/errors.ts): EINVAL malformed message or field, E2BIG too many
 * subscriptions / rows, EPERM control on a read-only monitor, EACCES bad or missing token,
 * EOPNOTSUPP action the source does not offer, ENOENT no such VM (from the source).
 * Close codes: 1009 frame over MAX_CLIENT_MESSAGE_BYTES (ws enforces it), 1008 policy — binary
 * frames, too many bad messages, or message flooding; 1001 server closing.
 */
import type { TraceEvent } from '../../src/trace/events.js';
import type { PasidSnapshot, DeviceKind } from '../../src/api/types.js';
import type { ErrnoName } from '../../src/errors.js';
import type { ChartHistorySnapshot, ChartSample } from './chart-history.js';
import { CONTROL_ACTIONS, type CounterSet, type HostFigures, type MonitorControlAction } from './types.js';
import type { Topology, TopologyCounts } from './topology.js';

export const PROTOCOL_VERSION = 1;

/** Largest client frame accepted (ws maxPayload); client messages are small commands. */
export const MAX_CLIENT_MESSAGE_BYTES = 4096;
/** VMs one client may follow in detail at once. */
export const MAX_SUBSCRIPTIONS = 4;
/** Rows per PASID page; the page asks for one screenful at a time. */
export const MAX_PAGE_ROWS = 500;
export const DEFAULT_PAGE_ROWS = 100;
/** Longest VM name / token a client may send. */
export const MAX_NAME_LENGTH = 256;
/** Bad messages tolerated per connection before it is closed with 1008. */
export const MAX_BAD_MESSAGES = 16;
/** Client messages allowed per second before the connection is closed with 1008. */
export const MAX_MESSAGES_PER_SECOND = 50;
/** Stop sending to a client whose socket has this much unsent data (it is too slow). */
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

export const CLOSE_POLICY = 1008;
export const CLOSE_GOING_AWAY = 1001;

export interface VmCounts {
  /** PASIDs the snapshot lists for this VM. */
  pasids: number;
  active: number;
  idle: number;
  freePending: number;
  /** PASIDs with at least one binding, and the number of bindings. */
  bound: number;
  bindings: number;
}

export interface VmSummary {
  name: string;
  connected: boolean;
  quota: number;
  used: number;
  devices: { bdf: string; kind: DeviceKind }[];
  counts: VmCounts;
  stats: CounterSet;
  /** The host uAPI the VM chose at VM_SETUP (docs/protocol.md §13); 'vfio-sva' when the snapshot does not say. */
  uapi: 'vfio-sva' | 'iommufd';
  /** iommufd VMs: how many objects of each kind (topology.ts); null for a VFIO SVA VM. */
  iommufd: TopologyCounts | null;
}

export interface DashboardSummary {
  pasidBits: number;
  capacity: { total: number; available: number };
  vmCount: number;
  connectedCount: number;
  totals: CounterSet;
  vms: VmSummary[];
}

export interface PasidPage {
  /** PASIDs of the VM in total; rows are [offset, offset + rows.length) sorted by hPASID. */
  total: number;
  offset: number;
  limit: number;
  rows: PasidSnapshot[];
}

export type ServerMessage =
  | { type: 'hello'; version: number; readOnly: boolean; controls: readonly string[]; limits: Record<string, number>; history: ChartHistorySnapshot }
  | { type: 'chart'; sample: ChartSample }
  | { type: 'summary'; ts: number; summary: DashboardSummary }
  | { type: 'pasids'; ts: number; vm: string; page: PasidPage | null }
  | { type: 'topology'; ts: number; vm: string; topology: Topology | null }
  | { type: 'events'; events: TraceEvent[]; dropped: number }
  | { type: 'control-result'; id: number | null; ok: true; result: unknown }
  | { type: 'control-result'; id: number | null; ok: false; code: ErrnoName; message: string }
  | { type: 'pong'; id: number | null; refresh: RefreshTiming; host?: HostFigures }
  | { type: 'error'; code: ErrnoName; message: string };

/**
 * How long the hub's snapshot refreshes took (ms): source.snapshot() + stats + summary JSON.
 * The window starts afresh whenever the first client connects (no refresh runs without one),
 * so it never mixes refreshes of an earlier state of the host.
 */
export interface RefreshTiming {
  /** Refreshes timed (the last REFRESH_TIMING_WINDOW at most). */
  count: number;
  last: number | null;
  min: number | null;
  median: number | null;
  max: number | null;
  /**
   * Medians of the refresh's phases over the same window: `snapshot` (source.snapshot(), where
   * the host rebuilds changed PASID rows), `summary` (stats + summary JSON), `send` (summary and
   * subscribed pages to every client; not part of the total above). The first refresh of the
   * window alone is in `first` (it pays for every change since the previous window).
   */
  phases?: { snapshot: number; summary: number; send: number };
  first?: { snapshot: number; summary: number; send: number };
}

/** Refreshes the pong's timing covers. */
export const REFRESH_TIMING_WINDOW = 32;

export interface Subscription {
  name: string;
  offset: number;
  limit: number;
}

export type ClientMessage =
  | { type: 'subscribe'; vms: Subscription[] }
  | { type: 'control'; id: number | null; action: MonitorControlAction; vm?: string; token?: string }
  | { type: 'ping'; id: number | null };

export type ParseResult = { ok: true; msg: ClientMessage } | { ok: false; code: ErrnoName; message: string };

const KNOWN_KEYS: Record<ClientMessage['type'], ReadonlySet<string>> = {
  subscribe: new Set(['type', 'vms']),
  control: new Set(['type', 'id', 'action', 'vm', 'token']),
  ping: new Set(['type', 'id']),
};
const SUBSCRIPTION_KEYS = new Set(['name', 'offset', 'limit']);

class Invalid {
  constructor(
    readonly code: ErrnoName,
    readonly message: string,
  ) {}
}

function bad(message: string, code: ErrnoName = 'EINVAL'): never {
  throw new Invalid(code, message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Record<string, unknown>, known: ReadonlySet<string>, what: string): void {
  for (const k of Object.keys(obj)) if (!known.has(k)) bad(`${what}: unknown field '${k.slice(0, 32)}'`);
}

function name(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_NAME_LENGTH) bad(`${what} must be a string of 1..${MAX_NAME_LENGTH} characters`);
  return v;
}

function optionalId(v: unknown): number | null {
  if (v === undefined) return null;
  if (!Number.isSafeInteger(v) || (v as number) < 0) bad(`'id' must be a non-negative integer`);
  return v as number;
}

function intInRange(v: unknown, what: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) bad(`${what} must be an integer in [${min}, ${max}]`);
  return v as number;
}

function parseSubscribe(obj: Record<string, unknown>): ClientMessage {
  if (!Array.isArray(obj.vms)) bad(`subscribe: 'vms' must be an array`);
  if (obj.vms.length > MAX_SUBSCRIPTIONS) bad(`subscribe: at most ${MAX_SUBSCRIPTIONS} VMs, got ${obj.vms.length}`, 'E2BIG');
  const seen = new Set<string>();
  const vms = obj.vms.map((s: unknown, i: number): Subscription => {
    if (!isObject(s)) bad(`subscribe: vms[${i}] must be an object`);
    checkKeys(s, SUBSCRIPTION_KEYS, `subscribe: vms[${i}]`);
    const n = name(s.name, `subscribe: vms[${i}].name`);
    if (seen.has(n)) bad(`subscribe: VM '${n.slice(0, 64)}' listed twice`);
    seen.add(n);
    return {
      name: n,
      offset: intInRange(s.offset, `subscribe: vms[${i}].offset`, 0, 2 ** 32, 0),
      limit: intInRange(s.limit, `subscribe: vms[${i}].limit`, 1, MAX_PAGE_ROWS, DEFAULT_PAGE_ROWS),
    };
  });
  return { type: 'subscribe', vms };
}

function parseControl(obj: Record<string, unknown>): ClientMessage {
  const id = optionalId(obj.id);
  if (typeof obj.action !== 'string' || !(CONTROL_ACTIONS as readonly string[]).includes(obj.action)) {
    bad(`control: unknown action (known: ${CONTROL_ACTIONS.join(', ')})`);
  }
  const msg: ClientMessage = { type: 'control', id, action: obj.action as MonitorControlAction };
  if (obj.vm !== undefined) msg.vm = name(obj.vm, `control: 'vm'`);
  if (obj.token !== undefined) msg.token = name(obj.token, `control: 'token'`);
  if (msg.action === 'disconnect-vm' && msg.vm === undefined) bad(`control: 'disconnect-vm' needs 'vm'`);
  return msg;
}

/**
 * Parse and validate one client text frame. Syntax only: unknown types and fields, wrong types
 * and out-of-range numbers are EINVAL (E2BIG for too many subscriptions). Never throws.
 */
export function parseClientMessage(text: string): ParseResult {
  try {
    if (text.length > MAX_CLIENT_MESSAGE_BYTES) bad(`message of ${text.length} characters exceeds ${MAX_CLIENT_MESSAGE_BYTES}`, 'E2BIG');
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch {
      bad('message is not valid JSON');
    }
    if (!isObject(obj)) bad('message must be a JSON object');
    const type = obj.type;
    if (typeof type !== 'string' || !Object.hasOwn(KNOWN_KEYS, type)) bad(`unknown message type (known: ${Object.keys(KNOWN_KEYS).join(', ')})`);
    const t = type as ClientMessage['type'];
    checkKeys(obj, KNOWN_KEYS[t], t);
    switch (t) {
      case 'subscribe':
        return { ok: true, msg: parseSubscribe(obj) };
      case 'control':
        return { ok: true, msg: parseControl(obj) };
      case 'ping':
        return { ok: true, msg: { type: 'ping', id: optionalId(obj.id) } };
    }
  } catch (e) {
    if (e instanceof Invalid) return { ok: false, code: e.code, message: e.message };
    return { ok: false, code: 'EINVAL', message: 'malformed message' };
  }
}
