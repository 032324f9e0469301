/**
 * The vhost-user message header (QEMU docs/interop/vhost-user.rst, "Message Specification";
 * docs/protocol.md §2).
 *
 *   offset 0  request u32   message code (front-end and back-end channels are separate namespaces)
 *   offset 4  flags   u32   bits 1:0 version (must be 1), bit 2 REPLY, bit 3 NEED_REPLY,
 *                           bits 31:4 reserved (must be 0)
 *   offset 8  size    u32   payload bytes after the header
 *
 * All fields little-endian. A header error (bad version, reserved flag bits, size over the
 * limit, REPLY on a request or its absence on a reply) is fatal for the connection: the
 * framing can no longer be trusted, so the receiver closes it (docs/protocol.md §7).
 */
import { fail } from '../../src/errors.js';

export const VHOST_USER_HDR_SIZE = 12;
const VHOST_USER_VERSION = 0x1;
const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_REPLY_MASK = 0x4;
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Every flag bit vsva defines; anything else is reserved. */
const VHOST_USER_ALL_FLAGS = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;

/**
 * Largest payload a request (either channel) may carry: 1 MiB of DEVICE_DMA write data plus
 * 4 KiB of room for the fixed part. Anything larger is a fatal E2BIG.
 */
export const MAX_REQUEST_PAYLOAD = 0x10_0000 + 0x1000;
/**
 * Largest payload a reply may carry: 64 MiB, so that GET_STATE can return the JSON snapshot of
 * a host at docs/design.md §9 scale (64 VMs × 1024 PASIDs). Anything larger is a fatal E2BIG.
 */
export const MAX_REPLY_PAYLOAD = 0x400_0000;

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

/**
 * Write a header at `off` of `buf` (each field as its low 32 bits, little-endian). Plain byte
 * stores: every message on both sides passes here.
 */
export function writeHeader(buf: Uint8Array, off: number, request: number, flags: number, size: number): void {
  if (!(off >= 0 && off + VHOST_USER_HDR_SIZE <= buf.length)) throw new RangeError(`header at offset ${off} does not fit ${buf.length} bytes`);
  buf[off] = request;
  buf[off + 1] = request >>> 8;
  buf[off + 2] = request >>> 16;
  buf[off + 3] = request >>> 24;
  buf[off + 4] = flags;
  buf[off + 5] = flags >>> 8;
  buf[off + 6] = flags >>> 16;
  buf[off + 7] = flags >>> 24;
  buf[off + 8] = size;
  buf[off + 9] = size >>> 8;
  buf[off + 10] = size >>> 16;
  buf[off + 11] = size >>> 24;
}

/** The u32 at `off` (little-endian; the caller has checked that 4 bytes exist). */
export function readU32(buf: Uint8Array, off: number): number {
  return (buf[off]! | (buf[off + 1]! << 8) | (buf[off + 2]! << 16)) + buf[off + 3]! * 0x100_0000;
}

/** Encode a header into a fresh 12-byte buffer. */
export function encodeHeader(h: MessageHeader): Buffer {
  const buf = Buffer.allocUnsafe(VHOST_USER_HDR_SIZE);
  writeHeader(buf, 0, h.request, h.flags, h.size);
  return buf;
}

/** Decode the header at `off` (no checks; see checkHeader). */
export function decodeHeader(buf: Uint8Array, off = 0): MessageHeader {
  const b = buf as Buffer;
  return { request: b.readUInt32LE(off), flags: b.readUInt32LE(off + 4), size: b.readUInt32LE(off + 8) };
}

/** Flags of a request: version 1, plus NEED_REPLY when asked. */
export function requestFlags(needReply: boolean): number {
  return needReply ? VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK : VHOST_USER_VERSION;
}

/** Flags of every reply: exactly version 1 | REPLY (0x5), as QEMU checks them. */
export const REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;

/**
 * The header checks both roles apply before looking at the payload. `maxPayload` is the
 * receiver's limit. Throws EPROTO (version, reserved bits) or E2BIG (size); both are fatal.
 */
export function checkHeaderFlagsAndSize(flags: number, size: number, maxPayload: number): void {
  if ((flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    fail('EPROTO', `header version ${flags & VHOST_USER_VERSION_MASK} is not ${VHOST_USER_VERSION}`);
  }
  if ((flags & ~VHOST_USER_ALL_FLAGS) !== 0) {
    fail('EPROTO', `header flags 0x${(flags >>> 0).toString(16)} set reserved bits 31:4`);
  }
  if (size > maxPayload) fail('E2BIG', `payload size ${size} exceeds the limit of ${maxPayload} bytes`);
}
