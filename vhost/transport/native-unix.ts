/**
 * A Unix-socket transport read and written by the native addon (src/native/native.ts), so that
 * file descriptors travel with the bytes as SCM_RIGHTS (unix(7)) — what SET_MEM_TABLE's fd form
 * needs (docs/protocol.md). The back-end uses it for every accepted connection when the addon is
 * available.
 *
 * Rules of the addon this class keeps (src/native/native.ts header):
 * - the socket was accepted with pauseOnConnect and libuv never reads it: one watcher per fd,
 *   the native reader's — or libuv's write watcher while the reader is stopped (below);
 * - writes go through sendFds, non-blocking (timeout 0), while the reader runs. The reader
 *   watches readability only, so nothing tells it when a full socket has room again. Bytes
 *   without descriptors that the socket did not take (a reply larger than the socket buffer:
 *   a GET_STATE page of hundreds of KiB) are handed to libuv instead: the reader stops,
 *   socket.write queues them — libuv waits for POLLOUT and writes as the peer reads, as
 *   UnixTransport does — and once libuv's queue is empty (after libuv stopped watching the
 *   fd) the reader starts again. Later writes follow in order: bytes through libuv, frames
 *   with descriptors after its queue drained. Requests of the peer meanwhile wait in the
 *   socket (it has a reply to read first). A frame with descriptors that the socket did not
 *   take waits in a queue retried at the next turn of the loop while tries move bytes and on
 *   a timer backing off from 1 to 20 ms while they move nothing (no busy loop);
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
/** First and longest wait before retrying a write to a full socket that took nothing (ms). */
const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 20;
const CLOSE_WAIT_MS = 1000;

export class NativeUnixTransport implements Transport {
  readonly carriesFds = true;
  private readonly fd: number;
  private readonly delivery = new SinkDelivery();
  private reader: ReaderHandle | null = null;
  /** The owner's choice (setReading); the reader also stops while libuv holds our bytes. */
  private readerWanted = true;
  /** libuv holds bytes of ours (socket.write): the reader is stopped until they left. */
  private handedOff = false;
  /** A check that libuv's queue drained is scheduled. */
  private drainCheck = false;
  private queue: Pending[] = [];
  private corked: Uint8Array[] = [];
  private inTick = false;
  /** A read is being delivered: writes are corked until it returns (see write). */
  private inRead = false;
  private retryTimer: NodeJS.Timeout | null = null;
  /** A retry at the next turn of the loop (the last try moved bytes). */
  private retryImmediate: NodeJS.Immediate | null = null;
  private retryMs = RETRY_MIN_MS;
  private ending = false;
  /** socket.end() was called (shutdown). */
  private shutting = false;
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
    this.readerWanted = on;
    this.applyReading();
  }

  /** Run the reader when the owner wants it and libuv holds none of our bytes; else stop it. */
  private applyReading(): void {
    if (this.finished) return;
    const on = this.readerWanted && !this.handedOff;
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

  /** Bytes written and not yet taken by the kernel (queued here or in libuv, or corked this tick). */
  get pendingWriteBytes(): number {
    let n = this.handedOff ? this.socket.writableLength : 0;
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
    if (this.queue.length === 0) this.shutdown(); // socket.end() follows what libuv holds
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
    if (this.queue.length > 0 || this.handedOff) {
      this.queue.push(p); // after libuv's queue (libuvDrained) or the queue's head
      return;
    }
    const rest = this.trySend(p.data, p.fds);
    if (rest !== null) this.leftOver(rest, p.data.byteLength);
  }

  /** send() of bytes without descriptors, with no Pending record unless the socket is full. */
  private sendBytes(data: Uint8Array): void {
    if (this.queue.length > 0) {
      this.queue.push({ data, fds: NO_FDS });
      return;
    }
    if (this.handedOff) {
      this.socket.write(data, this.afterLibuvWrite);
      return;
    }
    const rest = this.trySend(data, NO_FDS);
    if (rest !== null) this.leftOver(rest, data.byteLength);
  }

  /** What a try left (of `tried` bytes): to libuv when it carries no descriptors, else queued. */
  private leftOver(rest: Pending, tried: number): void {
    if (rest.fds.length === 0) {
      this.handOff(rest.data);
      return;
    }
    this.queue.push(rest);
    this.armRetry(rest.data.byteLength < tried);
  }

  /** Stop the reader and let libuv write `data` (see the header). The queue here is empty. */
  private handOff(data: Uint8Array): void {
    this.handedOff = true;
    this.applyReading();
    this.socket.write(data, this.afterLibuvWrite);
  }

  /**
   * A socket.write finished. libuv stops watching the fd only after its write callbacks ran
   * (uv__drain), so the reader starts again at the next turn of the loop.
   */
  private readonly afterLibuvWrite = (err?: Error | null): void => {
    if (this.finished) return;
    if (err) {
      this.delivery.noteError(err);
      this.finish();
      return;
    }
    if (this.socket.writableLength > 0 || this.drainCheck) return;
    this.drainCheck = true;
    setImmediate(libuvDrainedLater, this);
  };

  /** @internal libuv's queue may be empty: send what waits here, then read again. */
  libuvDrained(): void {
    this.drainCheck = false;
    if (this.finished || !this.handedOff || this.socket.writableLength > 0) return;
    this.handedOff = false;
    this.drain(); // frames with descriptors queued meanwhile, and what followed them
    if (this.handedOff) return;
    if (!this.ending) {
      this.applyReading();
      return;
    }
    // Closing: libuv watches the fd until it has shut our direction (socket.end in shutdown);
    // then the reader waits for the peer's EOF.
    if (this.socket.writableFinished) setImmediate(readAgainLater, this);
    else this.socket.once('finish', () => setImmediate(readAgainLater, this));
  }

  /** @internal */
  readAgain(): void {
    this.applyReading();
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

  /**
   * Schedule the next try of the queue: at the next turn of the loop when the last try moved
   * bytes (the backoff starts again), else after the backoff, which doubles up to RETRY_MAX_MS.
   */
  private armRetry(moved: boolean): void {
    if (this.retryTimer !== null || this.retryImmediate !== null || this.finished) return;
    if (moved) {
      this.retryMs = RETRY_MIN_MS;
      this.retryImmediate = setImmediate(drainLater, this);
      return;
    }
    this.retryTimer = setTimeout(drainLater, this.retryMs, this);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  /** @internal */
  drain(): void {
    this.retryTimer = null;
    this.retryImmediate = null;
    let moved = false;
    while (this.queue.length > 0 && !this.finished) {
      const head = this.queue[0]!;
      const rest = this.trySend(head.data, head.fds);
      if (rest !== null && rest.fds.length === 0) {
        this.queue.shift(); // the rest of the queue follows once libuv's queue drained
        this.handOff(rest.data);
        return;
      }
      if (rest !== null) {
        this.queue[0] = rest;
        this.armRetry(moved || rest.data.byteLength < head.data.byteLength);
        return;
      }
      moved = true;
      this.queue.shift();
    }
    this.retryMs = RETRY_MIN_MS;
    if (this.ending && !this.finished) this.shutdown();
  }

  /** Shut our sending direction; the peer's EOF (or the timer) finishes the close. */
  private shutdown(): void {
    if (this.shutting) return;
    this.shutting = true;
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
    if (this.retryImmediate !== null) clearImmediate(this.retryImmediate);
    this.retryTimer = null;
    this.retryImmediate = null;
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

function drainLater(t: NativeUnixTransport): void {
  t.drain();
}

function libuvDrainedLater(t: NativeUnixTransport): void {
  t.libuvDrained();
}

function readAgainLater(t: NativeUnixTransport): void {
  t.readAgain();
}
