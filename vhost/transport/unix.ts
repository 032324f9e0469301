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
import { VsvaError, fail } from '../../src/errors.js';
import { nativeAvailable, peerCredentials, sendFds, socketFd, warnNativeUnavailable } from '../../src/native/native.js';
import { childLogger } from '../../src/log.js';
import { NativeUnixTransport } from './native-unix.js';
import type { Transport, TransportSink } from './transport.js';
import { SinkDelivery } from './sink-delivery.js';
import { bindSocketFile, releaseSocketFile } from './socket-file.js';

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

  /** Bytes written and not yet handed to the kernel. */
  get pendingWriteBytes(): number {
    return this.socket.writableLength;
  }

  /** End at once, dropping what is queued (a peer that does not read its replies). */
  abort(): void {
    this.ended = true;
    this.socket.destroy();
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
  /** Give the socket file this group and mode 0660 (default: mode 0600). */
  gid?: number;
}

/**
 * Who is on the other end of an accepted connection (SO_PEERCRED, unix(7)). Without the native
 * addon the peer cannot be asked: `uid` is this process's own and `verified` false.
 */
export interface PeerIdentity {
  uid: number;
  pid: number | null;
  verified: boolean;
}

/** This process as a peer: in-process connections, and Unix ones without the native addon. */
export function ownIdentity(): PeerIdentity {
  return { uid: typeof process.getuid === 'function' ? process.getuid() : 0, pid: process.pid, verified: false };
}

function peerOf(socket: net.Socket): PeerIdentity {
  if (!nativeAvailable()) return ownIdentity();
  try {
    const c = peerCredentials(socketFd(socket));
    return { uid: c.uid, pid: c.pid, verified: true };
  } catch {
    return ownIdentity();
  }
}

/**
 * Listen on a Unix socket path and hand each accepted connection, with its peer's identity, to
 * `onConnection`. The socket file follows socket-file.ts: EADDRINUSE when a live listener has the
 * path (a stale socket file is replaced), mode 0600 (0660 with `gid`), and close() unlinks the
 * path only while it is still this listener's socket.
 */
export async function listenUnix(path: string, onConnection: (t: Transport, peer: PeerIdentity) => void, opts: ListenOptions = {}): Promise<UnixListener> {
  const native = (opts.receiveFds ?? true) && nativeAvailable();
  if ((opts.receiveFds ?? true) && !native) warnNativeUnavailable();
  const server = net.createServer({ pauseOnConnect: native }, (socket) => {
    const peer = peerOf(socket);
    if (!native) {
      onConnection(new UnixTransport(socket, path), peer);
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
    onConnection(t, peer);
  });
  const own = await bindSocketFile(server, path, opts.gid === undefined ? {} : { gid: opts.gid });
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        releaseSocketFile(path, own);
      }),
  };
}
