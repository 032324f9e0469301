import { describe, expect, it } from 'vitest';
import { VCMD_CMD, VCMD_LAYOUTS, VCMD_STATUS, decodeVcmd, decodeVcrsp, encodeVcmd, encodeVcrsp } from '../../../../src/vtd/vcmd.js';

describe('VCMD spec 3.1 layout', () => {
  it('has VCCAP 0xE00, VCMD 0xE10, VCRSP 0xE20', () => {
    expect(VCMD_LAYOUTS['3.1'].offsets).toEqual({ VCCAP: 0xe00, VCMD: 0xe10, VCRSP: 0xe20 });
  });
  it('puts the operand and result at bit 8 and SC in bits 2:1', () => {
    expect(encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID)).toBe(0x1n);
    expect(encodeVcmd('3.1', VCMD_CMD.FREE_PASID, 0x1234)).toBe(0x123402n);
    expect(decodeVcmd('3.1', 0x123402n)).toEqual({ cmd: 2, operand: 0x1234n, pasid: 0x1234, reserved: [] });
    expect(encodeVcrsp('3.1', { result: 0x1234 })).toBe(0x123400n);
    expect(encodeVcrsp('3.1', { sc: VCMD_STATUS['3.1'].NO_PASID })).toBe(0x4n);
    expect(encodeVcrsp('3.1', { ip: true })).toBe(0x1n);
    expect(decodeVcrsp('3.1', 0x123400n)).toEqual({ ip: false, sc: 0, result: 0x1234n, pasid: 0x1234, reserved: [] });
    expect(VCMD_STATUS['3.1']).toMatchObject({ UNDEFINED_CMD: 1, NO_PASID: 2, INVALID_PASID: 2 });
    expect(() => encodeVcrsp('3.1', { sc: 16 })).toThrow(/EINVAL/);
  });
});

describe('VCMD spec 3.3 layout', () => {
  it('has VCMD 0xE00, VCRSP 0xE10, VCCAP 0xE30', () => {
    expect(VCMD_LAYOUTS['3.3'].offsets).toEqual({ VCMD: 0xe00, VCRSP: 0xe10, VCCAP: 0xe30 });
  });
  it('puts the operand and result at bit 16 and SC in bits 7:1', () => {
    expect(encodeVcmd('3.3', VCMD_CMD.FREE_PASID, 0x1234)).toBe(0x12340002n);
    expect(decodeVcmd('3.3', 0x12340002n).pasid).toBe(0x1234);
    expect(encodeVcrsp('3.3', { sc: VCMD_STATUS['3.3'].NO_PASID })).toBe(0x20n);
    expect(encodeVcrsp('3.3', { result: 0xfffff })).toBe(0xfffff0000n);
    expect(decodeVcrsp('3.3', 0x20n).sc).toBe(16);
    expect(decodeVcmd('3.3', 0x100n).reserved).toEqual([{ word: 0, bits: 0x100n }]);
  });
});
