/**
 * A guest process for the kill/reconnect test: sets up VM argv[3] on socket argv[2], allocates
 * and binds 4 PASIDs on its pf, prints one JSON line {ready, token, ram, pasids, roots}, then keeps
 * doing DMA until it is killed.
 */
import { TestGuest } from './client.js';

const [, , socket, name] = process.argv as [string, string, string, string];
const g = await TestGuest.start({ name, path: socket, quota: 8 });
const pasids: number[] = [];
const roots: number[] = [];
for (let i = 0; i < 4; i++) {
  const p = await g.alloc();
  const root = g.fl.newRoot();
  g.fl.map(root, 0x1000_0000n, 0x20_0000 + i * 0x1000);
  await g.bind(0x18, p, root, 200 + i);
  pasids.push(p);
  roots.push(root);
}
await g.fe.call('DEVICE_CONFIG', { rid: 0x18, flags: 3 });
process.stdout.write(JSON.stringify({ ready: true, token: Buffer.from(g.token).toString('hex'), ram: g.ram.path, size: g.ram.size, pasids, roots }) + '\n');
// Mid-workload: DMA in a loop (some of it faulting into page requests nobody answers).
let i = 0;
for (;;) {
  const p = pasids[i % 4]!;
  await g.write(0x18, 0x1000_0000n, new Uint8Array([i & 0xff]), p);
  if (i % 16 === 0) void g.read(0x18, 0x7000_0000n, 4, p).catch(() => {});
  i++;
}
