/**
 * The receiving half of a channel, table-driven (as rust-vmm vhost's `BackendReqHandler` and
 * iommufd's `iommufd_ioctl_ops[]`, drivers/iommu/iommufd/main.c): for each request, in
 * arrival order, it checks — before any handler runs — that the code is known (ENOTTY), that the
 * message's feature bits were negotiated (EOPNOTSUPP), and that the payload is valid for the
 * message (size → EINVAL, reserved/padding/unknown flags → EOPNOTSUPP, ranges → EINVAL,
 * wrap-around → EOVERFLOW); then it calls the handler. A handler may return a value or a
 * Promise; later requests are dispatched while an earlier one is pending, and replies are
 * written strictly in request order (docs/protocol.md §8).
 *
 * A VsvaError from a handler becomes its negative errno; any other exception becomes -EIO and
 * is logged. Nothing a peer sends makes this throw: header errors (bad version, reserved flag
 * bits, oversize, REPLY set on a request) close the connection as documented (docs/protocol.md §7).
 */
import { VsvaError, toNegErrno } from '../../src/errors.js';
import { closeFd } from '../../src/native/native.js';
import type { Logger } from '../../src/log.js';
import { VHOST_USER_HDR_SIZE, REPLY_FLAGS, VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK } from '../wire/header.js';
import type { AnySpec } from '../messages/catalogue.js';
import { Connection } from './connection.js';
import { Ring } from './ring.js';

export interface DispatchTarget {
  readonly byCode: ReadonlyMap<number, AnySpec>;
  /** Protocol features negotiated on this channel. */
  negotiated(): bigint;
  /** Whether an 'ack' message with NEED_REPLY gets its ack (REPLY_ACK in effect). */
  acks(spec: AnySpec, payload: Buffer): boolean;
  /** Run the request; may throw (VsvaError → errno reply) or return a Promise. */
  invoke(spec: AnySpec, request: unknown): unknown;
}

interface Slot {
  buf: Buffer | null;
}

/**
 * Back-pressure on a peer that keeps sending while a reply is held back behind a pending
 * handler (docs/protocol.md §8): past this many owed replies, or this many bytes of finished
 * replies waiting their turn, the dispatcher stops reading the connection; it reads again once
 * both are below half. Requests already read are still dispatched; the peer's further writes
 * wait in the socket.
 */
export const MAX_HELD_REPLIES = 256;
export const MAX_HELD_REPLY_BYTES = 32 * 1024 * 1024;

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';
}

export class Dispatcher {
  private readonly slots = new Ring<Slot>();
  /** Bytes of finished replies waiting behind a pending one. */
  private heldBytes = 0;
  private readingPaused = false;
  /** negotiatedAll's cache: the negotiated set it is for, and the answer per feature value. */
  private featuresSeen = -1n;
  private readonly featureOk = new Map<bigint, boolean>();
  /** Requests received (including rejected ones). */
  received = 0;

  constructor(
    readonly conn: Connection,
    private readonly target: DispatchTarget,
    private readonly log: Logger,
  ) {}

  /** Frame sink: every frame on this channel is a request. */
  readonly onFrame = (request: number, flags: number, payload: Buffer): void => {
    if ((flags & VHOST_USER_REPLY_MASK) !== 0) {
      this.conn.fatal(new VsvaError('EPROTO', `REPLY flag set on request 0x${request.toString(16)}`));
      return;
    }
    this.received++;
    const needReply = (flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
    const spec = this.target.byCode.get(request);
    if (spec === undefined) {
      this.log.debug({ request }, 'unknown request code');
      if (needReply) this.emit(errorReply(request, new VsvaError('ENOTTY', `unknown request code 0x${request.toString(16)}`)));
      return;
    }
    const replies = spec.replyKind !== 'ack' || (needReply && this.target.acks(spec, payload));
    // Descriptors that came with this frame: ours until the handler receives them (it owns them then).
    let fds = spec.fds === true ? this.conn.takeFds() : null;
    let result: unknown;
    try {
      if (spec.feature !== 0n && !this.negotiatedAll(spec.feature)) {
        throw new VsvaError('EOPNOTSUPP', `${spec.name} needs protocol features 0x${spec.feature.toString(16)}, not negotiated`);
      }
      const req = spec.request.decode(payload);
      if (fds !== null) {
        (req as { fds?: number[] }).fds = fds;
        fds = null;
      }
      result = this.target.invoke(spec, req);
    } catch (e) {
      if (fds !== null) for (const fd of fds) closeFd(fd);
      this.failed(spec, e, replies);
      return;
    }
    if (isThenable(result)) {
      const slot: Slot | null = replies ? { buf: null } : null;
      if (slot) {
        this.slots.push(slot);
        this.checkHeld();
      }
      result.then(
        (v) => {
          if (slot) this.fill(slot, this.okReply(spec, v));
        },
        (e: unknown) => {
          this.failed(spec, e, false);
          if (slot) this.fill(slot, errorReply(spec.code, e));
        },
      );
    } else if (replies) {
      this.emit(this.okReply(spec, result));
    }
  };

  /**
   * Whether every bit of `feature` is negotiated. The answer per feature value is kept until the
   * negotiated set changes (bigint masks allocate; every request asks).
   */
  private negotiatedAll(feature: bigint): boolean {
    const negotiated = this.target.negotiated();
    if (negotiated !== this.featuresSeen) {
      this.featuresSeen = negotiated;
      this.featureOk.clear();
    }
    let ok = this.featureOk.get(feature);
    if (ok === undefined) {
      ok = (feature & ~negotiated) === 0n;
      this.featureOk.set(feature, ok);
    }
    return ok;
  }

  /** Replies owed but not yet written (a handler is pending). */
  get pendingReplies(): number {
    return this.slots.length;
  }

  private failed(spec: AnySpec, e: unknown, reply: boolean): void {
    if (!(e instanceof VsvaError)) this.log.error({ err: e, request: spec.name }, 'handler threw an unexpected exception');
    else this.log.debug({ request: spec.name, code: e.code }, e.message);
    if (reply) this.emit(errorReply(spec.code, e));
    else if (spec.replyKind === 'ack' && e instanceof VsvaError) this.log.warn({ request: spec.name, code: e.code }, `request failed with no reply requested: ${e.message}`);
  }

  private okReply(spec: AnySpec, value: unknown): Buffer {
    try {
      if (spec.replyKind === 'value') {
        const buf = Connection.message(spec.code, REPLY_FLAGS, 8);
        buf.writeBigUInt64LE(value as bigint, VHOST_USER_HDR_SIZE);
        return buf;
      }
      if (spec.replyKind === 'ack') {
        const buf = Connection.message(spec.code, REPLY_FLAGS, 8);
        buf.fill(0, VHOST_USER_HDR_SIZE, VHOST_USER_HDR_SIZE + 8); // status 0
        return buf;
      }
      const size = spec.reply.sizeOf(value);
      const buf = Connection.message(spec.code, REPLY_FLAGS, 8 + size);
      writeZeroStatus(buf);
      spec.reply.encodeInto(buf, VHOST_USER_HDR_SIZE + 8, value);
      return buf;
    } catch (e) {
      this.log.error({ err: e, request: spec.name }, 'handler returned a reply that cannot be encoded');
      return errorReply(spec.code, new VsvaError('EIO', `${spec.name}: reply could not be encoded`));
    }
  }

  /** Whether reading is paused for back-pressure. */
  get paused(): boolean {
    return this.readingPaused;
  }

  private emit(buf: Buffer): void {
    if (this.slots.length === 0) {
      this.conn.write(buf);
      return;
    }
    this.slots.push({ buf });
    this.heldBytes += buf.length;
    this.checkHeld();
  }

  private fill(slot: Slot, buf: Buffer): void {
    slot.buf = buf;
    if (slot !== this.slots.peek()) this.heldBytes += buf.length;
    let head = this.slots.peek();
    while (head !== undefined && head.buf !== null) {
      this.slots.shift();
      if (head !== slot) this.heldBytes -= head.buf.length;
      this.conn.write(head.buf);
      head = this.slots.peek();
    }
    this.checkHeld();
  }

  private checkHeld(): void {
    if (!this.readingPaused && (this.slots.length > MAX_HELD_REPLIES || this.heldBytes > MAX_HELD_REPLY_BYTES)) {
      this.readingPaused = true;
      this.conn.setReading(false);
      this.log.debug({ held: this.slots.length, bytes: this.heldBytes }, 'replies held back: pausing reads');
    } else if (this.readingPaused && this.slots.length <= MAX_HELD_REPLIES / 2 && this.heldBytes <= MAX_HELD_REPLY_BYTES / 2) {
      this.readingPaused = false;
      this.conn.setReading(true);
    }
  }
}

/** Status 0 (i64) right after the header: eight zero bytes. */
function writeZeroStatus(buf: Buffer): void {
  const at = VHOST_USER_HDR_SIZE;
  buf[at] = 0;
  buf[at + 1] = 0;
  buf[at + 2] = 0;
  buf[at + 3] = 0;
  buf[at + 4] = 0;
  buf[at + 5] = 0;
  buf[at + 6] = 0;
  buf[at + 7] = 0;
}

/** A reply carrying only a negative errno (8-byte i64 payload). */
function errorReply(code: number, e: unknown): Buffer {
  const buf = Connection.message(code, REPLY_FLAGS, 8);
  buf.writeBigInt64LE(BigInt(toNegErrno(e)), VHOST_USER_HDR_SIZE);
  return buf;
}
