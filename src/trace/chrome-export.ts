/**
 * Converts recorded vsva trace events to the Chrome trace event format (the JSON object form,
 * `{ traceEvents: [...] }`), which Perfetto and chrome://tracing open.
 *
 * Mapping: each VM's guest half is one process row ("guest <vm>"), the host half one process
 * row per VM ("host <vm>") plus "host" for events without a VM; within a process each event
 * kind is a thread row. Events with a duration become complete events (ph 'X'), others
 * instant events (ph 'i', thread scope). Process and thread names are metadata events (ph 'M').
 */
import type { TraceEvent } from './events.js';

export interface ChromeTraceEvent {
  name: string;
  cat: string;
  ph: 'X' | 'i' | 'M';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  s?: 't' | 'p' | 'g';
  args?: Record<string, unknown>;
}

export interface ChromeTrace {
  traceEvents: ChromeTraceEvent[];
  displayTimeUnit: 'ms' | 'ns';
  otherData?: Record<string, string>;
}

export function toChromeTrace(events: readonly TraceEvent[], otherData: Record<string, string> = {}): ChromeTrace {
  const pids = new Map<string, number>();
  const tids = new Map<string, number>();
  const meta: ChromeTraceEvent[] = [];
  const out: ChromeTraceEvent[] = [];
  const pidOf = (proc: string): number => {
    let p = pids.get(proc);
    if (p === undefined) {
      p = pids.size + 1;
      pids.set(proc, p);
      meta.push({ name: 'process_name', cat: '__metadata', ph: 'M', ts: 0, pid: p, tid: 0, args: { name: proc } });
    }
    return p;
  };
  const tidOf = (pid: number, kind: string): number => {
    const key = `${pid}/${kind}`;
    let t = tids.get(key);
    if (t === undefined) {
      t = tids.size + 1;
      tids.set(key, t);
      meta.push({ name: 'thread_name', cat: '__metadata', ph: 'M', ts: 0, pid, tid: t, args: { name: kind } });
    }
    return t;
  };
  for (const ev of events) {
    const proc = ev.vm ? `${ev.side} ${ev.vm}` : ev.side;
    const pid = pidOf(proc);
    const tid = tidOf(pid, ev.kind);
    const base = { name: ev.name, cat: ev.kind, ts: ev.ts, pid, tid, args: ev.args ?? {} };
    if (ev.dur !== undefined && ev.dur >= 0) out.push({ ...base, ph: 'X', dur: ev.dur });
    else out.push({ ...base, ph: 'i', s: 't' });
  }
  out.sort((a, b) => a.ts - b.ts);
  return { traceEvents: [...meta, ...out], displayTimeUnit: 'ms', otherData };
}

/**
 * Structural check of a Chrome trace document (what a viewer needs): returns the problems found,
 * empty when valid.
 */
export function validateChromeTrace(doc: unknown): string[] {
  const problems: string[] = [];
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as ChromeTrace).traceEvents)) {
    return ['document is not an object with a traceEvents array'];
  }
  (doc as ChromeTrace).traceEvents.forEach((e, i) => {
    if (typeof e !== 'object' || e === null) return problems.push(`event ${i}: not an object`);
    if (typeof e.name !== 'string') problems.push(`event ${i}: name is not a string`);
    if (!['X', 'i', 'M', 'B', 'E'].includes(e.ph)) problems.push(`event ${i}: unknown phase '${String(e.ph)}'`);
    if (typeof e.ts !== 'number' || !Number.isFinite(e.ts)) problems.push(`event ${i}: ts is not a number`);
    if (!Number.isInteger(e.pid) || !Number.isInteger(e.tid)) problems.push(`event ${i}: pid/tid are not integers`);
    if (e.ph === 'X' && (typeof e.dur !== 'number' || e.dur < 0)) problems.push(`event ${i}: complete event without a duration`);
    return undefined;
  });
  return problems;
}
