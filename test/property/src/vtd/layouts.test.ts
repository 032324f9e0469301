import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as vtd from '../../../../src/vtd/index.js';
import { decode, encode, type Layout } from '../../../../src/vtd/layout.js';

const { INV_DESCRIPTORS, VCMD_LAYOUTS } = vtd;

/** Every layout vsva declares, including per-HAW and per-level variants. */
const LAYOUTS: Layout[] = [
  vtd.PASID_DIR_ENTRY,
  vtd.PASID_TABLE_ENTRY,
  vtd.FL_PTE,
  vtd.SL_PTE,
  ...([1, 2, 3, 4, 5] as const).flatMap((l) => [39, 48].flatMap((haw) => [vtd.flPteLayout(l, false, haw), vtd.slPteLayout(l, false, haw)])),
  vtd.flPteLayout(2, true, 48),
  vtd.flPteLayout(3, true, 48),
  vtd.slPteLayout(2, true, 48),
  vtd.slPteLayout(3, true, 48, true),
  vtd.FRCD,
  vtd.GCMD_REG,
  vtd.GSTS_REG,
  vtd.FSTS_REG,
  vtd.PRS_REG,
  vtd.EVENT_CTL_REG,
  vtd.ICS_REG,
  vtd.IQA_REG,
  vtd.IQH_REG,
  vtd.IQT_REG,
  vtd.IQERCD_REG,
  vtd.CCMD_REG,
  vtd.IVA_REG,
  vtd.IOTLB_REG,
  vtd.PQA_REG,
  vtd.PQH_REG,
  vtd.PQT_REG,
  vtd.CAP_REG,
  vtd.ECAP_REG,
  vtd.RTADDR_REG,
  vtd.smRootEntryLayout(39),
  vtd.smRootEntryLayout(48),
  vtd.smContextEntryLayout(39),
  vtd.smContextEntryLayout(48),
  ...Object.values(INV_DESCRIPTORS).flatMap((d) => [d.d128 as Layout, d.d256 as Layout]),
  vtd.PAGE_REQ_DSC,
  vtd.VCCAP_REG,
  ...Object.values(VCMD_LAYOUTS).flatMap((l) => [l.vcmd as Layout, l.vcrsp as Layout]),
];

function valuesArb(layout: Layout): fc.Arbitrary<Record<string, bigint>> {
  const rec: Record<string, fc.Arbitrary<bigint>> = {};
  for (const f of layout.fields) rec[f.name] = fc.bigInt({ min: 0n, max: f.max });
  return fc.record(rec);
}

/** Any bigint, mostly 64-bit words, sometimes negative or wider than 64 bits. */
const anyWord = fc.oneof(
  { weight: 4, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
  { weight: 1, arbitrary: fc.bigInt({ min: -(1n << 80n), max: 1n << 80n }) },
  { weight: 1, arbitrary: fc.constantFrom(0n, (1n << 64n) - 1n, -1n) },
);

describe.each(LAYOUTS.map((l) => [l.name, l] as const))('%s', (_name, layout) => {
  it('decode(encode(x)) = x for field values within their widths', () => {
    fc.assert(
      fc.property(valuesArb(layout), (values) => {
        const words = encode(layout, values);
        expect(words).toHaveLength(layout.words);
        expect(decode(layout, words).fields).toEqual(values);
      }),
      { numRuns: 40 },
    );
  });

  it('decodes any words without throwing and flags exactly the set reserved bits', () => {
    fc.assert(
      fc.property(fc.array(anyWord, { minLength: layout.words, maxLength: layout.words }), (words) => {
        const d = decode(layout, words);
        const expected = words
          .map((w, i) => ({ word: i, bits: BigInt.asUintN(64, w) & layout.reserved[i]! }))
          .filter((r) => r.bits !== 0n);
        expect(d.reserved).toEqual(expected);
        for (const f of layout.fields) {
          expect(d.fields[f.name as never]).toBe((BigInt.asUintN(64, words[f.word]!) >> BigInt(f.lsb)) & f.max);
        }
      }),
      { numRuns: 40 },
    );
  });
});

describe('descriptor decoding over arbitrary queue contents', () => {
  it('never throws and classifies every descriptor by its 7-bit type', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(anyWord, { minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 0x7f }), (dw, raw, type) => {
        const words = [...raw];
        // half the time, force a valid-looking type into qw0
        if (type % 2 === 0) words[0] = (BigInt.asUintN(64, words[0]!) & ~0xe0fn) | vtd.descriptorTypeBits((type % 9) + 1);
        const n = dw ? 4 : 2;
        const d = vtd.decodeDescriptor(words.slice(0, n), dw);
        const t = vtd.descriptorType(BigInt.asUintN(64, words[0]!));
        expect(d.type).toBe(t);
        const def = (INV_DESCRIPTORS as Record<number, vtd.DescriptorDef | undefined>)[t];
        if (def === undefined) expect(d.kind).toBe('invalid-type');
        else if (!dw && def.only256) expect(d.kind).toBe('invalid-width');
        else {
          expect(d.kind).toBe('descriptor');
          const layout = dw ? def.d256 : def.d128;
          const expected = words
            .slice(0, n)
            .map((w, i) => ({ word: i, bits: BigInt.asUintN(64, w) & layout.reserved[i]! }))
            .filter((r) => r.bits !== 0n);
          if (d.kind === 'descriptor') expect(d.reserved).toEqual(expected);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('checks arbitrary PASID entries without throwing, reserved before PGTT', () => {
    fc.assert(
      fc.property(fc.array(anyWord, { minLength: 8, maxLength: 8 }), (words) => {
        const r = vtd.checkPasidEntry(words);
        const present = (BigInt.asUintN(64, words[0]!) & 1n) === 1n;
        if (!present) expect(r).toMatchObject({ ok: false, fault: 0x59 });
        else if (vtd.reservedViolations(vtd.PASID_TABLE_ENTRY, words).length > 0) expect(r).toMatchObject({ ok: false, fault: 0x5a });
        else expect(r.ok || (!r.ok && r.fault === 0x5b)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips fault records with 20-bit PASIDs', () => {
    fc.assert(
      fc.property(
        fc.record({
          addr: fc.bigInt({ min: 0n, max: (1n << 52n) - 1n }).map((a) => a << 12n),
          sid: fc.integer({ min: 0, max: 0xffff }),
          reason: fc.integer({ min: 0, max: 0xff }),
          type: fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<0 | 1 | 2 | 3>,
          pasid: fc.integer({ min: 0, max: 0xfffff }),
          priv: fc.boolean(),
          exe: fc.boolean(),
          at: fc.integer({ min: 0, max: 3 }),
        }),
        (r) => {
          expect(vtd.decodeFaultRecord(vtd.encodeFaultRecord(r))).toEqual({ ...r, fault: true });
        },
      ),
      { numRuns: 200 },
    );
  });
});
