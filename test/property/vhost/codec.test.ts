import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { encodePayload } from '../../../vhost/index.js';
import { allSpecs, replyArb, requestArb } from './arbitraries.js';

function plain(v: unknown): unknown {
  // Compare bytes by content whatever their view type (Buffer vs Uint8Array).
  if (v === undefined) return undefined;
  return JSON.parse(JSON.stringify(v, (_k, x) =>
    typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? Array.from(x) : x?.type === 'Buffer' ? x.data : x));
}

describe('every message round-trips through its codec', () => {
  for (const spec of allSpecs) {
    it(`${spec.name} request`, () => {
      fc.assert(
        fc.property(requestArb(spec), (v) => {
          const bytes = encodePayload(spec.request, v);
          expect(bytes.length).toBe(spec.request.sizeOf(v));
          const back = spec.request.decode(bytes);
          expect(plain(back)).toEqual(plain(v));
          // Encoding the decoded value gives the same bytes.
          expect(encodePayload(spec.request, back)).toEqual(bytes);
        }),
        { numRuns: 60 },
      );
    });
    if (spec.replyKind === 'status') {
      it(`${spec.name} reply`, () => {
        fc.assert(
          fc.property(replyArb(spec), (v) => {
            const bytes = encodePayload(spec.reply, v);
            expect(plain(spec.reply.decode(bytes))).toEqual(plain(v));
          }),
          { numRuns: 40 },
        );
      });
    }
  }
});
