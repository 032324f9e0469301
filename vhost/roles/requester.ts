/**
 * The sending half of a channel: writes requests and matches replies to them strictly in request
 * order (docs/protocol.md §8), with per-request timeouts. Used by the front-end on the main
 * channel and by the back-end on the backend channel.
 *
 * A reply whose header is wrong (flags other than exactly VERSION|REPLY, a code that differs
 * from the oldest outstanding request, or no request outstanding) is a fatal EPROTO: the
 * connection closes and every outstanding request fails. A reply whose payload is malformed
 * fails only its own request (EPROTO).
 */
import { VsvaError } from '../../src/errors.js';
import { VHOST_USER_HDR_SIZE, REPLY_FLAGS, VHOST_USER_REPLY_MASK, requestFlags } from '../wire/header.js';
import { errorFromStatus, isErrorStatus } from '../wire/errno.js';
import type { AnySpec } from '../messages/catalogue.js';
import { FixedCodec } from '../messages/codec.js';
import { Connection } from './connection.js';
import { Ring } from './ring.js';

export interface CallOptions {
  /** Milliseconds to wait for the reply (default: the channel's default). */
  timeoutMs?: number;
}

interface Pending {
  spec: AnySpec;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  deadline: number;
  settled: boolean;
}

export const DEFAULT_TIMEOUT_MS = 10_000;

export class Requester {
  private readonly pending = new Ring<Pending>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;

  constructor(
    readonly conn: Connection,
    private readonly defaultTimeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    conn.onClose((reason) => {
      const err = new VsvaError(
        reason?.code === 'EPROTO' || reason?.code === 'E2BIG' ? reason.code : 'ECONNRESET',
        `connection ${conn.transport.label} closed${reason ? `: ${reason.message}` : ''} with the request outstanding`,
      );
      this.failAll(err);
    });
  }

  /** Requests written whose replies have not arrived (timed-out ones included). */
  get outstanding(): number {
    return this.pending.length;
  }

  /**
   * Encode and write a request. `expectReply`: whether the peer will answer it (then the
   * promise settles with the decoded reply); otherwise it resolves once written.
   */
  send(spec: AnySpec, payload: unknown, needReply: boolean, expectReply: boolean, opts?: CallOptions): Promise<unknown> {
    if (this.conn.closed) {
      return Promise.reject(new VsvaError('ENOTCONN', `${spec.name}: connection ${this.conn.transport.label} is closed`));
    }
    let buf: Buffer;
    try {
      const size = spec.request.sizeOf(payload);
      buf = Connection.message(spec.code, requestFlags(needReply), size);
      spec.request.encodeInto(buf, VHOST_USER_HDR_SIZE, payload);
    } catch (e) {
      return Promise.reject(e);
    }
    // The request leaves first; its bookkeeping is done while it travels (a reply can only be
    // delivered from a later turn of the event loop, and nothing closes the connection inside
    // write, so the entry is in place before anything can settle it).
    const fds = spec.fds === true ? (payload as { fds?: readonly number[] }).fds : undefined;
    try {
      this.conn.write(buf, fds);
    } catch (e) {
      return Promise.reject(e);
    }
    if (!expectReply) return Promise.resolve(undefined);
    const timeoutMs = opts?.timeoutMs ?? this.defaultTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    const p = new Promise<unknown>((resolve, reject) => {
      this.pending.push({ spec, resolve, reject, deadline, settled: false });
    });
    if (deadline < this.timerAt) this.arm(deadline);
    return p;
  }

  /** Frame sink for a channel on which every incoming message is a reply. */
  readonly onFrame = (request: number, flags: number, payload: Buffer): void => {
    if ((flags & VHOST_USER_REPLY_MASK) === 0) {
      this.conn.fatal(new VsvaError('EPROTO', `request 0x${request.toString(16)} received where only replies may arrive`));
      return;
    }
    this.onReply(request, flags, payload);
  };

  onReply(request: number, flags: number, payload: Buffer): void {
    if (flags !== REPLY_FLAGS) {
      this.conn.fatal(new VsvaError('EPROTO', `reply flags 0x${flags.toString(16)} are not exactly VERSION|REPLY (0x5)`));
      return;
    }
    const head = this.pending.peek();
    if (!head) {
      this.conn.fatal(new VsvaError('EPROTO', `reply to 0x${request.toString(16)} with no request outstanding`));
      return;
    }
    if (head.spec.code !== request) {
      this.conn.fatal(new VsvaError('EPROTO', `reply to 0x${request.toString(16)} while the oldest outstanding request is ${head.spec.name} (0x${head.spec.code.toString(16)})`));
      return;
    }
    this.pending.shift();
    if (head.settled) return; // timed out earlier; the reply is discarded
    head.settled = true;
    let value: unknown;
    try {
      value = decodeReply(head.spec, payload);
    } catch (e) {
      head.reject(e);
      return;
    }
    head.resolve(value);
  }

  failAll(err: VsvaError): void {
    const all: Pending[] = [];
    this.pending.forEach((p) => all.push(p));
    this.pending.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    for (const p of all) {
      if (p.settled) continue;
      p.settled = true;
      p.reject(err.withContext(p.spec.name));
    }
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), Math.max(0, at - performance.now()) + 1);
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    this.pending.forEach((p) => {
      if (p.settled) return;
      if (p.deadline <= now) {
        p.settled = true;
        p.reject(new VsvaError('ETIMEDOUT', `${p.spec.name}: no reply within the timeout`));
      } else if (p.deadline < next) {
        next = p.deadline;
      }
    });
    if (next !== Infinity) this.arm(next);
  }
}

/** Decode a reply payload according to the message's reply kind (docs/protocol.md §5). */
function decodeReply(spec: AnySpec, payload: Buffer): unknown {
  if (payload.length < 8) throw new VsvaError('EPROTO', `${spec.name} reply: ${payload.length} bytes, expected at least 8`);
  if (spec.replyKind === 'status' && isZeroStatus(payload)) {
    // The common case without a bigint: status 0, the reply body follows.
    try {
      return spec.reply instanceof FixedCodec ? spec.reply.decodeFrom(payload, 8) : spec.reply.decode(payload.subarray(8));
    } catch (e) {
      throw new VsvaError('EPROTO', `${spec.name} reply body is malformed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const status = payload.readBigInt64LE(0);
  if (spec.replyKind === 'value') {
    if (payload.length !== 8) throw new VsvaError('EPROTO', `${spec.name} reply: ${payload.length} bytes, expected 8`);
    if (isErrorStatus(status)) throw errorFromStatus(Number(status), spec.name);
    return payload.readBigUInt64LE(0);
  }
  if (status < 0n) {
    if (payload.length !== 8 || !isErrorStatus(status)) {
      throw new VsvaError('EPROTO', `${spec.name} reply: malformed error reply (status ${status}, ${payload.length} bytes)`);
    }
    throw errorFromStatus(Number(status), spec.name);
  }
  if (status !== 0n) throw new VsvaError(spec.replyKind === 'ack' ? 'EIO' : 'EPROTO', `${spec.name} reply: status ${status} is neither 0 nor a negative errno`);
  if (spec.replyKind === 'ack') {
    if (payload.length !== 8) throw new VsvaError('EPROTO', `${spec.name} ack: ${payload.length} bytes, expected 8`);
    return undefined;
  }
  try {
    return spec.reply.decode(payload.subarray(8));
  } catch (e) {
    throw new VsvaError('EPROTO', `${spec.name} reply body is malformed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The i64 status at the start of `payload` is 0 (the caller has checked 8 bytes exist). */
function isZeroStatus(payload: Buffer): boolean {
  return (payload[0]! | payload[1]! | payload[2]! | payload[3]! | payload[4]! | payload[5]! | payload[6]! | payload[7]!) === 0;
}
