/**
 * Turns an arbitrarily chunked byte stream into whole messages (docs/protocol.md §2).
 *
 * Payloads are handed out as views into the received chunks (no copy when a message lies in one
 * chunk); a message split across chunks is joined once, when its last byte arrives. The header
 * is checked as soon as its 12 bytes are in (version, reserved flag bits, size against the
 * receiver's limit), so an oversized message is refused before its payload is buffered. A
 * header error is fatal: push() throws the VsvaError (EPROTO or E2BIG) and the framer stays
 * broken; the owner closes the connection. hold() / release() let the owner stop delivery
 * between two frames (the rest of the chunk waits here) and resume it in order.
 */
import { VsvaError } from '../../src/errors.js';
import { VHOST_USER_HDR_SIZE, checkHeaderFlagsAndSize, readU32 } from './header.js';

export type FrameSink = (request: number, flags: number, payload: Buffer) => void;

export class Framer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes needed before parsing can make progress again. */
  private need = VHOST_USER_HDR_SIZE;
  private broken: VsvaError | null = null;
  private stopped = false;
  /** Frames are held (hold()): bytes wait here, whole frames included, until release(). */
  private held = false;

  constructor(readonly maxPayload: number) {}

  /** Feed a chunk; calls `sink` once per whole message, in order. Throws on a header error. */
  push(chunk: Buffer, sink: FrameSink): void {
    if (this.broken) throw this.broken;
    if (this.stopped || chunk.length === 0) return;
    if (this.held) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      return;
    }
    let buf: Buffer;
    if (this.buffered === 0) {
      buf = chunk;
    } else {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered < this.need) return;
      buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      this.chunks = [];
      this.buffered = 0;
    }
    let off = 0;
    const end = buf.length;
    while (!this.stopped && !this.held) {
      const avail = end - off;
      if (avail < VHOST_USER_HDR_SIZE) {
        this.need = VHOST_USER_HDR_SIZE;
        break;
      }
      const request = readU32(buf, off);
      const flags = readU32(buf, off + 4);
      const size = readU32(buf, off + 8);
      try {
        checkHeaderFlagsAndSize(flags, size, this.maxPayload);
      } catch (e) {
        this.broken = e as VsvaError;
        this.chunks = [];
        this.buffered = 0;
        throw e;
      }
      const total = VHOST_USER_HDR_SIZE + size;
      if (avail < total) {
        this.need = total;
        break;
      }
      const start = off + VHOST_USER_HDR_SIZE;
      off += total;
      sink(request, flags, buf.subarray(start, off));
    }
    if (!this.stopped && off < end) {
      this.chunks.push(off === 0 ? buf : buf.subarray(off));
      this.buffered = end - off;
    }
  }

  /**
   * Hold delivery: from the next frame on (also when called by the sink during a push), frames
   * wait here — with what arrives meanwhile — until release(). The owner stops reading the
   * transport at the same time, so what waits is bounded by what was already read.
   */
  hold(): void {
    this.held = true;
  }

  /** Deliver the held frames to `sink`, then go on as usual. Throws as push() does. */
  release(sink: FrameSink): void {
    if (!this.held) return;
    this.held = false;
    if (this.stopped || this.buffered === 0) return;
    const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    this.push(buf, sink);
  }

  /** Whether delivery is held. */
  get holding(): boolean {
    return this.held;
  }

  /** Stop delivering messages (the connection is closing); later pushes are ignored. */
  stop(): void {
    this.stopped = true;
    this.chunks = [];
    this.buffered = 0;
  }

  /** Bytes held of an incomplete message. */
  get pendingBytes(): number {
    return this.buffered;
  }
}
