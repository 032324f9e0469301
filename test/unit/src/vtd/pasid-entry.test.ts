import { describe, expect, it } from 'vitest';
import { decode, encode } from '../../../../src/vtd/layout.js';
import {
  FLPM,
  PASID_AW,
  PASID_BITS,
  PASID_DIR_ENTRY,
  PASID_LIMIT,
  PASID_MAX,
  PASID_TABLE_ENTRY,
  PGTT,
  checkPasidEntry,
  pasidDirIndex,
  pasidTableIndex,
  pgttOf,
} from '../../../../src/vtd/pasid-entry.js';

const NESTED = {
  P: 1,
  AW: PASID_AW.AW_48BIT,
  PGTT: PGTT.NESTED,
  SLPTPTR: 0x12345000n >> 12n,
  DID: 0x42,
  PWSNP: 1,
  SRE: 1,
  FLPM: FLPM.LEVEL5,
  WPE: 1,
  FLPTR: 0xabcde000n >> 12n,
} as const;
const NESTED_WORDS = [0x123450c9n, 0x800042n, 0xabcde015n, 0n, 0n, 0n, 0n, 0n];

describe('PASID split', () => {
  it('uses bits 19:6 for the directory and 5:0 for the table', () => {
    expect(pasidDirIndex(0xfffff)).toBe(0x3fff);
    expect(pasidTableIndex(0xfffff)).toBe(0x3f);
    expect(pasidDirIndex(0x12345)).toBe(0x48d);
    expect(pasidTableIndex(0x12345)).toBe(0x05);
  });
});

describe('PASID directory entry', () => {
  it('encodes P, FPD and the table pointer; flags bits 11:2', () => {
    expect(encode(PASID_DIR_ENTRY, { P: 1, FPD: 1, SMPTBLPTR: 0x7000n >> 12n })).toEqual([0x7003n]);
    expect(decode(PASID_DIR_ENTRY, [0x7007n]).reserved).toEqual([{ word: 0, bits: 0x4n }]);
  });
});

describe('PASID table entry', () => {
  it('encodes a nested entry to the exact qwords of the reference layout', () => {
    expect(encode(PASID_TABLE_ENTRY, NESTED)).toEqual(NESTED_WORDS);
  });

  it('decodes the nested entry back', () => {
    const d = decode(PASID_TABLE_ENTRY, NESTED_WORDS);
    expect(d.reserved).toEqual([]);
    expect(d.fields.PGTT).toBe(3n);
    expect(d.fields.FLPM).toBe(1n);
    expect(d.fields.FLPTR << 12n).toBe(0xabcde000n);
    expect(d.fields.SLPTPTR << 12n).toBe(0x12345000n);
    expect(d.fields.DID).toBe(0x42n);
    expect(d.fields.SRE).toBe(1n);
    expect(d.fields.WPE).toBe(1n);
    expect(d.fields.AW).toBe(2n);
    expect(d.fields.EAFE).toBe(0n);
    expect(pgttOf(NESTED_WORDS[0]!)).toBe(3);
  });

  it('places the qw1 cache fields and PAT as the reference says', () => {
    const [, qw1] = encode(PASID_TABLE_ENTRY, { PGSNP: 1, CD: 1, EMTE: 1, EMT: 7, PWT: 1, PCD: 1, PAT: 0x07060504 });
    expect(qw1).toBe(0x07060504_ff000000n);
    const [, , qw2] = encode(PASID_TABLE_ENTRY, { ERE: 1, NXE: 1, SMEP: 1, EAFE: 1 });
    expect(qw2).toBe(0xe2n);
  });

  it('accepts a valid nested entry', () => {
    const r = checkPasidEntry(NESTED_WORDS);
    expect(r.ok).toBe(true);
    expect(r.ok && r.pgtt).toBe(PGTT.NESTED);
  });

  it('reports P clear as 0x59, reserved bits as 0x5a, bad PGTT/FLPM as 0x5b', () => {
    const notPresent = [...NESTED_WORDS];
    notPresent[0] = notPresent[0]! & ~1n;
    expect(checkPasidEntry(notPresent)).toMatchObject({ ok: false, fault: 0x59 });

    const rsvd = [...NESTED_WORDS];
    rsvd[5] = 1n;
    expect(checkPasidEntry(rsvd)).toMatchObject({ ok: false, fault: 0x5a, reserved: [{ word: 5, bits: 1n }] });
    const rsvdQw1 = [...NESTED_WORDS];
    rsvdQw1[1] = rsvdQw1[1]! | (1n << 16n);
    expect(checkPasidEntry(rsvdQw1)).toMatchObject({ ok: false, fault: 0x5a });

    for (const pgtt of [0n, 5n, 6n, 7n]) {
      const w = [...NESTED_WORDS];
      w[0] = (w[0]! & ~(7n << 6n)) | (pgtt << 6n);
      expect(checkPasidEntry(w)).toMatchObject({ ok: false, fault: 0x5b });
    }
    const flpm = [...NESTED_WORDS];
    flpm[2] = (flpm[2]! & ~0xcn) | (2n << 2n);
    expect(checkPasidEntry(flpm)).toMatchObject({ ok: false, fault: 0x5b, why: 'FLPM 2 is reserved' });
  });

  it('applies configuration limits: allowed PGTTs, FL5LP, SAGAW', () => {
    expect(checkPasidEntry(NESTED_WORDS, { allowedPgtt: [1, 2, 4] })).toMatchObject({ ok: false, fault: 0x5b });
    expect(checkPasidEntry(NESTED_WORDS, { fl5lp: false })).toMatchObject({ ok: false, fault: 0x5b });
    expect(checkPasidEntry(NESTED_WORDS, { sagaw: 0x2 })).toMatchObject({ ok: false, fault: 0x5b });
    expect(checkPasidEntry(NESTED_WORDS, { sagaw: 0x4, fl5lp: true }).ok).toBe(true);
    // FLPM is not checked for a second-level-only entry
    const sl = encode(PASID_TABLE_ENTRY, { P: 1, PGTT: PGTT.SLT, AW: 2, FLPM: 3 });
    expect(checkPasidEntry(sl).ok).toBe(true);
  });
});

describe('PASID bounds', () => {
  it('PASID_LIMIT counts the 20-bit PASIDs (exclusive), PASID_MAX is the largest one (inclusive)', () => {
    expect(PASID_LIMIT).toBe(2 ** PASID_BITS);
    expect(PASID_LIMIT).toBe(0x100000);
    expect(PASID_MAX).toBe(0xfffff);
    expect(pasidDirIndex(PASID_MAX)).toBe(0x3fff);
    expect(pasidTableIndex(PASID_MAX)).toBe(0x3f);
  });
});
