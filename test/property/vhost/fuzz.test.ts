import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { BackendDispatcher, createMemoryPair, ProtocolFeature, writeHeader, type HandlerTable } from '../../../vhost/index.js';
import { RawPeer } from '../../unit/vhost/raw-peer.js';

const handlers: HandlerTable<undefined> = {
  PASID_ALLOC: (r) => ({ pasid: r.min }),
  DMA_UNMAP: async (r) => ({ unmapped: r.size }),
  DEVICE_DMA: (r) => ({ status: 0, reason: 0, flags: 0, pasid: 0, fault_addr: 0n, ...(r.op === 0 ? { data: new Uint8Array(r.length) } : {}) }),
  CACHE_INVALIDATE: (r) => ({ handled: r.entries.length, first_error: 0 }),
};

function frame(request: number, flags: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  writeHeader(b, 0, request, flags, payload.length);
  b.set(payload, 12);
  return b;
}

const codes = [1, 2, 3, 5, 15, 16, ...Array.from({ length: 0x11 }, (_, i) => 0x100 + i), 0x1f0, 0x1234];
// Mostly well-framed messages with arbitrary payloads (to reach the validators), plus raw noise.
const chunkArb = fc.oneof(
  { weight: 4, arbitrary: fc.record({ code: fc.constantFrom(...codes), flags: fc.constantFrom(1, 9, 9, 9, 5, 0x19, 2), payload: fc.uint8Array({ maxLength: 80 }) }).map((m) => frame(m.code, m.flags, m.payload)) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((u) => Buffer.from(u)) },
);

describe('fuzz: arbitrary bytes into the back-end dispatcher', () => {
  it('never throws out of it; the connection is either still usable or cleanly closed with EPROTO/E2BIG', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(chunkArb, { maxLength: 25 }), fc.boolean(), async (chunks, negotiate) => {
        const [a, b] = createMemoryPair('fuzz');
        const be = new BackendDispatcher(b, { handlers });
        const peer = new RawPeer(a);
        const all = ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA | ProtocolFeature.VSVA_DEVICE_DMA;
        if (negotiate) {
          const p = Buffer.alloc(8);
          p.writeBigUInt64LE(all);
          a.write(frame(16, 9, p));
        }
        for (const c of chunks) a.write(c);
        await peer.settle();
        if (be.closed) {
          expect(['EPROTO', 'E2BIG']).toContain(be.conn.reason?.code);
          expect(peer.closed).toBe(true);
        } else {
          // Still usable: a fresh GET_FEATURES gets its reply (after whatever is owed before it,
          // unless garbage left a partial message in the framer).
          const before = peer.received.length;
          const partial = be.conn.framer.pendingBytes > 0;
          a.write(frame(1, 1, new Uint8Array(0)));
          await peer.settle();
          if (!partial && !be.closed) {
            expect(peer.received.length).toBeGreaterThan(before);
            expect(peer.received.at(-1)!.request).toBe(1);
          }
        }
        for (const m of peer.received) expect(m.flags).toBe(5);
        a.close();
      }),
      { numRuns: 300 },
    );
  });
});
