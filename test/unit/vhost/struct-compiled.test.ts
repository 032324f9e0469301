/**
 * The compiled struct codecs (vhost/struct.ts) behave exactly like the per-field walk they
 * replace on the hot path: for every struct of the catalogue, the same decoded value or the same
 * error (code and message) for arbitrary bytes and for valid payloads with one byte changed, and
 * the same bytes or the same error for well-formed and ill-typed values.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as vhost from '../../../vhost/index.js';
import { Struct, reserved } from '../../../vhost/wire/struct.js';
import { isVsvaError } from '../../../src/errors.js';

const structs: Struct<object>[] = (Object.values(vhost) as unknown[]).filter((x): x is Struct<object> => x instanceof Struct);

/** A test struct with every field kind and check the declarations use. */
const Mixed = new Struct<{ a: number; b: number; c: number; d: bigint; e: number; f: Uint8Array; g: string; h: bigint }>('MIXED', [
  { name: 'a', type: 'u8', doc: 'flags', mask: 0x5 },
  { name: 'b', type: 'u16', doc: 'enum', values: [1, 2, 0x8000] },
  { name: 'c', type: 'u32', doc: 'bounded', max: 0xfffff },
  reserved(3),
  { name: 'd', type: 'u64', doc: 'flag bits', mask: 0x8000_0000_0000_0001n },
  { name: 'e', type: 'i32', doc: 'signed' },
  { name: 'f', type: { kind: 'bytes', size: 5 }, doc: 'bytes' },
  { name: 'g', type: { kind: 'cstr', size: 8 }, doc: 'text' },
  reserved(20, 'tail'),
  { name: 'h', type: 'u64', doc: 'bounded u64', max: 1000 },
]);
structs.push(Mixed as unknown as Struct<object>);

type Outcome = { ok: true; value: unknown; bytes?: number[] } | { ok: false; error: string };

function outcome(f: () => unknown, buf?: Buffer): Outcome {
  try {
    const value = f();
    return { ok: true, value: plain(value), ...(buf ? { bytes: Array.from(buf) } : {}) };
  } catch (e) {
    return { ok: false, error: isVsvaError(e) ? `${e.code} ${e.message}` : `${(e as Error).name} ${(e as Error).message}` };
  }
}

function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v ?? null, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? Array.from(x) : x)));
}

/** Values of every field's type and some of the wrong types, keyed by field name. */
function valueArb(s: Struct<object>): fc.Arbitrary<Record<string, unknown>> {
  const wrong = fc.constantFrom<unknown>(undefined, null, 'x', -1, 1.5, 2 ** 32, 2 ** 64, -1n, 1n << 64n, NaN, new Uint8Array(3));
  const rec: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of s.fields) {
    const t = f.type;
    let good: fc.Arbitrary<unknown>;
    if (t === 'u8') good = fc.integer({ min: 0, max: 0xff });
    else if (t === 'u16') good = fc.integer({ min: 0, max: 0xffff });
    else if (t === 'u32') good = fc.oneof(fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: 0x10_0000 }));
    else if (t === 'i32') good = fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff });
    else if (t === 'u64') good = fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: 2000n }));
    else if (t.kind === 'bytes') good = fc.uint8Array({ minLength: t.size, maxLength: t.size });
    else if (t.kind === 'cstr') good = fc.string({ maxLength: t.size + 1 });
    else good = fc.constant(undefined);
    if (f.values) good = fc.oneof(good, fc.constantFrom(...f.values));
    rec[f.name] = fc.oneof({ weight: 8, arbitrary: good }, { weight: 1, arbitrary: wrong });
  }
  return fc.record(rec);
}

describe('compiled struct codecs match the per-field walk', () => {
  for (const s of structs) {
    describe(s.name, () => {
      it('decode: arbitrary bytes at an offset', () => {
        fc.assert(
          fc.property(fc.uint8Array({ minLength: s.size, maxLength: s.size + 8 }), fc.nat(8), (bytes, shift) => {
            const buf = Buffer.from(bytes);
            const off = Math.min(shift, buf.length - s.size);
            expect(outcome(() => s.decode(buf, off))).toEqual(outcome(() => s.decodeGeneric(buf, off)));
          }),
          { numRuns: 150 },
        );
      });

      it('decode: a valid encoding with one byte changed', () => {
        fc.assert(
          fc.property(valueArb(s), fc.nat(), fc.integer({ min: 0, max: 255 }), (v, at, byte) => {
            const buf = Buffer.alloc(s.size);
            try {
              s.encodeIntoGeneric(buf, 0, v);
            } catch {
              return; // not a valid value
            }
            if (s.size > 0) buf[at % s.size] = byte;
            expect(outcome(() => s.decode(buf, 0))).toEqual(outcome(() => s.decodeGeneric(buf, 0)));
          }),
          { numRuns: 150 },
        );
      });

      it('encode: same bytes or the same error', () => {
        fc.assert(
          fc.property(valueArb(s), (v) => {
            const a = Buffer.alloc(s.size + 4, 0xaa);
            const b = Buffer.alloc(s.size + 4, 0xaa);
            const ra = outcome(() => s.encodeInto(a, 2, v), a);
            const rb = outcome(() => s.encodeIntoGeneric(b, 2, v), b);
            if (ra.ok && rb.ok) expect(ra).toEqual(rb);
            else expect(ra.ok ? 'accepted' : ra.error).toBe(rb.ok ? 'accepted' : rb.error);
          }),
          { numRuns: 150 },
        );
      });

      it('an offset outside the buffer fails as the walk does', () => {
        const buf = Buffer.alloc(s.size);
        for (const off of [1, -1, 0.5]) {
          if (s.size === 0 && off !== 0.5) continue;
          expect(outcome(() => s.decode(buf, off))).toEqual(outcome(() => s.decodeGeneric(buf, off)));
        }
      });
    });
  }

  it('covers the catalogue structs', () => {
    expect(structs.map((s) => s.name)).toEqual(expect.arrayContaining(['PASID_ALLOC', 'PASID_ALLOC reply', 'VM_SETUP', 'BIND_GPASID', 'MIXED']));
  });
});
