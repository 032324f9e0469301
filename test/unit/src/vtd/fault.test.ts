import { describe, expect, it } from 'vitest';
import { decode, encode } from '../../../../src/vtd/layout.js';
import { FAULT_REASONS, FRCD, FaultReason, FaultRequestType, decodeFaultRecord, encodeFaultRecord, faultReasonInfo } from '../../../../src/vtd/fault.js';

describe('fault reason table', () => {
  it('carries spec condition names and Linux texts', () => {
    expect(FaultReason.SPT_4_INVALID_ENTRY).toBe(0x5b);
    expect(FaultReason.SPT_3_PASID_ENTRY_RESERVED).toBe(0x5a);
    expect(faultReasonInfo(0x5b)).toMatchObject({ spec: 'SPT.4', text: 'SM: Invalid Scalable-Mode PASID Table Entry' });
    expect(faultReasonInfo(0x31)).toMatchObject({ spec: 'RTA.2', qemu: 'VTD_FR_RTADDR_INV_TTM' });
    expect(faultReasonInfo(0x91)?.spec).toBe('SFL.10');
    expect(faultReasonInfo(0x01)).toBeUndefined();
  });

  it('has one row per named constant, with matching spec names', () => {
    const named = Object.entries(FaultReason);
    expect(FAULT_REASONS).toHaveLength(named.length);
    for (const [name, code] of named) {
      const row = faultReasonInfo(code);
      expect(row, name).toBeDefined();
      expect(name.startsWith(row!.spec.replace('.', '_') + '_') || name === row!.spec.replace('.', '_')).toBe(true);
    }
  });
});

describe('fault recording register', () => {
  const record = { addr: 0x7fff12345678n, sid: 0x18, reason: 0x5b, type: FaultRequestType.READ, pasid: 0xfffff, priv: true, exe: true, at: 0 } as const;
  const words = [0x7fff12345000n, 0xcfffff5be0000018n];

  it('encodes a record with a 20-bit PV to the exact words', () => {
    expect(encodeFaultRecord(record)).toEqual(words);
  });

  it('decodes it back, including F and the request type', () => {
    expect(decodeFaultRecord(words)).toEqual({ ...record, addr: 0x7fff12345000n, fault: true });
  });

  it('encodes T2:T1 for each request type', () => {
    const t = (type: 0 | 1 | 2 | 3) => decode(FRCD, encodeFaultRecord({ addr: 0n, sid: 0, reason: 0x85, type })).fields;
    expect([t(0).T1, t(0).T2]).toEqual([0n, 0n]);
    expect([t(1).T1, t(1).T2]).toEqual([0n, 1n]);
    expect([t(2).T1, t(2).T2]).toEqual([1n, 0n]);
    expect([t(3).T1, t(3).T2]).toEqual([1n, 1n]);
  });

  it('omits PASID when PP is clear and flags reserved bits 11:0 and 91:80', () => {
    const w = encodeFaultRecord({ addr: 0x1000n, sid: 1, reason: 0x71, type: FaultRequestType.WRITE });
    expect(decodeFaultRecord(w).pasid).toBeUndefined();
    expect(decode(FRCD, [0xfffn, 0xfff0000n]).reserved).toEqual([
      { word: 0, bits: 0xfffn },
      { word: 1, bits: 0xfff0000n },
    ]);
    expect(encode(FRCD, { PV: 0xfffff }).at(1)).toBe(0xfffff0000000000n);
  });
});
