import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { Framer, VHOST_USER_HDR_SIZE, writeHeader, MAX_REQUEST_PAYLOAD } from '../../../vhost/index.js';

const messageArb = fc.record({
  request: fc.integer({ min: 0, max: 0xffff_ffff }),
  flags: fc.constantFrom(1, 5, 9),
  payload: fc.uint8Array({ minLength: 0, maxLength: 200 }),
});

function serialize(msgs: { request: number; flags: number; payload: Uint8Array }[]): Buffer {
  const parts = msgs.map((m) => {
    const b = Buffer.alloc(VHOST_USER_HDR_SIZE + m.payload.length);
    writeHeader(b, 0, m.request, m.flags, m.payload.length);
    b.set(m.payload, VHOST_USER_HDR_SIZE);
    return b;
  });
  return Buffer.concat(parts);
}

describe('framer', () => {
  it('yields the same messages however the stream is chunked', () => {
    fc.assert(
      fc.property(fc.array(messageArb, { maxLength: 30 }), fc.array(fc.integer({ min: 0, max: 1 << 16 }), { maxLength: 40 }), (msgs, cuts) => {
        const stream = serialize(msgs);
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const framer = new Framer(MAX_REQUEST_PAYLOAD);
        const out: { request: number; flags: number; payload: Uint8Array }[] = [];
        let prev = 0;
        for (const p of [...points, stream.length]) {
          // Copy each chunk so that views into a previous chunk cannot alias the next one.
          framer.push(Buffer.from(stream.subarray(prev, p)), (request, flags, payload) => {
            out.push({ request, flags, payload: new Uint8Array(payload) });
          });
          prev = p;
        }
        expect(out).toEqual(msgs.map((m) => ({ ...m, payload: new Uint8Array(m.payload) })));
        expect(framer.pendingBytes).toBe(0);
      }),
      { numRuns: 200 },
    );
  });

  it('delivers byte-at-a-time streams and detects an oversized header before its payload arrives', () => {
    const framer = new Framer(16);
    const seen: number[] = [];
    const ok = serialize([{ request: 7, flags: 1, payload: new Uint8Array(16) }]);
    for (const byte of ok) framer.push(Buffer.from([byte]), (r) => seen.push(r));
    expect(seen).toEqual([7]);
    const big = Buffer.alloc(12);
    writeHeader(big, 0, 8, 1, 17);
    expect(() => framer.push(big, () => {})).toThrow(/E2BIG/);
    // Broken for good: later bytes are refused with the same error.
    expect(() => framer.push(ok, () => {})).toThrow(/E2BIG/);
  });
});
