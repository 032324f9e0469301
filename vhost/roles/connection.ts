/**
 * One framed connection: a transport, a framer with the receiver's payload limit, and a
 * swappable frame sink (a connection that starts as a main channel can become a backend channel
 * after BACKEND_ATTACH). Header errors and transport closes end it once, with a reason.
 */
import type { Logger } from '../../src/log.js';
import { VsvaError } from '../../src/errors.js';
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
  private readonly deliver: FrameSink = (request, flags, payload) => this.sink(request, flags, payload);

  constructor(
    readonly transport: Transport,
    maxPayload: number,
    readonly log: Logger,
  ) {
    this.framer = new Framer(maxPayload);
    this.sink = () => {};
    transport.start({
      data: (chunk) => {
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

  onClose(fn: CloseListener): void {
    if (this.ended) queueMicrotask(() => fn(this.reason));
    else this.closeListeners.push(fn);
  }

  /** Write one message (header + payload already laid out in `buf`). */
  write(buf: Buffer): void {
    if (!this.ended) this.transport.write(buf);
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
