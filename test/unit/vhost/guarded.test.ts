/**
 * The unsent-reply bound of a limited connection (vhost/transport/guarded.ts) on a fake
 * transport whose unsent count the test sets, and the framer's hold / release that keeps the
 * frames of an already-read chunk from being handled meanwhile (vhost/wire/framer.ts).
 */
import { describe, it, expect } from 'vitest';
import { GuardedTransport, HARD_FACTOR } from '../../../vhost/transport/guarded.js';
import type { Transport, TransportSink } from '../../../vhost/transport/transport.js';
import { Framer } from '../../../vhost/wire/framer.js';
import { waitFor } from '../../support/wait.js';

class FakeTransport implements Transport {
  pendingWriteBytes = 0;
  reading = true;
  aborted = false;
  closed = false;
  written = 0;
  readonly label = 'fake';
  sink: TransportSink | null = null;
  start(sink: TransportSink): void {
    this.sink = sink;
  }
  write(data: Uint8Array): void {
    this.written += data.byteLength;
  }
  setReading(on: boolean): void {
    this.reading = on;
  }
  close(): void {
    this.closed = true;
  }
  abort(): void {
    this.aborted = true;
    this.closed = true;
  }
}

const KiB = 1024;

describe('GuardedTransport', () => {
  it('pauses reading and holds frames past the limit, resumes below half, aborts past the hard bound', async () => {
    const inner = new FakeTransport();
    const holds: boolean[] = [];
    let overflow = 0;
    const g = new GuardedTransport(inner, 256 * KiB, { overflow: (n) => (overflow = n), hold: (on) => holds.push(on) });
    g.start({ data: () => {}, close: () => {} });
    inner.pendingWriteBytes = 300 * KiB;
    g.write(new Uint8Array(64 * KiB));
    expect(g.outgoingPaused).toBe(true);
    expect(inner.reading).toBe(false);
    expect(holds).toEqual([true]);
    // The dispatcher asking to read again does not override the pause.
    g.setReading(true);
    expect(inner.reading).toBe(false);
    inner.pendingWriteBytes = 100 * KiB;
    await waitFor(() => !g.outgoingPaused, { what: 'resumed' });
    expect(inner.reading).toBe(true);
    expect(holds).toEqual([true, false]);
    // Past HARD_FACTOR × the limit already waiting: aborted, the write dropped.
    inner.pendingWriteBytes = HARD_FACTOR * 256 * KiB + 1;
    const before = inner.written;
    g.write(new Uint8Array(64 * KiB));
    expect(inner.aborted).toBe(true);
    expect(overflow).toBe(HARD_FACTOR * 256 * KiB + 1);
    expect(inner.written).toBe(before);
  });

  it('writes a single large reply on an idle connection whatever its size', () => {
    const inner = new FakeTransport();
    const g = new GuardedTransport(inner, 256 * KiB, { overflow: () => {}, hold: () => {} });
    g.write(new Uint8Array(4 * 1024 * KiB));
    expect(inner.aborted).toBe(false);
    expect(inner.written).toBe(4 * 1024 * KiB);
  });
});

function frames(n: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(i + 1, 0);
    b.writeUInt32LE(1, 4);
    b.writeUInt32LE(4, 8);
    out.push(b);
  }
  return Buffer.concat(out);
}

describe('Framer hold / release', () => {
  it('stops within a chunk when held by its sink, keeps what arrives, and delivers it all in order on release', () => {
    const f = new Framer(1 << 20);
    const seen: number[] = [];
    const sink = (request: number): void => {
      seen.push(request);
      if (request === 2) f.hold();
    };
    f.push(frames(5), sink);
    expect(seen).toEqual([1, 2]);
    expect(f.holding).toBe(true);
    expect(f.pendingBytes).toBe(3 * 16);
    f.push(frames(2), sink); // arrives while held
    expect(seen).toEqual([1, 2]);
    f.release(sink);
    expect(seen).toEqual([1, 2, 3, 4, 5, 1, 2]);
    expect(f.holding).toBe(true); // the sink held again at request 2 of the second batch
    f.release(sink);
    expect(f.pendingBytes).toBe(0);
  });
});
