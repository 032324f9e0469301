import { describe, expect, it } from 'vitest';
import { isVsvaError } from '../../../../src/errors.js';
import { bit, bitRange, bits, decode, defineLayout, encode, getField, reservedViolations, setField, testField, wordsFromBytes, wordsToBytes } from '../../../../src/vtd/layout.js';

const DEMO = defineLayout({
  name: 'DEMO',
  words: 2,
  fields: [bit('P', 0, 0), bits('MODE', 0, 3, 1), bits('PTR', 0, 63, 12), bits('ID', 1, 15, 0)],
  reserved: [bitRange(11, 4), bitRange(63, 16)],
});

function errCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isVsvaError(e) ? e.code : 'not-a-VsvaError';
  }
  return undefined;
}

describe('layout mechanism', () => {
  it('encodes fields into their words and treats missing fields as 0', () => {
    expect(encode(DEMO, { P: 1, MODE: 5n, PTR: 0xabcn, ID: 0xbeef })).toEqual([0xabc00bn, 0xbeefn]);
    expect(encode(DEMO, {})).toEqual([0n, 0n]);
    expect(encode(DEMO, { P: true })).toEqual([1n, 0n]);
  });

  it('refuses a value wider than its field with EINVAL naming the field', () => {
    expect(errCode(() => encode(DEMO, { MODE: 8 }))).toBe('EINVAL');
    expect(() => encode(DEMO, { MODE: 8 })).toThrow(/DEMO\.MODE/);
    expect(errCode(() => encode(DEMO, { ID: -1 }))).toBe('EINVAL');
    expect(errCode(() => encode(DEMO, { ID: 1.5 }))).toBe('EINVAL');
    expect(errCode(() => encode(DEMO, { NOPE: 1 } as never))).toBe('EINVAL');
  });

  it('decodes fields and reports each word with set reserved bits', () => {
    const d = decode(DEMO, [0xabc0f3n, 0x1_beefn]);
    expect(d.fields).toEqual({ P: 1n, MODE: 1n, PTR: 0xabcn, ID: 0xbeefn });
    expect(d.reserved).toEqual([
      { word: 0, bits: 0xf0n },
      { word: 1, bits: 0x10000n },
    ]);
    expect(decode(DEMO, [0n, 0n]).reserved).toEqual([]);
  });

  it('reduces out-of-range bigints to 64 bits instead of throwing', () => {
    const d = decode(DEMO, [-1n, 1n << 70n]);
    expect(d.fields.PTR).toBe((1n << 52n) - 1n);
    expect(d.fields.ID).toBe(0n);
    expect(reservedViolations(DEMO, [-1n, 0n])).toEqual([{ word: 0, bits: 0xff0n }]);
  });

  it('rejects a wrong-length word array with EINVAL', () => {
    expect(errCode(() => decode(DEMO, [0n]))).toBe('EINVAL');
  });

  it('refuses overlapping fields and bad word indices at definition time', () => {
    expect(errCode(() => defineLayout({ name: 'X', words: 1, fields: [bits('A', 0, 3, 0), bit('B', 0, 2)], reserved: [0n] }))).toBe('EINVAL');
    expect(errCode(() => defineLayout({ name: 'X', words: 1, fields: [bit('A', 1, 0)], reserved: [0n] }))).toBe('EINVAL');
    expect(errCode(() => defineLayout({ name: 'X', words: 2, fields: [], reserved: [0n] }))).toBe('EINVAL');
  });

  it('gets and sets one field on a word', () => {
    const f = DEMO.field.MODE;
    expect(getField(0xen, f)).toBe(7n);
    expect(setField(0xffn, f, 2)).toBe(0xf5n);
    expect(testField(1n, DEMO.field.P)).toBe(true);
    expect(errCode(() => setField(0n, f, 9))).toBe('EINVAL');
  });

  it('round-trips words through little-endian bytes as stored in memory', () => {
    const words = [0x0102030405060708n, 0xffffffffffffffffn];
    const bytes = wordsToBytes(words);
    expect(Array.from(bytes.slice(0, 8))).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(wordsFromBytes(bytes, 0, 2)).toEqual(words);
    expect(errCode(() => wordsFromBytes(bytes, 8, 2))).toBe('EINVAL');
  });
});
