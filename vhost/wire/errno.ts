/**
 * The protocol's errno glossary (docs/protocol.md §6). Every error a peer sees on the wire is
 * one of these, as a negative Linux errno in an 8-byte little-endian i64 reply payload.
 *
 * Per-request errors (a reply is sent, the connection stays usable):
 *   ENOTTY      unknown request code
 *   EINVAL      payload size wrong for the message (or for its element count), a count outside
 *               its documented range, a field value outside its documented range or enum
 *   EOPNOTSUPP  non-zero reserved/padding field, unknown flag bit, or a message whose feature
 *               bit was not negotiated
 *   EOVERFLOW   an address + size pair wraps past 2^64
 *   EBUSY       SET_OWNER sent twice
 *   EIO         the back-end failed unexpectedly while handling the request
 *   any other   returned by the back-end's handler (e.g. ENOENT, ENOSPC, EFAULT), as documented
 *               by the host service for that message
 *
 * Fatal errors (no reply; the receiver closes the connection):
 *   EPROTO      header version is not 1, reserved header flag bits set, REPLY set on a request,
 *               or a reply that does not match the oldest outstanding request
 *   E2BIG       header size above the receiver's limit
 *
 * Local errors (raised by the front-end library, never on the wire):
 *   ETIMEDOUT   no reply within the request's timeout
 *   ECONNRESET  the connection closed while the request was outstanding
 *   ENOTCONN    request on a closed connection, or backend message with no backend channel
 */
import { VsvaError, errnoName } from '../../src/errors.js';

/** Largest errno value; an i64 status in [-MAX_ERRNO, -1] is an error (Linux IS_ERR_VALUE). */
const MAX_ERRNO = 4095;

/** True when an i64 reply status/value is an error (in [-4095, -1]). */
export function isErrorStatus(value: bigint): boolean {
  return value < 0n && value >= -BigInt(MAX_ERRNO);
}

/** Rebuild the error a peer reported, naming the message it answered. */
export function errorFromStatus(status: number, message: string): VsvaError {
  return VsvaError.fromErrno(status, `${message} failed with ${errnoName(status) ?? `errno ${-status}`}`);
}
