/**
 * Payload codecs and message specs: the pieces the catalogue (../catalogue.ts) is built from.
 *
 * A PayloadCodec encodes a typed value into exactly `sizeOf(v)` bytes and decodes a received
 * payload, validating it first (size exact for the message or its element count → EINVAL,
 * reserved/padding zero and flag bits known → EOPNOTSUPP, documented ranges → EINVAL, address
 * wrap-around → EOVERFLOW). `decode` never returns an unchecked value.
 */
import { fail } from '../../src/errors.js';
import { Struct } from '../wire/struct.js';

export interface PayloadCodec<T> {
  /** Exact encoded size of `v`. */
  sizeOf(v: T): number;
  /** Write `v` at `off` (sizeOf(v) bytes); throws EINVAL for a value that cannot be sent. */
  encodeInto(buf: Buffer, off: number, v: T): void;
  /** Validate and decode a whole received payload; throws the documented VsvaError. */
  decode(p: Buffer): T;
}

/** Encode `v` into a fresh buffer. */
export function encodePayload<T>(codec: PayloadCodec<T>, v: T): Buffer {
  const buf = Buffer.allocUnsafe(codec.sizeOf(v));
  codec.encodeInto(buf, 0, v);
  return buf;
}

/** A payload that is exactly one struct, with an optional cross-field check. */
export class FixedCodec<T extends object> implements PayloadCodec<T> {
  constructor(
    readonly struct: Struct<T>,
    private readonly check?: (v: T) => void,
  ) {}

  sizeOf(): number {
    return this.struct.size;
  }

  encodeInto(buf: Buffer, off: number, v: T): void {
    this.check?.(v);
    this.struct.encodeInto(buf, off, v);
  }

  decode(p: Buffer): T {
    return this.decodeFrom(p, 0);
  }

  /**
   * decode(buf.subarray(start)) without making the view: the payload is `buf` from `start` to
   * its end (a reply body after its status). Same checks and errors as decode.
   */
  decodeFrom(buf: Buffer, start: number): T {
    const length = buf.length - start;
    if (length !== this.struct.size) fail('EINVAL', `${this.struct.name}: payload is ${length} bytes, expected ${this.struct.size}`);
    const v = this.struct.decode(buf, start);
    this.check?.(v);
    return v;
  }
}

/** The empty payload (size 0). */
export const EMPTY: PayloadCodec<void> = {
  sizeOf: () => 0,
  encodeInto: () => {},
  decode(p: Buffer): void {
    if (p.length !== 0) fail('EINVAL', `payload is ${p.length} bytes, expected 0`);
  },
};

/** A single u64 (vhost-user's "u64" payload), as a bigint. */
export const U64: PayloadCodec<bigint> = {
  sizeOf: () => 8,
  encodeInto(buf: Buffer, off: number, v: bigint): void {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) fail('EINVAL', `u64 payload ${String(v)} out of range`);
    buf.writeBigUInt64LE(v, off);
  },
  decode(p: Buffer): bigint {
    if (p.length !== 8) fail('EINVAL', `payload is ${p.length} bytes, expected 8 (u64)`);
    return p.readBigUInt64LE(0);
  },
};

/**
 * How a request is answered (docs/protocol.md §5):
 * - 'value'  always answered with a u64 (GET_FEATURES, GET_PROTOCOL_FEATURES); an error is the
 *            negative errno as an i64.
 * - 'ack'    answered only when REPLY_ACK is negotiated and NEED_REPLY is set, with a u64 that is
 *            0 on success or the negative errno as an i64.
 * - 'status' always answered: i64 status (0 or negative errno); on success the reply body
 *            follows; an error reply is the 8-byte status alone.
 */
export type ReplyKind = 'value' | 'ack' | 'status';

export interface MessageSpec<Req, Rep> {
  readonly name: string;
  readonly code: number;
  readonly replyKind: ReplyKind;
  readonly request: PayloadCodec<Req>;
  /** Body of a successful reply ('status'); U64 for 'value'; EMPTY for 'ack'. */
  readonly reply: PayloadCodec<Rep>;
  /** Protocol feature bits that must be negotiated before the message is accepted (0n: none). */
  readonly feature: bigint;
  readonly doc: string;
  /**
   * The request may carry file descriptors as SCM_RIGHTS with its first byte (SET_MEM_TABLE's fd
   * form): the sender takes them from the request's `fds` field, the receiver puts the ones that
   * came with the frame there (an empty array when none came) and owns them from then on.
   */
  readonly fds?: boolean;
}

export function message<Req, Rep>(spec: MessageSpec<Req, Rep>): MessageSpec<Req, Rep> {
  return spec;
}

/** a + size must not wrap past 2^64 (EOVERFLOW). */
export function checkNoWrap(what: string, addr: bigint, size: bigint): void {
  if (addr + size > 0x1_0000_0000_0000_0000n) fail('EOVERFLOW', `${what}: 0x${addr.toString(16)} + 0x${size.toString(16)} wraps past 2^64`);
}
