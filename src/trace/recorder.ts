/**
 * Records trace events to a file as JSON lines: a header line `{"vsvaTrace":1,...}` and then one
 * TraceEvent per line. Writes are buffered and flushed every `flushMs` or when the buffer is
 * large, so recording does not stall the hot paths; close() flushes everything.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TraceBus } from './bus.js';
import type { TraceEvent } from './events.js';
import { fail } from '../errors.js';

const TRACE_FORMAT_VERSION = 1;

export interface TraceHeader {
  vsvaTrace: number;
  startedAt: string;
  source: string;
}

export class TraceRecorder {
  private fd: number;
  private chunks: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout;
  private unsubscribe: (() => void) | null = null;
  /** Events written (or buffered) so far. */
  count = 0;

  constructor(readonly file: string, source: string, flushMs = 200) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.fd = fs.openSync(file, 'w');
    const header: TraceHeader = { vsvaTrace: TRACE_FORMAT_VERSION, startedAt: new Date().toISOString(), source };
    fs.writeSync(this.fd, JSON.stringify(header) + '\n');
    this.timer = setInterval(() => this.flush(), flushMs);
    this.timer.unref();
  }

  /** Record every event of `bus` until close(). */
  attach(bus: TraceBus): this {
    const off = bus.on((ev) => this.record(ev));
    const prev = this.unsubscribe;
    this.unsubscribe = () => {
      prev?.();
      off();
    };
    return this;
  }

  record(ev: TraceEvent): void {
    if (this.fd < 0) return;
    const line = JSON.stringify(ev) + '\n';
    this.chunks.push(line);
    this.bytes += line.length;
    this.count++;
    if (this.bytes > 1 << 20) this.flush();
  }

  flush(): void {
    if (this.fd < 0 || this.chunks.length === 0) return;
    fs.writeSync(this.fd, this.chunks.join(''));
    this.chunks = [];
    this.bytes = 0;
  }

  close(): void {
    if (this.fd < 0) return;
    this.unsubscribe?.();
    clearInterval(this.timer);
    this.flush();
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/** Read a recording: header and events. Malformed lines are EINVAL naming the line. */
export function readTrace(file: string): { header: TraceHeader; events: TraceEvent[] } {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) fail('EINVAL', `${file}: empty trace file`);
  let header: TraceHeader;
  try {
    header = JSON.parse(lines[0]!) as TraceHeader;
  } catch {
    fail('EINVAL', `${file}:1: header is not JSON`);
  }
  if (header.vsvaTrace !== TRACE_FORMAT_VERSION) fail('EINVAL', `${file}:1: not a vsva trace (version ${String(header.vsvaTrace)})`);
  const events: TraceEvent[] = [];
  for (let i = 1; i < lines.length; i++) {
    let ev: TraceEvent;
    try {
      ev = JSON.parse(lines[i]!) as TraceEvent;
    } catch {
      fail('EINVAL', `${file}:${i + 1}: line is not JSON`);
    }
    if (typeof ev.ts !== 'number' || typeof ev.kind !== 'string' || typeof ev.name !== 'string') {
      fail('EINVAL', `${file}:${i + 1}: not a trace event (needs ts, kind, name)`);
    }
    events.push(ev);
  }
  return { header, events };
}
