/**
 * One framed connection: a transport, a framer with the receiver's payload limit, and a
 * swappable frame sink (a connection that starts as a main channel can become a backend channel
 * after BACKEND_ATTACH). Header errors and transport closes end it once, with a reason.
 */
import type { Logger } from '../../src/log.js';
import { VsvaError } from '../../src/errors.js';
import { closeFd } from '../../src/native/native.js';
import { Framer, type FrameSink } from '../wire/framer.js';
import { VHOST_USER_HDR_SIZE, writeHeader } from '../wire/header.js';
import type { Transport } from '../transport/transport.js';

export type CloseListener = (reason: VsvaError | null) => void;

export class Connection {
  readonly framer: Framer;
  sink: FrameSink;
  private closeListeners: CloseListener[] = [];
  private ended = false;
  /** Why the connection ended (null: clean close by either side). */
  reason: VsvaError | null = null;
  /**
   * Descriptors received and not yet taken (takeFds), and the index of the first frame delivered
   * after they arrived. They came with the first byte of the peer's sendmsg that carried them, so
   * they belong to the first frame that starts in or after their chunk: that frame (index
   * fdFrame, unless it began in an earlier chunk) or the next. Any later frame finding them
   * untaken means no frame claimed them: they are closed.
   */
  private fdQueue: number[] = [];
  private fdFrame = 0;
  private frames = 0;
  private readonly deliver: FrameSink = (request, flags, payload) => {
    const i = this.frames++;
    this.sink(request, flags, payload);
    if (this.fdQueue.length > 0 && i > this.fdFrame) this.dropFds('no frame claimed them');
  };

  constructor(
    readonly transport: Transport,
    maxPayload: number,
    readonly log: Logger,
  ) {
    this.framer = new Framer(maxPayload);
    this.sink = () => {};
    transport.start({
      data: (chunk, fds) => {
        if (fds !== undefined && fds.length > 0) this.receivedFds(fds);
        try {
          this.framer.push(chunk, this.deliver);
        } catch (e) {
          const err = e instanceof VsvaError ? e : new VsvaError('EIO', `frame handling failed: ${String(e)}`);
          if (!(e instanceof VsvaError)) log.error({ err: e }, 'unexpected exception while handling a frame');
          this.fatal(err);
        }
      },
      close: (err) => this.finish(err ? new VsvaError('ECONNRESET', `${transport.label}: ${err.message}`) : null),
    });
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Frames received so far (the connection limits' half-frame clock watches progress). */
  get framesReceived(): number {
    return this.frames;
  }

  onClose(fn: CloseListener): void {
    if (this.ended) queueMicrotask(() => fn(this.reason));
    else this.closeListeners.push(fn);
  }

  /** Write one message (header + payload already laid out in `buf`), `fds` attached to its first byte. */
  write(buf: Buffer, fds?: readonly number[]): void {
    if (!this.ended) this.transport.write(buf, fds);
  }

  /** The descriptors that came with the frame being delivered (ownership passes to the caller). */
  takeFds(): number[] {
    const fds = this.fdQueue;
    this.fdQueue = [];
    return fds;
  }

  private receivedFds(fds: number[]): void {
    if (this.ended) {
      for (const fd of fds) closeFd(fd);
      return;
    }
    if (this.fdQueue.length > 0) this.dropFds('a second set arrived before a frame claimed them');
    this.fdQueue = fds;
    this.fdFrame = this.frames;
  }

  private dropFds(why: string): void {
    const fds = this.takeFds();
    this.log.warn({ fds: fds.length, peer: this.transport.label }, `closing received file descriptors: ${why}`);
    for (const fd of fds) closeFd(fd);
  }

  /**
   * Hold the frames already received (on) or deliver them (off): unlike setReading, this also
   * stops the frames of a chunk that was read already (vhost/transport/guarded.ts uses it while
   * a peer leaves its replies unread). A header error found on release closes the connection.
   */
  holdFrames(on: boolean): void {
    if (this.ended) return;
    if (on) {
      this.framer.hold();
      return;
    }
    try {
      this.framer.release(this.deliver);
    } catch (e) {
      this.fatal(e instanceof VsvaError ? e : new VsvaError('EIO', `frame handling failed: ${String(e)}`));
    }
  }

  /** Flow control towards the peer (see Transport.setReading). */
  setReading(on: boolean): void {
    if (!this.ended) this.transport.setReading(on);
  }

  /** Allocate a message buffer with its header written; the payload goes at offset 12. */
  static message(request: number, flags: number, size: number): Buffer {
    const buf = Buffer.allocUnsafe(VHOST_USER_HDR_SIZE + size);
    writeHeader(buf, 0, request, flags, size);
    return buf;
  }

  /** A protocol violation by the peer: log it, stop reading, close (docs/protocol.md §7). */
  fatal(err: VsvaError): void {
    if (this.ended) return;
    this.log.warn({ code: err.code, peer: this.transport.label }, `closing connection: ${err.message}`);
    this.finish(err);
  }

  /** Close cleanly (flushing what was written). */
  close(): void {
    this.finish(null);
  }

  private finish(reason: VsvaError | null): void {
    if (this.ended) return;
    this.ended = true;
    this.reason = reason;
    this.framer.stop();
    if (this.fdQueue.length > 0) this.dropFds('the connection closed');
    this.transport.close();
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const fn of listeners) {
      try {
        fn(reason);
      } catch (e) {
        this.log.error({ err: e }, 'close listener threw');
      }
    }
  }
}
