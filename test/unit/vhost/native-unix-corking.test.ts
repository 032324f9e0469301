/**
 * NativeUnixTransport's write batching (vhost/transport/native-unix.ts): replies written while a
 * read is being delivered (synchronous handlers) leave together when the delivery returns, before
 * any promise reaction runs; a write outside a delivery leaves at once. Order is kept either way.
 */
import { describe, expect, it } from 'vitest';
import type net from 'node:net';
import { loadError, nativeAvailable } from '../../../src/native/native.js';
import { NativeUnixTransport } from '../../../vhost/transport/native-unix.js';
import { socketPair } from '../src/native/socket-pair.js';
import { withDeadline } from '../../support/wait.js';

/** Resolves with the client's bytes once `n` have arrived. */
function received(client: net.Socket, n: number): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    client.on('data', (c: Buffer) => {
      got += c.toString();
      if (got.length >= n) resolve(got);
    });
  });
}

describe.skipIf(!nativeAvailable())(`native transport write batching${nativeAvailable() ? '' : ` (skipped: ${loadError})`}`, () => {
  it('holds writes made during a delivery until it returns, then sends them in order before any microtask', async () => {
    const pair = await socketPair();
    const t = new NativeUnixTransport(pair.server, 'pair');
    const seen: { during: number; microtask: number | null } = { during: -1, microtask: null };
    try {
      const all = received(pair.client, 5);
      t.start({
        data: () => {
          t.write(Buffer.from('A'));
          t.write(Buffer.from('B'));
          t.write(Buffer.from('C'));
          seen.during = t.pendingWriteBytes;
          queueMicrotask(() => {
            seen.microtask = t.pendingWriteBytes;
            t.write(Buffer.from('D'));
            t.write(Buffer.from('E'));
          });
        },
        close: () => {},
      });
      pair.client.write('x');
      expect(await withDeadline(all, { what: 'the five replies', timeoutMs: 5000 })).toBe('ABCDE');
      expect(seen.during).toBe(3); // corked while the read was delivered
      expect(seen.microtask).toBe(0); // gone before the first promise reaction
    } finally {
      t.abort(); // stops the reader before the fd is closed (its number may be reused next)
      await pair.close();
    }
  });

  it('sends a write made outside a delivery at once', async () => {
    const pair = await socketPair();
    const t = new NativeUnixTransport(pair.server, 'pair');
    try {
      t.start({ data: () => {}, close: () => {} });
      const got = received(pair.client, 2);
      await new Promise((r) => setImmediate(r));
      t.write(Buffer.from('1'));
      expect(t.pendingWriteBytes).toBe(0);
      t.write(Buffer.from('2')); // same tick: corked until the tick ends
      expect(t.pendingWriteBytes).toBe(1);
      expect(await withDeadline(got, { what: 'both bytes', timeoutMs: 5000 })).toBe('12');
    } finally {
      t.abort(); // stops the reader before the fd is closed (its number may be reused next)
      await pair.close();
    }
  });
});
