import { describe, expect, it } from 'vitest';
import { decode, encode } from '../../../../src/vtd/layout.js';
import { RTADDR_REG, TTM, pasidDirEntries, smContextEntryLayout, smRootEntryLayout } from '../../../../src/vtd/root-context.js';

describe('RTADDR', () => {
  it('holds TTM in 11:10 and RTA in 63:12', () => {
    expect(encode(RTADDR_REG, { TTM: TTM.SCALABLE, RTA: 0x1234n })).toEqual([0x1234400n]);
    expect(decode(RTADDR_REG, [0x1234c01n])).toEqual({ fields: { TTM: 3n, RTA: 0x1234n }, reserved: [{ word: 0, bits: 1n }] });
  });
});

describe('scalable-mode root entry', () => {
  const root = smRootEntryLayout(48);
  it('encodes both halves', () => {
    expect(encode(root, { LP: 1, LCTP: 0x1n, UP: 1, UCTP: 0x2n })).toEqual([0x1001n, 0x2001n]);
  });
  it('reserves bits 11:1 and bits at and above HAW', () => {
    expect(root.reserved).toEqual([0xffff000000000ffen, 0xffff000000000ffen]);
    expect(decode(root, [0x1001n | (1n << 48n), 0x2n]).reserved).toEqual([
      { word: 0, bits: 1n << 48n },
      { word: 1, bits: 2n },
    ]);
    expect(smRootEntryLayout(39).reserved[0]).toBe(0xffffff8000000ffen);
    expect(smRootEntryLayout(48)).toBe(root);
  });
});

describe('scalable-mode context entry', () => {
  const ctx = smContextEntryLayout(48);
  it('encodes every field at its position', () => {
    const w = encode(ctx, { P: 1, FPD: 0, DTE: 1, PASIDE: 1, PRE: 1, PDTS: 6, PASIDDIRPTR: 0x5n, RID_PASID: 0xfffff, RID_PRIV: 1 });
    expect(w).toEqual([0x5c1dn, 0x1fffffn, 0n, 0n]);
    expect(pasidDirEntries(6)).toBe(8192);
    expect(ctx.field.PDTS.width).toBe(3);
  });
  it('reserves qw0 8:5 and above HAW, qw1 63:21, all of qw2 and qw3', () => {
    expect(ctx.reserved).toEqual([0xffff0000000001e0n, 0xffffffffffe00000n, (1n << 64n) - 1n, (1n << 64n) - 1n]);
    expect(decode(ctx, [0x21n, 1n << 21n, 0n, 4n]).reserved).toEqual([
      { word: 0, bits: 0x20n },
      { word: 1, bits: 1n << 21n },
      { word: 3, bits: 4n },
    ]);
  });
});
