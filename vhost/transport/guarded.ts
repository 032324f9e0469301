/**
 * A transport with the per-connection limits of a back-end (docs/reliability.md §4.1) around
 * a socket transport:
 *
 * - Outgoing bytes: once more than `maxOutgoingBytes` wait unsent (the peer does not read its
 *   replies), reading stops and the frames already read are held (GuardEvents.hold: the
 *   connection's framer) — the peer's further requests wait, in its socket or in the framer —
 *   until fewer than half wait. So a peer that does not read gets about `maxOutgoingBytes` plus
 *   the replies of the requests already being handled. A write made while more than
 *   HARD_FACTOR × `maxOutgoingBytes` already wait aborts the connection (ENOBUFS, logged): the
 *   last bound, whatever the handlers still produce. A single reply of any size (≤ the 64 MiB
 *   reply limit) is always written.
 * - Activity: the time of the last received chunk, and the partial-frame clock the owner's
 *   sweep reads (connection-limits.ts) for the idle and half-frame timeouts.
 *
 * The unsent count is read from the transport every CHECK_EVERY_BYTES written (and on any
 * write of that size or more), so a burst of small replies costs no per-write scan.
 */
import type { Transport, TransportSink } from './transport.js';

/** Bytes written between two reads of the transport's unsent count. */
const CHECK_EVERY_BYTES = 64 * 1024;
/** How often a paused connection looks whether its peer has read enough (ms). */
const RESUME_POLL_MS = 10;
/** Unsent bytes, in multiples of maxOutgoingBytes, past which a connection is aborted. */
export const HARD_FACTOR = 4;

export interface GuardEvents {
  /** The peer let more than HARD_FACTOR × the limit pile up: the connection was aborted. */
  overflow(pending: number): void;
  /** Hold (true) or deliver again (false) the frames already received. */
  hold(on: boolean): void;
}

export class GuardedTransport implements Transport {
  /** When the last chunk arrived (Date.now()). */
  lastDataAt: number;
  readonly acceptedAt: number;
  private sinceCheck = 0;
  private wantReading = true;
  private outPaused = false;
  private resumeTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly inner: Transport,
    private readonly maxOutgoingBytes: number,
    private readonly events: GuardEvents,
  ) {
    this.acceptedAt = Date.now();
    this.lastDataAt = this.acceptedAt;
  }

  /** The socket of the transport inside, for those that read the peer from it (SO_PEERCRED). */
  get socket(): unknown {
    return (this.inner as { socket?: unknown }).socket;
  }

    get label(): string {
    return this.inner.label;
  }

  get carriesFds(): boolean | undefined {
    return this.inner.carriesFds;
  }

  get closed(): boolean {
    return this.inner.closed;
  }

  get pendingWriteBytes(): number {
    return this.inner.pendingWriteBytes ?? 0;
  }

  /** Whether reading is stopped because replies pile up unsent. */
  get outgoingPaused(): boolean {
    return this.outPaused;
  }

  start(sink: TransportSink): void {
    this.inner.start({
      data: (chunk, fds) => {
        this.lastDataAt = Date.now();
        sink.data(chunk, fds);
      },
      close: (err) => {
        this.clearResume();
        sink.close(err);
      },
    });
  }

  write(data: Uint8Array, fds?: readonly number[]): void {
    this.sinceCheck += data.byteLength;
    if (this.sinceCheck >= CHECK_EVERY_BYTES || data.byteLength >= CHECK_EVERY_BYTES) {
      // What waits unsent before this write; past the limit while already paused: abort.
      const waiting = this.pendingWriteBytes;
      this.sinceCheck = 0;
      if (waiting > HARD_FACTOR * this.maxOutgoingBytes) {
        this.events.overflow(waiting);
        this.abort();
        return;
      }
      this.inner.write(data, fds);
      if (this.pendingWriteBytes > this.maxOutgoingBytes) this.pauseForOutgoing();
      return;
    }
    this.inner.write(data, fds);
  }

  setReading(on: boolean): void {
    this.wantReading = on;
    if (!this.outPaused) this.inner.setReading(on);
  }

  close(): void {
    this.clearResume();
    this.inner.close();
  }

  abort(): void {
    this.clearResume();
    if (this.inner.abort) this.inner.abort();
    else this.inner.close();
  }

  private pauseForOutgoing(): void {
    if (this.outPaused) return;
    this.outPaused = true;
    this.inner.setReading(false);
    this.events.hold(true);
    this.resumeTimer = setInterval(() => {
      if (this.inner.closed) {
        this.clearResume();
        return;
      }
      if (this.pendingWriteBytes > this.maxOutgoingBytes / 2) return;
      this.clearResume();
      this.outPaused = false;
      this.inner.setReading(this.wantReading);
      this.events.hold(false);
    }, RESUME_POLL_MS);
    this.resumeTimer.unref();
  }

  private clearResume(): void {
    if (this.resumeTimer !== null) clearInterval(this.resumeTimer);
    this.resumeTimer = null;
  }
}
