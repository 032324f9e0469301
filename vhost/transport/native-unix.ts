/**
 * A Unix-socket transport read and written by the native addon (src/native/native.ts), so that
 * file descriptors travel with the bytes as SCM_RIGHTS (unix(7)) — what SET_MEM_TABLE's fd form
 * needs (docs/protocol.md). The back-end uses it for every accepted connection when the addon is
 * available.
 *
 * Rules of the addon this class keeps (src/native/native.ts header):
 * - the socket was accepted with pauseOnConnect and libuv never reads it: one watcher per fd,
 *   the native reader's;
 * - every write goes through sendFds (never socket.write): non-blocking (timeout 0); when the
 *   socket is full, what is left waits in a queue retried on a short timer, in order;
 * - received fds belong to the sink (TransportSink.data closes what it does not keep); fds that
 *   arrive after the transport ended are closed here;
 * - close order: stopReader, then socket.destroy.
 *
 * A clean close flushes the queue, shuts the sending direction (the peer reads EOF), then waits
 * up to one second for the peer's EOF before destroying the socket.
 */
import type net from 'node:net';
import { VsvaError } from '../../src/errors.js';
import {
  closeFd, errnoCode, isNativeError, sendFds, socketFd, startReader, stopReader, type ReaderHandle,
} from '../../src/native/native.js';
import type { Transport, TransportSink } from './transport.js';
import { SinkDelivery } from './sink-delivery.js';

interface Pending {
  data: Uint8Array;
  fds: readonly number[];
}

const NO_FDS: readonly number[] = Object.freeze([]);
/** First and longest wait before retrying a write to a full socket (ms). */
const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 20;
const CLOSE_WAIT_MS = 1000;

export class NativeUnixTransport implements Transport {
  readonly carriesFds = true;
  private readonly fd: number;
  private readonly delivery = new SinkDelivery();
  private reader: ReaderHandle | null = null;
  private queue: Pending[] = [];
  private corked: Uint8Array[] = [];
  private inTick = false;
  /** A read is being delivered: writes are corked until it returns (see write). */
  private inRead = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MIN_MS;
  private ending = false;
  private ended = false;
  private finished = false;

  /** Starts reading at once: throws (EEXIST, …) when libuv already watches the socket. */
  constructor(
    readonly socket: net.Socket,
    readonly label: string,
  ) {
    this.fd = socketFd(socket);
    socket.on('error', (err) => {
      this.delivery.noteError(err);
    });
    this.reader = startReader(this.fd, this.onRead);
  }

  get closed(): boolean {
    return this.ended;
  }

  start(sink: TransportSink): void {
    this.delivery.start(sink);
  }

  setReading(on: boolean): void {
    if (this.finished) return;
    if (!on && this.reader !== null) {
      stopReader(this.reader);
      this.reader = null;
    } else if (on && this.reader === null) {
      try {
        this.reader = startReader(this.fd, this.onRead);
      } catch (e) {
        this.delivery.noteError(e as Error);
        this.finish();
      }
    }
  }

  /**
   * Writes made while a read is being delivered (replies of synchronous handlers) leave together
   * when the delivery returns, before any promise reaction runs. Otherwise the first write of a
   * tick leaves at once and later ones in the same tick leave together on nextTick.
   */
  write(data: Uint8Array, fds: readonly number[] = NO_FDS): void {
    if (this.ending || this.finished) return;
    if (fds.length > 0) {
      this.flushCorked();
      this.send({ data, fds });
      return;
    }
    if (this.inTick || this.inRead) {
      this.corked.push(data);
      return;
    }
    this.inTick = true;
    process.nextTick(endTick, this);
    this.sendBytes(data);
  }

  /** Bytes written and not yet taken by the kernel (queued for a full socket, or corked this tick). */
  get pendingWriteBytes(): number {
    let n = 0;
    for (const p of this.queue) n += p.data.byteLength;
    for (const c of this.corked) n += c.byteLength;
    return n;
  }

  /** End at once, dropping what is queued (a peer that does not read its replies). */
  abort(): void {
    this.finish();
  }

  close(): void {
    if (this.ending || this.finished) return;
    this.ending = true;
    this.ended = true;
    this.flushCorked();
    if (this.queue.length === 0) this.shutdown();
  }

  /** @internal */
  endTick(): void {
    this.inTick = false;
    this.flushCorked();
  }

  private flushCorked(): void {
    const c = this.corked;
    if (c.length === 0) return;
    const data = c.length === 1 ? c[0]! : Buffer.concat(c);
    c.length = 0;
    this.sendBytes(data);
  }

  private send(p: Pending): void {
    if (this.queue.length > 0) {
      this.queue.push(p);
      return;
    }
    const rest = this.trySend(p.data, p.fds);
    if (rest !== null) {
      this.queue.push(rest);
      this.armRetry();
    }
  }

  /** send() of bytes without descriptors, with no Pending record unless the socket is full. */
  private sendBytes(data: Uint8Array): void {
    if (this.queue.length > 0) {
      this.queue.push({ data, fds: NO_FDS });
      return;
    }
    const rest = this.trySend(data, NO_FDS);
    if (rest !== null) {
      this.queue.push(rest);
      this.armRetry();
    }
  }

  /** One non-blocking sendmsg: null when all left, else what is still to send. */
  private trySend(data: Uint8Array, fds: readonly number[]): Pending | null {
    try {
      sendFds(this.fd, data, fds, 0);
      return null;
    } catch (e) {
      if (isNativeError(e, 'ETIMEDOUT') || isNativeError(e, 'EAGAIN')) {
        const sent = (e as { bytesSent?: number }).bytesSent ?? 0;
        return { data: data.subarray(sent), fds: sent > 0 ? NO_FDS : fds };
      }
      this.delivery.noteError(e as Error);
      this.finish();
      return null;
    }
  }

  private armRetry(): void {
    if (this.retryTimer !== null || this.finished) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.drain();
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  private drain(): void {
    while (this.queue.length > 0 && !this.finished) {
      const head = this.queue[0]!;
      const rest = this.trySend(head.data, head.fds);
      if (rest !== null) {
        this.queue[0] = rest;
        this.armRetry();
        return;
      }
      this.queue.shift();
    }
    this.retryMs = RETRY_MIN_MS;
    if (this.ending && !this.finished) this.shutdown();
  }

  /** Shut our sending direction; the peer's EOF (or the timer) finishes the close. */
  private shutdown(): void {
    this.socket.end();
    const timer = setTimeout(() => this.finish(), CLOSE_WAIT_MS);
    timer.unref();
  }

  private readonly onRead = (data: Buffer | null, fds: number[], errno: number): void => {
    if (data === null) {
      if (errno !== 0) this.delivery.noteError(new VsvaError('ECONNRESET', `${this.label}: read failed (${errnoCode(errno)})`));
      this.reader = null; // a final read stops the reader itself
      this.finish();
      return;
    }
    if (this.finished || this.ending) {
      for (const fd of fds) closeFd(fd);
      return;
    }
    this.inRead = true;
    try {
      this.delivery.data(data, fds);
    } finally {
      this.inRead = false;
    }
    this.flushCorked();
  };

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.ended = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.queue = [];
    this.corked = [];
    if (this.reader !== null) stopReader(this.reader);
    this.reader = null;
    this.delivery.releaseEarlyFds(closeFd);
    this.socket.destroy();
    this.delivery.end();
  }
}

function endTick(t: NativeUnixTransport): void {
  t.endTick();
}
