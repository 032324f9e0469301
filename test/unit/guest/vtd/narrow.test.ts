import { describe, it, expect } from 'vitest';
import { narrow } from '../../../../guest/vtd/narrow.js';

describe('narrow: a bigint as a number only when it fits the width named', () => {
  it('returns values that fit, up to 32 bits', () => {
    expect(narrow(0n, 1)).toBe(0);
    expect(narrow(1n, 1)).toBe(1);
    expect(narrow(0xffffn, 16)).toBe(0xffff);
    expect(narrow(0xfffffn, 20)).toBe(0xfffff);
    expect(narrow(0xffff_ffffn, 32)).toBe(0xffff_ffff);
  });

  it('refuses a value wider than the width (ERANGE), and a negative one', () => {
    expect(() => narrow(0x10000n, 16)).toThrow(/ERANGE: 0x10000 does not fit 16 bits/);
    expect(() => narrow(1n << 32n, 32)).toThrow(/ERANGE/);
    expect(() => narrow(-1n, 8)).toThrow(/ERANGE/);
  });

  it('refuses a width outside 1..32 (ERANGE)', () => {
    expect(() => narrow(0n, 0)).toThrow(/ERANGE: narrow: 0 is not a width/);
    expect(() => narrow(0n, 33)).toThrow(/ERANGE/);
    expect(() => narrow(0n, 2.5)).toThrow(/ERANGE/);
  });
});
