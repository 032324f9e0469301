/**
 * Unix-socket transport: a net.Socket behind the Transport interface, plus a listener and a
 * connect helper. Writes issued in the same tick are corked and leave in one writev (pipelined
 * requests and in-order reply bursts cost one system call, not one each).
 *
 * libuv reads this socket, so received descriptors are not seen (the kernel closes them). With
 * the native addon a write may carry descriptors (sendFds on the socket's fd, allowed only while
 * libuv has nothing queued: src/native/native.ts). The listener hands connections to the native
 * reader (native-unix.ts) when asked and the addon is available.
 */
import net from 'node:net';
import fs from 'node:fs';
import { VsvaError, fail } from '../../src/errors.js';
import { nativeAvailable, sendFds, socketFd, warnNativeUnavailable } from '../../src/native/native.js';
import { childLogger } from '../../src/log.js';
import { NativeUnixTransport } from './native-unix.js';
import type { Transport, TransportSink } from './transport.js';
import { SinkDelivery } from './sink-delivery.js';

export class UnixTransport implements Transport {
  private corked = false;
  private inTick = false;
  private ended = false;
  private readonly delivery = new SinkDelivery();
  /** Writes may carry descriptors when the native addon is loaded. */
  readonly carriesFds = nativeAvailable();

  constructor(
    readonly socket: net.Socket,
    readonly label: string,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.delivery.data(chunk);
    });
    socket.on('error', (err) => {
      this.delivery.noteError(err);
    });
    socket.on('close', () => {
      this.ended = true;
      this.delivery.end();
    });
  }

  get closed(): boolean {
    return this.ended;
  }

  start(sink: TransportSink): void {
    this.delivery.start(sink);
  }

  setReading(on: boolean): void {
    if (this.ended) return;
    if (on) this.socket.resume();
    else this.socket.pause();
  }

  /**
   * The first write of a tick goes out at once (lowest latency for a lone request or reply);
   * further writes in the same tick are corked and leave together in one writev on nextTick.
   * The end-of-tick callback is scheduled after the first write has gone out, not before.
   */
  write(data: Uint8Array, fds?: readonly number[]): void {
    if (this.ended) return;
    if (fds !== undefined && fds.length > 0) {
      this.writeFds(data, fds);
      return;
    }
    if (this.inTick) {
      if (!this.corked) {
        this.corked = true;
        this.socket.cork();
      }
      this.socket.write(data);
      return;
    }
    this.inTick = true;
    try {
      this.socket.write(data);
    } finally {
      process.nextTick(uncork, this);
    }
  }

  /**
   * sendmsg with SCM_RIGHTS on the socket's fd, after what libuv holds has left: throws EAGAIN
   * when libuv still has queued bytes (a descriptor-carrying frame is sent on an idle
   * connection: SET_MEM_TABLE during bring-up), EOPNOTSUPP without the addon.
   */
  private writeFds(data: Uint8Array, fds: readonly number[]): void {
    if (!this.carriesFds) fail('EOPNOTSUPP', `${this.label}: passing file descriptors needs the native addon`);
    if (this.corked) {
      this.corked = false;
      this.socket.uncork();
    }
    if (this.socket.writableLength > 0) fail('EAGAIN', `${this.label}: ${this.socket.writableLength} bytes still queued; descriptors are sent on an idle connection`);
    sendFds(socketFd(this.socket), data, fds);
  }

  close(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.corked) {
      this.corked = false;
      this.socket.uncork();
    }
    this.socket.end();
    // Do not wait for a peer that never ends its side.
    const timer = setTimeout(() => this.socket.destroy(), 1000);
    timer.unref();
    this.socket.once('close', () => clearTimeout(timer));
  }

  /** @internal */
  flushCork(): void {
    this.inTick = false;
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }
}

function uncork(t: UnixTransport): void {
  t.flushCork();
}

/** Connect to a Unix socket path. */
export function connectUnix(path: string): Promise<UnixTransport> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path });
    const onError = (err: Error): void => {
      reject(new VsvaError('ENOTCONN', `cannot connect to ${path}: ${err.message}`));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(new UnixTransport(socket, path));
    });
  });
}

export interface UnixListener {
  readonly path: string;
  close(): Promise<void>;
}

export interface ListenOptions {
  /**
   * Read accepted connections with the native reader, so that they receive descriptors (default
   * true). Without the addon the listener logs one warning and libuv reads them: descriptors sent
   * by a peer are then dropped by the kernel.
   */
  receiveFds?: boolean;
}

/**
 * Listen on a Unix socket path (a stale socket file at the path is removed first) and hand each
 * accepted connection to `onConnection`.
 */
export async function listenUnix(path: string, onConnection: (t: Transport) => void, opts: ListenOptions = {}): Promise<UnixListener> {
  try {
    if (fs.statSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    // no such file
  }
  const native = (opts.receiveFds ?? true) && nativeAvailable();
  if ((opts.receiveFds ?? true) && !native) warnNativeUnavailable();
  const server = net.createServer({ pauseOnConnect: native }, (socket) => {
    if (!native) {
      onConnection(new UnixTransport(socket, path));
      return;
    }
    let t: Transport;
    try {
      t = new NativeUnixTransport(socket, path);
    } catch (e) {
      childLogger('vhost-unix').warn({ err: e }, 'native reader failed to start on an accepted connection: libuv reads it');
      socket.resume();
      t = new UnixTransport(socket, path);
    }
    onConnection(t);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        try {
          fs.unlinkSync(path);
        } catch {
          // already gone
        }
      }),
  };
}
