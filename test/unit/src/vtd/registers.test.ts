import { describe, expect, it } from 'vitest';
import { decode } from '../../../../src/vtd/layout.js';
import {
  DMAR,
  FSTS,
  GCMD,
  GSTS,
  IQA_REG,
  applyRegisterWrite,
  iqEntries,
  iqIndexFromReg,
  iqRegFromIndex,
  registerReadValue,
  type RegisterDef,
} from '../../../../src/vtd/registers.js';
import { CAP_REG, ECAP_REG, decodeCap, decodeEcap, domainCount, pasidCount, vsvaCapEcap, vsvaRegisterFile } from '../../../../src/vtd/cap-ecap.js';

function byName(regs: RegisterDef[], name: string): RegisterDef {
  const r = regs.find((x) => x.name === name);
  if (r === undefined) throw new Error(`no register ${name}`);
  return r;
}

describe('register file', () => {
  const regs = vsvaRegisterFile('3.1');

  it('has QEMU offsets and widths', () => {
    expect(byName(regs, 'GCMD')).toMatchObject({ offset: 0x18, width: 32 });
    expect(byName(regs, 'RTADDR')).toMatchObject({ offset: 0x20, width: 64, wmask: 0xfffffffffffffc00n });
    expect(byName(regs, 'IQA')).toMatchObject({ offset: 0x90, width: 64, wmask: 0xfffffffffffff807n });
    expect(byName(regs, 'ICS')).toMatchObject({ offset: 0x9c, width: 32, w1cmask: 1n });
    expect(byName(regs, 'PRS')).toMatchObject({ offset: 0xdc, width: 32, w1cmask: 3n });
    expect(byName(regs, 'FECTL')).toMatchObject({ reset: 0x80000000n, wmask: 0x80000000n });
    const offsets = regs.map((r) => r.offset);
    expect([...offsets].sort((a, b) => a - b)).toEqual(offsets);
  });

  it('puts VCMD registers at the 3.1 or 3.3 offsets, or leaves them out', () => {
    const r31 = vsvaRegisterFile('3.1');
    expect([byName(r31, 'VCCAP').offset, byName(r31, 'VCMD').offset, byName(r31, 'VCRSP').offset]).toEqual([0xe00, 0xe10, 0xe20]);
    const r33 = vsvaRegisterFile('3.3');
    expect([byName(r33, 'VCMD').offset, byName(r33, 'VCRSP').offset, byName(r33, 'VCCAP').offset]).toEqual([0xe00, 0xe10, 0xe30]);
    const none = vsvaRegisterFile(false);
    expect(none.find((r) => r.name.startsWith('VC'))).toBeUndefined();
    expect(decodeEcap(byName(none, 'ECAP').reset).fields.VCS).toBe(0n);
  });

  it('places the fault recording and IOTLB registers where CAP.FRO and ECAP.IRO say', () => {
    const cap = decodeCap(byName(regs, 'CAP').reset).fields;
    const ecap = decodeEcap(byName(regs, 'ECAP').reset).fields;
    expect(byName(regs, 'FRCD0_LO').offset).toBe(Number(cap.FRO) * 16);
    expect(byName(regs, 'FRCD0_HI').offset).toBe(Number(cap.FRO) * 16 + 8);
    expect(regs.filter((r) => r.name.endsWith('_LO')).length).toBe(Number(cap.NFR) + 1);
    expect(byName(regs, 'IVA').offset).toBe(Number(ecap.IRO) * 16);
    expect(byName(regs, 'IOTLB').offset).toBe(Number(ecap.IRO) * 16 + 8);
  });

  it('applies writable, write-1-to-clear and write-only masks', () => {
    const fsts = byName(regs, 'FSTS');
    expect(applyRegisterWrite(fsts, BigInt(FSTS.IQE | FSTS.PPF | FSTS.PFO), BigInt(FSTS.IQE))).toBe(BigInt(FSTS.PPF | FSTS.PFO));
    expect(applyRegisterWrite(fsts, BigInt(FSTS.PPF), BigInt(FSTS.PPF))).toBe(BigInt(FSTS.PPF)); // PPF is RO
    const gcmd = byName(regs, 'GCMD');
    const written = applyRegisterWrite(gcmd, 0n, BigInt((GCMD.TE | GCMD.QIE) >>> 0) | 0x7fn);
    expect(written).toBe(BigInt((GCMD.TE | GCMD.QIE) >>> 0));
    expect(registerReadValue(gcmd, written)).toBe(0n);
    expect(GSTS.TES).toBe(GCMD.TE);
    const ver = byName(regs, 'VER');
    expect(applyRegisterWrite(ver, ver.reset, 0xffn)).toBe(ver.reset);
    const frcdHi = byName(regs, 'FRCD0_HI');
    expect(applyRegisterWrite(frcdHi, 0xcfffff5be0000018n, 1n << 63n)).toBe(0x4fffff5be0000018n);
  });
});

describe('invalidation queue register rules', () => {
  it('shifts IQH/IQT by 4 for 128-bit and 5 for 256-bit descriptors', () => {
    expect(iqRegFromIndex(3, 0)).toBe(0x30n);
    expect(iqRegFromIndex(3, 1)).toBe(0x60n);
    expect(iqIndexFromReg(0x60n, 1)).toBe(3);
    expect(iqIndexFromReg(0x60n, 0)).toBe(6);
    expect(iqEntries(0, 0)).toBe(256);
    expect(iqEntries(1, 1)).toBe(256);
    const iqa = decode(IQA_REG, [0x12345000n | 0x800n | 1n]).fields;
    expect(iqa).toEqual({ QS: 1n, DW: 1n, IQA: 0x12345n });
  });
});

describe('exposed CAP/ECAP', () => {
  const { cap, ecap } = vsvaCapEcap();
  const c = decodeCap(cap).fields;
  const e = decodeEcap(ecap).fields;

  it('exposes the capabilities of docs/design.md §3.1', () => {
    expect(e.PSS).toBe(19n);
    expect(pasidCount(Number(e.PSS))).toBe(1 << 20);
    expect([e.SMTS, e.PASID, e.FLTS, e.SLTS, e.QI, e.DT, e.PRS, e.PDS, e.SRS, e.EAFS, e.VCS]).toEqual(Array(11).fill(1n));
    expect(e.NEST).toBe(0n);
    expect(c.CM).toBe(1n);
    expect(c.SAGAW).toBe(0x4n);
    expect((cap >> 10n) & 1n).toBe(1n);
    expect(c.MGAW).toBe(47n);
    expect(c.FL1GP).toBe(1n);
    expect(c.SLLPS).toBe(3n);
    expect(c.PSI).toBe(1n);
    expect(c.MAMV).toBe(18n);
    expect(domainCount(Number(c.ND))).toBe(65536);
    expect(c.FRO).toBe(BigInt(DMAR.FRCD / 16));
    expect(e.IRO).toBe(BigInt(DMAR.IVA / 16));
    expect(c.FL5LP).toBe(0n);
    expect(decodeCap(vsvaCapEcap({ fl5lp: true }).cap).fields.FL5LP).toBe(1n);
  });

  it('encodes to the exact register values', () => {
    expect(cap).toBe(0x01d2008c222f0486n);
    expect(ecap).toBe(0x0000dd9ca0000f46n);
    expect(decodeCap(cap).reserved).toEqual([]);
    expect(decodeEcap(ecap).reserved).toEqual([]);
    expect(CAP_REG.field.FRO.lsb).toBe(24);
    expect(ECAP_REG.field.PSS.lsb).toBe(35);
  });
});
