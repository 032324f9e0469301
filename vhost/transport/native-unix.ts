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

  /** The first write of a tick leaves at once; later ones in the same tick leave together on nextTick. */
  write(data: Uint8Array, fds: readonly number[] = []): void {
    if (this.ending || this.finished) return;
    if (fds.length > 0) {
      this.flushCorked();
      this.send({ data, fds });
      return;
    }
    if (this.inTick) {
      this.corked.push(data);
      return;
    }
    this.inTick = true;
    process.nextTick(endTick, this);
    this.send({ data, fds });
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
    this.corked = [];
    this.send({ data: c.length === 1 ? c[0]! : Buffer.concat(c), fds: [] });
  }

  private send(p: Pending): void {
    if (this.queue.length > 0) {
      this.queue.push(p);
      return;
    }
    const rest = this.trySend(p);
    if (rest !== null) {
      this.queue.push(rest);
      this.armRetry();
    }
  }

  /** One non-blocking sendmsg of `p`: null when all left, else what is still to send. */
  private trySend(p: Pending): Pending | null {
    try {
      sendFds(this.fd, p.data, p.fds, 0);
      return null;
    } catch (e) {
      if (isNativeError(e, 'ETIMEDOUT') || isNativeError(e, 'EAGAIN')) {
        const sent = (e as { bytesSent?: number }).bytesSent ?? 0;
        return { data: p.data.subarray(sent), fds: sent > 0 ? [] : p.fds };
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
      const rest = this.trySend(this.queue[0]!);
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
    this.delivery.data(data, fds);
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
