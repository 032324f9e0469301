/**
 * The receive side shared by the socket transports (vhost/transport/sink-delivery.ts): chunks
 * before start() wait in order, the close callback runs once and after them, with the first error.
 */
import { describe, it, expect } from 'vitest';
import { SinkDelivery } from '../../../vhost/transport/sink-delivery.js';

function recorder(): { log: unknown[][]; sink: { data(c: Buffer, fds?: number[]): void; close(err?: Error): void } } {
  const log: unknown[][] = [];
  return {
    log,
    sink: {
      data: (...args: [Buffer, number[]?]) => log.push(['data', ...args.map((a) => (Buffer.isBuffer(a) ? a.toString() : a))]),
      close: (...args: [Error?]) => log.push(['close', ...args.map((e) => e?.message)]),
    },
  };
}

describe('SinkDelivery', () => {
  it('delivers early chunks in order at start(), then later ones directly; fds only where a chunk had them', () => {
    const d = new SinkDelivery();
    d.data(Buffer.from('a'));
    d.data(Buffer.from('b'), [7]);
    const r = recorder();
    d.start(r.sink);
    d.data(Buffer.from('c'));
    expect(r.log).toEqual([['data', 'a'], ['data', 'b', [7]], ['data', 'c']]);
  });

  it('an end before start() is delivered at start(), after the early chunks, once, with the first error', () => {
    const d = new SinkDelivery();
    d.data(Buffer.from('a'));
    d.noteError(new Error('first'));
    d.noteError(new Error('second'));
    d.end();
    const r = recorder();
    d.start(r.sink);
    d.end();
    expect(r.log).toEqual([['data', 'a'], ['close', 'first']]);
  });

  it('releaseEarlyFds closes waiting descriptors; their chunks are still delivered, without them', () => {
    const d = new SinkDelivery();
    d.data(Buffer.from('a'), [5, 6]);
    d.data(Buffer.from('b'));
    const closed: number[] = [];
    d.releaseEarlyFds((fd) => closed.push(fd));
    const r = recorder();
    d.start(r.sink);
    expect(closed).toEqual([5, 6]);
    expect(r.log).toEqual([['data', 'a', []], ['data', 'b']]);
  });
});
