/**
 * A connected Unix stream socket pair for native reader tests: the accepted end is taken with
 * pauseOnConnect so libuv never watches its fd (a native reader may), the client end is an
 * ordinary net.Socket. Both fds stay owned by their net.Socket: stop any reader, then close().
 */
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { isNativeError, socketFd } from '../../../../src/native/native.js';

export interface SocketPair {
  /** Accepted end: never read by libuv. */
  readonly server: net.Socket;
  readonly client: net.Socket;
  readonly serverFd: number;
  readonly clientFd: number;
  /** Destroys both sockets and resolves when libuv has closed them. */
  close(): Promise<void>;
}

/** pauseClient: keep libuv from reading the client end too (it then never drains its queue). */
export async function socketPair(opts: { pauseClient?: boolean } = {}): Promise<SocketPair> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-native-'));
  const listener = net.createServer({ pauseOnConnect: true });
  try {
    listener.listen(path.join(dir, 'pair.sock'));
    await once(listener, 'listening');
    const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
    const client = net.connect(path.join(dir, 'pair.sock'));
    if (opts.pauseClient) client.pause();
    client.on('error', () => { /* resets are what some tests provoke */ });
    await once(client, 'connect');
    const [server] = await accepted;
    server.on('error', () => { /* idem */ });
    return {
      server,
      client,
      serverFd: socketFd(server),
      clientFd: socketFd(client),
      async close() {
        const closed = [server, client].filter(s => !s.closed).map(s => once(s, 'close'));
        server.destroy();
        client.destroy();
        await Promise.all(closed);
      },
    };
  } finally {
    listener.close(); // closes the listening fd now; 'close' would wait for the accepted end
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Number of open descriptors of this process. */
export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** The errno name a native call throws with, or undefined when it does not throw. */
export function errnoCodeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (isNativeError(e)) return e.code;
    throw e;
  }
  return undefined;
}
