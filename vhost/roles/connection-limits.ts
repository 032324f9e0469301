/**
 * Connection limits of a back-end on a Unix socket (docs/reliability.md §4.1;
 * docs/protocol.md §7): how many connections, from whom, how long one may hold a slot without a
 * VM, how long a frame may stay half-sent, how much may wait unsent. In-process connections
 * (the host's own) are not limited.
 *
 * - Admission, at accept: over `maxConnections` open connections → EMFILE; over
 *   `maxConnectionsPerUid` for the peer's uid (SO_PEERCRED) → EUSERS. A refused connection is
 *   answered: the first request's reply carries the errno (-EMFILE / -EUSERS), then the host
 *   closes it (at once if nothing arrives within REFUSAL_WAIT_MS). At most MAX_REFUSING refusals
 *   wait at once; past that a refused connection is closed without an answer.
 * - Timeouts, checked by one sweep timer: a connection that holds no VM (no VM_SETUP yet, not a
 *   backend channel, not a monitor) and has received nothing for `idleTimeoutMs`, or that still
 *   holds none `setupTimeoutMs` after accept, is closed; any connection with a frame started and
 *   not finished for `halfFrameTimeoutMs` is closed. The reasons (ETIMEDOUT) are logged.
 * - Bytes: a request frame larger than `maxIncomingBytes` is refused from its header (E2BIG,
 *   fatal, docs/protocol.md §7), so a connection buffers at most one frame's bytes; unsent
 *   replies are bounded by GuardedTransport (vhost/transport/guarded.ts) with `maxOutgoingBytes`.
 */
import fs from 'node:fs';
import { fail, Errno, type ErrnoName } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { MAX_REQUEST_PAYLOAD, REPLY_FLAGS, VHOST_USER_HDR_SIZE, writeHeader } from '../wire/header.js';
import type { Transport } from '../transport/transport.js';
import type { PeerIdentity } from '../transport/unix.js';
import type { GuardedTransport } from '../transport/guarded.js';
import { closeFd } from '../../src/native/native.js';

export interface ConnectionLimits {
  /** Connections open at once, every peer together (over: EMFILE). */
  maxConnections: number;
  /** Connections open at once from one uid (over: EUSERS). */
  maxConnectionsPerUid: number;
  /** A connection holding no VM is closed after this long without receiving anything (ms; 0: never). */
  idleTimeoutMs: number;
  /** A connection still holding no VM this long after accept is closed (ms; 0: never). */
  setupTimeoutMs: number;
  /** A frame started and not finished for this long closes its connection (ms; 0: never). */
  halfFrameTimeoutMs: number;
  /** Largest request payload a connection may buffer (bytes; larger frames: E2BIG, fatal). */
  maxIncomingBytes: number;
  /** Unsent reply bytes before reading pauses (and, still over while paused, the connection is aborted). */
  maxOutgoingBytes: number;
}

export const DEFAULT_MAX_CONNECTIONS = 2112;
export const DEFAULT_MAX_CONNECTIONS_PER_UID = 544;
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
export const DEFAULT_SETUP_TIMEOUT_MS = 60_000;
export const DEFAULT_HALF_FRAME_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_OUTGOING_BYTES = 8 * 1024 * 1024;

export const DEFAULT_CONNECTION_LIMITS: Readonly<ConnectionLimits> = {
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  maxConnectionsPerUid: DEFAULT_MAX_CONNECTIONS_PER_UID,
  idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
  setupTimeoutMs: DEFAULT_SETUP_TIMEOUT_MS,
  halfFrameTimeoutMs: DEFAULT_HALF_FRAME_TIMEOUT_MS,
  maxIncomingBytes: MAX_REQUEST_PAYLOAD,
  maxOutgoingBytes: DEFAULT_MAX_OUTGOING_BYTES,
};

/**
 * The soft RLIMIT_NOFILE of this process ("Max open files" in /proc/self/limits, proc(5)), or
 * null where it cannot be read. Past it accept(2) fails with EMFILE and libuv drops the
 * connection unanswered, so the connection cap should stay below it.
 */
export function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * A connection cap that fits `wanted` under the open-file limit: each VM's connection pair also
 * holds its RAM descriptor, so at most two thirds of the descriptors left after 64 go to
 * connections (never fewer than 16).
 */
export function connectionCapWithinFileLimit(wanted: number, nofile = openFileLimit()): number {
  if (nofile === null) return wanted;
  return Math.min(wanted, Math.max(16, Math.floor(((nofile - 64) * 2) / 3)));
}

/** The limits with defaults filled in; EINVAL for a value that is not a non-negative integer in range. */
export function resolveConnectionLimits(given: Partial<ConnectionLimits> = {}): ConnectionLimits {
  const out = { ...DEFAULT_CONNECTION_LIMITS };
  const ranges: Record<keyof ConnectionLimits, [number, number]> = {
    maxConnections: [1, 1_000_000],
    maxConnectionsPerUid: [1, 1_000_000],
    idleTimeoutMs: [0, 86_400_000],
    setupTimeoutMs: [0, 86_400_000],
    halfFrameTimeoutMs: [0, 86_400_000],
    maxIncomingBytes: [4096, MAX_REQUEST_PAYLOAD],
    maxOutgoingBytes: [65_536, 1 << 30],
  };
  for (const key of Object.keys(ranges) as (keyof ConnectionLimits)[]) {
    const v = given[key];
    if (v === undefined) continue;
    const [min, max] = ranges[key];
    if (!Number.isInteger(v) || v < min || v > max) fail('EINVAL', `connection limit ${key} ${String(v)} is not an integer in [${min}, ${max}]`);
    out[key] = v;
  }
  return out;
}

/** Open connections per uid and in all; decides admission. */
export class ConnectionAdmission {
  private total = 0;
  private readonly perUid = new Map<number, number>();

  constructor(private readonly limits: ConnectionLimits) {}

  get open(): number {
    return this.total;
  }

  openFor(uid: number): number {
    return this.perUid.get(uid) ?? 0;
  }

  /** null: admitted (counted until `release`); else the errno to refuse with. */
  admit(peer: PeerIdentity): ErrnoName | null {
    if (this.total >= this.limits.maxConnections) return 'EMFILE';
    const n = this.perUid.get(peer.uid) ?? 0;
    if (n >= this.limits.maxConnectionsPerUid) return 'EUSERS';
    this.total++;
    this.perUid.set(peer.uid, n + 1);
    return null;
  }

  release(peer: PeerIdentity): void {
    this.total--;
    const n = (this.perUid.get(peer.uid) ?? 1) - 1;
    if (n <= 0) this.perUid.delete(peer.uid);
    else this.perUid.set(peer.uid, n);
  }
}

/** How long a refused connection waits for its first request header before it is closed (ms). */
export const REFUSAL_WAIT_MS = 1000;
/** Refused connections waiting for their first header at once; past this they are closed unanswered. */
export const MAX_REFUSING = 64;

let refusing = 0;

/**
 * Answer the first request on `t` with -errno (a reply frame with that request's code), then
 * close; close at once after REFUSAL_WAIT_MS, or when MAX_REFUSING refusals already wait.
 */
export function refuseConnection(t: Transport, code: ErrnoName, why: string, log: Logger): void {
  log.warn({ peer: t.label, code }, `refusing a connection: ${why}`);
  const abort = (): void => {
    if (t.abort) t.abort();
    else t.close();
  };
  if (refusing >= MAX_REFUSING) {
    t.start({ data: () => {}, close: () => {} });
    abort();
    return;
  }
  refusing++;
  let head = Buffer.alloc(0);
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    refusing--;
    clearTimeout(timer);
  };
  const timer = setTimeout(() => {
    finish();
    abort();
  }, REFUSAL_WAIT_MS);
  timer.unref();
  t.start({
    data: (chunk, fds) => {
      for (const fd of fds ?? []) closeFd(fd);
      if (done) return;
      head = Buffer.concat([head, chunk.subarray(0, VHOST_USER_HDR_SIZE - head.length)]);
      if (head.length < VHOST_USER_HDR_SIZE) return;
      finish();
      const reply = Buffer.alloc(VHOST_USER_HDR_SIZE + 8);
      writeHeader(reply, 0, head.readUInt32LE(0), REPLY_FLAGS, 8);
      reply.writeBigInt64LE(BigInt(-Errno[code]), VHOST_USER_HDR_SIZE);
      t.write(reply);
      t.close();
    },
    close: () => finish(),
  });
}

/** One connection the sweep watches. */
export interface SweptConnection {
  readonly guard: GuardedTransport;
  /** Holds a VM, is a backend channel or a monitor: exempt from the idle and set-up timeouts. */
  holdsSlot(): boolean;
  /** Bytes of a frame started and not finished. */
  partialBytes(): number;
  /** Frames received so far (progress resets the half-frame clock). */
  framesReceived(): number;
  /** Close it for `why` (ETIMEDOUT, logged by the sweep). */
  abort(why: string): void;
}

interface SweepState {
  partialSince: number | null;
  frames: number;
}

/**
 * The timeouts of ConnectionLimits, checked every SWEEP_MS on every watched connection (one
 * timer for all of them, running only while some are watched).
 */
export class ConnectionSweep {
  private readonly watched = new Map<SweptConnection, SweepState>();
  private timer: NodeJS.Timeout | null = null;
  private readonly periodMs: number;

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly log: Logger,
  ) {
    const shortest = Math.min(...[limits.idleTimeoutMs, limits.setupTimeoutMs, limits.halfFrameTimeoutMs].filter((v) => v > 0), 4000);
    this.periodMs = Math.max(20, Math.min(1000, Math.floor(shortest / 4)));
  }

  watch(c: SweptConnection): void {
    this.watched.set(c, { partialSince: null, frames: 0 });
    if (this.timer === null) {
      this.timer = setInterval(() => this.sweep(), this.periodMs);
      this.timer.unref();
    }
  }

  unwatch(c: SweptConnection): void {
    this.watched.delete(c);
    if (this.watched.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  stop(): void {
    this.watched.clear();
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** @internal One pass (the timer's; tests may call it). */
  sweep(now = Date.now()): void {
    const { idleTimeoutMs, setupTimeoutMs, halfFrameTimeoutMs } = this.limits;
    for (const [c, st] of [...this.watched]) {
      let why: string | null = null;
      const frames = c.framesReceived();
      const partial = c.partialBytes();
      if (partial === 0) st.partialSince = null;
      else if (st.partialSince === null || frames !== st.frames) st.partialSince = now;
      st.frames = frames;
      if (halfFrameTimeoutMs > 0 && st.partialSince !== null && now - st.partialSince >= halfFrameTimeoutMs) {
        why = `a frame stayed unfinished for ${halfFrameTimeoutMs} ms (${partial} bytes held)`;
      } else if (!c.holdsSlot()) {
        if (idleTimeoutMs > 0 && now - c.guard.lastDataAt >= idleTimeoutMs) why = `silent for ${idleTimeoutMs} ms without a VM`;
        else if (setupTimeoutMs > 0 && now - c.guard.acceptedAt >= setupTimeoutMs) why = `no VM set up within ${setupTimeoutMs} ms`;
      }
      if (why !== null) {
        this.log.warn({ peer: c.guard.label, code: 'ETIMEDOUT' }, `closing connection: ${why}`);
        this.unwatch(c);
        c.abort(why);
      }
    }
  }
}
