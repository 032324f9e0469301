/**
 * NativeUnixTransport with writes larger than the socket buffer (vhost/transport/native-unix.ts):
 * what the kernel does not take is handed to libuv (the reader stops meanwhile) and leaves, in
 * order and byte for byte, as the peer reads; a peer that stops reading costs no busy loop; the
 * reader starts again once libuv's queue drained (unless the owner stopped reading), frames
 * with descriptors written meanwhile follow in order with their descriptors, and a close sends
 * everything before the end of the stream.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import { closeFd, fstat, loadError, memfdCreate, nativeAvailable, startReader, stopReader } from '../../../src/native/native.js';
import { NativeUnixTransport } from '../../../vhost/transport/native-unix.js';
import { socketPair } from '../src/native/socket-pair.js';
import { sleep, waitFor } from '../../support/wait.js';

/** Collects what the client end receives. */
function collector(client: net.Socket): { bytes: () => Buffer; count: () => number } {
  const chunks: Buffer[] = [];
  let n = 0;
  client.on('data', (c: Buffer) => {
    chunks.push(c);
    n += c.length;
  });
  return { bytes: () => Buffer.concat(chunks, n), count: () => n };
}

describe.skipIf(!nativeAvailable())(`native transport large writes${nativeAvailable() ? '' : ` (skipped: ${loadError})`}`, () => {
  it('delivers writes of several MiB byte-exact and in order, with small writes between them', async () => {
    const pair = await socketPair();
    const t = new NativeUnixTransport(pair.server, 'pair');
    try {
      t.start({ data: () => {}, close: () => {} });
      const got = collector(pair.client);
      const parts = [randomBytes(3 << 20), Buffer.from('between'), randomBytes(720 << 10), randomBytes(1), randomBytes(5 << 20)];
      for (const p of parts) t.write(p);
      const all = Buffer.concat(parts);
      await waitFor(() => got.count() >= all.length, { what: 'every byte at the peer', timeoutMs: 20_000 });
      expect(got.count()).toBe(all.length);
      expect(got.bytes().equals(all)).toBe(true);
      expect(t.pendingWriteBytes).toBe(0);
    } finally {
      t.abort(); // stops the reader before the fd is closed (its number may be reused next)
      await pair.close();
    }
  });

  it('waits without a busy loop while the peer does not read, and delivers everything once it does', async () => {
    const pair = await socketPair({ pauseClient: true });
    const t = new NativeUnixTransport(pair.server, 'pair');
    try {
      t.start({ data: () => {}, close: () => {} });
      const big = randomBytes(4 << 20);
      t.write(big);
      t.write(Buffer.from('tail'));
      expect(t.pendingWriteBytes).toBeGreaterThan(0); // the socket took part of it at most
      // While nobody reads, the queue is retried on a timer: this process stays mostly idle.
      const cpu0 = process.cpuUsage();
      const wall0 = performance.now();
      await sleep(300);
      const cpu = process.cpuUsage(cpu0);
      const wall = performance.now() - wall0;
      expect((cpu.user + cpu.system) / 1000).toBeLessThan(wall / 2);
      expect(t.pendingWriteBytes).toBeGreaterThan(0);
      const got = collector(pair.client);
      pair.client.resume();
      const all = Buffer.concat([big, Buffer.from('tail')]);
      await waitFor(() => got.count() >= all.length, { what: 'every byte after the peer resumed', timeoutMs: 20_000 });
      expect(got.bytes().equals(all)).toBe(true);
      expect(t.pendingWriteBytes).toBe(0);
    } finally {
      t.abort();
      await pair.close();
    }
  });

  it('keeps every byte in order whatever the write sizes and however the peer pauses (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 100_000, max: 1_500_000 })), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 1, maxLength: 4 }),
        async (sizes, pauses) => {
          const pair = await socketPair();
          const t = new NativeUnixTransport(pair.server, 'pair');
          try {
            t.start({ data: () => {}, close: () => {} });
            const got = collector(pair.client);
            const parts = sizes.map((n) => randomBytes(n));
            const all = Buffer.concat(parts);
            // Half the writes in one tick (corked together), the rest one per turn.
            const half = Math.ceil(parts.length / 2);
            for (const p of parts.slice(0, half)) t.write(p);
            for (const p of parts.slice(half)) {
              await new Promise((r) => setImmediate(r));
              t.write(p);
            }
            for (const ms of pauses) {
              pair.client.pause();
              await sleep(ms);
              pair.client.resume();
              await new Promise((r) => setImmediate(r));
            }
            await waitFor(() => got.count() >= all.length, { what: 'every byte', timeoutMs: 20_000 });
            expect(got.bytes().equals(all)).toBe(true);
          } finally {
            t.abort();
            await pair.close();
          }
        },
      ),
      { numRuns: 12 },
    );
  }, 120_000);

  it('reads again once libuv has written the large reply: what the peer sent meanwhile arrives', async () => {
    const pair = await socketPair({ pauseClient: true });
    const t = new NativeUnixTransport(pair.server, 'pair');
    try {
      const fromPeer: Buffer[] = [];
      t.start({ data: (c) => fromPeer.push(c), close: () => {} });
      const big = randomBytes(2 << 20);
      t.write(big);
      pair.client.write('request-after-the-reply');
      await sleep(50);
      const got = collector(pair.client);
      pair.client.resume();
      await waitFor(() => got.count() >= big.length, { what: 'the large reply', timeoutMs: 20_000 });
      expect(got.bytes().equals(big)).toBe(true);
      await waitFor(() => Buffer.concat(fromPeer).toString() === 'request-after-the-reply', { what: "the peer's request", timeoutMs: 5000 });
      pair.client.write('and-another');
      await waitFor(() => Buffer.concat(fromPeer).toString().endsWith('and-another'), { what: 'a later request', timeoutMs: 5000 });
    } finally {
      t.abort();
      await pair.close();
    }
  });

  it('stays stopped after a large reply when the owner stopped reading meanwhile, and reads when asked', async () => {
    const pair = await socketPair({ pauseClient: true });
    const t = new NativeUnixTransport(pair.server, 'pair');
    try {
      const fromPeer: Buffer[] = [];
      t.start({ data: (c) => fromPeer.push(c), close: () => {} });
      const big = randomBytes(2 << 20);
      t.write(big);
      t.setReading(false);
      const got = collector(pair.client);
      pair.client.resume();
      await waitFor(() => got.count() >= big.length && t.pendingWriteBytes === 0, { what: 'the large reply', timeoutMs: 20_000 });
      pair.client.write('held');
      await sleep(100);
      expect(fromPeer).toHaveLength(0);
      t.setReading(true);
      await waitFor(() => Buffer.concat(fromPeer).toString() === 'held', { what: 'the held request', timeoutMs: 5000 });
    } finally {
      t.abort();
      await pair.close();
    }
  });

  it('sends a frame with descriptors written behind a large reply after it, with its descriptors', async () => {
    const pair = await socketPair({ pauseClient: true });
    const t = new NativeUnixTransport(pair.server, 'pair');
    const memfd = memfdCreate('behind-the-reply', 8192);
    const reads: { data: Buffer; fds: number[] }[] = [];
    let reader: ReturnType<typeof startReader> | null = null;
    try {
      t.start({ data: () => {}, close: () => {} });
      const big = randomBytes(2 << 20);
      t.write(big);
      t.write(Buffer.from('with-fd'), [memfd]);
      t.write(Buffer.from('after'));
      reader = startReader(pair.clientFd, (data, fds) => {
        if (data !== null) reads.push({ data, fds });
      });
      const all = Buffer.concat([big, Buffer.from('with-fd'), Buffer.from('after')]);
      const count = () => reads.reduce((n, r) => n + r.data.length, 0);
      await waitFor(() => count() >= all.length, { what: 'every byte', timeoutMs: 20_000 });
      expect(Buffer.concat(reads.map((r) => r.data)).equals(all)).toBe(true);
      // The descriptor came with the read holding the frame's first byte (src/native/native.ts
      // ReadCallback), which follows every byte of the reply.
      let at = 0;
      const withFds = reads.flatMap((r) => {
        const here = r.fds.length > 0 ? [{ from: at, to: at + r.data.length, fds: r.fds }] : [];
        at += r.data.length;
        return here;
      });
      expect(withFds).toHaveLength(1);
      expect(withFds[0]!.from).toBeLessThanOrEqual(big.length);
      expect(withFds[0]!.to).toBeGreaterThan(big.length);
      expect(withFds[0]!.fds).toHaveLength(1);
      expect(fstat(withFds[0]!.fds[0]!).size).toBe(8192n);
      for (const r of reads) for (const fd of r.fds) closeFd(fd);
    } finally {
      if (reader !== null) stopReader(reader);
      closeFd(memfd);
      t.abort();
      await pair.close();
    }
  });

  it('on close during a large reply, sends all of it, then ends the stream', async () => {
    const pair = await socketPair({ pauseClient: true });
    const t = new NativeUnixTransport(pair.server, 'pair');
    try {
      let closed = false;
      t.start({ data: () => {}, close: () => { closed = true; } });
      const big = randomBytes(2 << 20);
      t.write(big);
      t.close();
      const got = collector(pair.client);
      let ended = false;
      pair.client.on('end', () => {
        ended = true;
        pair.client.end();
      });
      pair.client.resume();
      await waitFor(() => ended, { what: 'the end of the stream', timeoutMs: 20_000 });
      expect(got.bytes().equals(big)).toBe(true);
      await waitFor(() => closed, { what: 'the close callback', timeoutMs: 5000 });
    } finally {
      t.abort();
      await pair.close();
    }
  });
});
