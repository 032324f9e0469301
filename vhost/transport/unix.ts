/**
 * Unix-socket transport: a net.Socket behind the Transport interface, plus a listener and a
 * connect helper. Writes issued in the same tick are corked and leave in one writev (pipelined
 * requests and in-order reply bursts cost one system call, not one each).
 */
import net from 'node:net';
import fs from 'node:fs';
import { VsvaError } from '../../src/errors.js';
import type { Transport, TransportSink } from './transport.js';

export class UnixTransport implements Transport {
  private sink: TransportSink | null = null;
  private early: Buffer[] = [];
  private corked = false;
  private inTick = false;
  private ended = false;
  private closeErr: Error | undefined;
  private closeDelivered = false;
  private socketClosed = false;

  constructor(
    readonly socket: net.Socket,
    readonly label: string,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.sink) this.sink.data(chunk);
      else this.early.push(chunk);
    });
    socket.on('error', (err) => {
      this.closeErr ??= err;
    });
    socket.on('close', () => {
      this.socketClosed = true;
      this.ended = true;
      this.deliverClose();
    });
  }

  get closed(): boolean {
    return this.ended;
  }

  start(sink: TransportSink): void {
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const c of early) sink.data(c);
    if (this.socketClosed) this.deliverClose();
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
  write(data: Uint8Array): void {
    if (this.ended) return;
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

  private deliverClose(): void {
    if (this.closeDelivered || !this.sink) return;
    this.closeDelivered = true;
    this.sink.close(this.closeErr);
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

/**
 * Listen on a Unix socket path (a stale socket file at the path is removed first) and hand each
 * accepted connection to `onConnection`.
 */
export async function listenUnix(path: string, onConnection: (t: UnixTransport) => void): Promise<UnixListener> {
  try {
    if (fs.statSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    // no such file
  }
  const server = net.createServer((socket) => onConnection(new UnixTransport(socket, path)));
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
