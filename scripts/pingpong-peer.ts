/**
 * The far end of the protocol benchmark (src/app/bench/protocol.ts), run as a separate process:
 *
 *   node --import tsx scripts/pingpong-peer.ts raw   <socket> <reqBytes> <repBytes>
 *       raw Node ping-pong: for every reqBytes received, write repBytes back
 *   node --import tsx scripts/pingpong-peer.ts raw-native <socket> <reqBytes> <repBytes>
 *       the same, read by the native reader and answered with sendmsg (needs the addon)
 *   node --import tsx scripts/pingpong-peer.ts vhost <socket>
 *       the protocol back-end (BackendServer) answering PASID_ALLOC with { pasid: min }
 *
 * Prints "ready" once listening; exits when stdin closes.
 */
import net from 'node:net';
import fs from 'node:fs';
import { BackendServer } from '../vhost/index.js';
import { sendFds, socketFd, startReader } from '../src/native/native.js';

const [mode, path, reqArg, repArg] = process.argv.slice(2);
if (!path) throw new Error('usage: pingpong-peer.ts raw|raw-native|vhost <socket> [reqBytes repBytes]');
try {
  fs.unlinkSync(path);
} catch {
  // no stale socket
}

let close: () => Promise<void>;
if (mode === 'raw-native') {
  // As 'raw', but each connection is read by the native reader and answered with sendmsg
  // (src/native/native.ts), the way the vsva host's accepted connections are
  // (vhost/transport/native-unix.ts): the baseline with the host's transport.
  const req = Number(reqArg ?? 20);
  const rep = Number(repArg ?? 28);
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    const fd = socketFd(socket);
    let pending = 0;
    // A final read (EOF, error) stops the reader itself; then the socket goes.
    startReader(fd, (chunk) => {
      if (chunk === null) {
        socket.destroy();
        return;
      }
      pending += chunk.length;
      const n = Math.floor(pending / req);
      if (n === 0) return;
      pending -= n * req;
      sendFds(fd, Buffer.alloc(n * rep), [], 0);
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  close = () => new Promise((resolve) => server.close(() => resolve()));
} else if (mode === 'raw') {
  const req = Number(reqArg ?? 20);
  const rep = Number(repArg ?? 28);
  const server = net.createServer((socket) => {
    let pending = 0;
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.length;
      const n = Math.floor(pending / req);
      if (n === 0) return;
      pending -= n * req;
      socket.write(Buffer.alloc(n * rep));
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  close = () => new Promise((resolve) => server.close(() => resolve()));
} else if (mode === 'vhost') {
  const server = new BackendServer({ handlers: () => ({ PASID_ALLOC: (r) => ({ pasid: r.min }) }) });
  await server.listen(path);
  close = () => server.close();
} else {
  throw new Error(`unknown mode '${mode}'`);
}
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.on('end', () => {
  void close().then(() => process.exit(0));
});
