/**
 * The far end of the protocol benchmark (src/app/bench/protocol.ts), run as a separate process:
 *
 *   node --import tsx scripts/pingpong-peer.ts raw   <socket> <reqBytes> <repBytes>
 *       raw Node ping-pong: for every reqBytes received, write repBytes back
 *   node --import tsx scripts/pingpong-peer.ts vhost <socket>
 *       the protocol back-end (BackendServer) answering PASID_ALLOC with { pasid: min }
 *
 * Prints "ready" once listening; exits when stdin closes.
 */
import net from 'node:net';
import fs from 'node:fs';
import { BackendServer } from '../vhost/index.js';

const [mode, path, reqArg, repArg] = process.argv.slice(2);
if (!path) throw new Error('usage: pingpong-peer.ts raw|vhost <socket> [reqBytes repBytes]');
try {
  fs.unlinkSync(path);
} catch {
  // no stale socket
}

let close: () => Promise<void>;
if (mode === 'raw') {
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
