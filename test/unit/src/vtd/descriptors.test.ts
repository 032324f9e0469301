import { describe, expect, it } from 'vitest';
import { isVsvaError } from '../../../../src/errors.js';
import {
  InvDescType,
  PC_G,
  PIOTLB_G,
  VALID_ONLY_IN_256,
  decodeDescriptor,
  descriptorType,
  descriptorTypeBits,
  encodeDescriptor,
} from '../../../../src/vtd/descriptors.js';

describe('descriptor type field', () => {
  it('is 7 bits: qw0 3:0 and 11:9', () => {
    expect(descriptorType(0x7n)).toBe(7);
    expect(descriptorType(0x205n)).toBe(0x15);
    expect(descriptorTypeBits(0x15)).toBe(0x205n);
  });
});

describe('golden descriptors', () => {
  it('PASID-selective PASID-cache invalidation', () => {
    const w = encodeDescriptor(InvDescType.PC, { G: PC_G.PASID_SI, DID: 5, PASID: 0x12345 }, 1);
    expect(w).toEqual([0x0001234500050017n, 0n, 0n, 0n]);
    const d = decodeDescriptor(w, 1);
    expect(d).toMatchObject({ kind: 'descriptor', type: 7, reserved: [] });
    if (d.kind === 'descriptor' && d.type === InvDescType.PC) {
      expect(d.fields.G).toBe(1n);
      expect(d.fields.DID).toBe(5n);
      expect(d.fields.PASID).toBe(0x12345n);
    }
  });

  it('page-selective PASID-based IOTLB invalidation with AM', () => {
    const w = encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.PSI_IN_PASID, DID: 1, PASID: 0x10, ADDR: 0x7f0000200000n >> 12n, AM: 9 }, 1);
    expect(w).toEqual([0x0000001000010036n, 0x00007f0000200009n, 0n, 0n]);
    const d = decodeDescriptor(w, 1);
    if (d.kind !== 'descriptor' || d.type !== InvDescType.PIOTLB) throw new Error('not a PIOTLB');
    expect(d.fields.AM).toBe(9n);
    expect(d.fields.ADDR << 12n).toBe(0x7f0000200000n);
    expect(d.fields.IH).toBe(0n);
  });

  it('invalidation wait with SW and a status address', () => {
    const w = encodeDescriptor(InvDescType.WAIT, { SW: 1, STATUS_DATA: 2, STATUS_ADDR: 0x10000040n >> 2n }, 0);
    expect(w).toEqual([0x0000000200000025n, 0x10000040n]);
    const d = decodeDescriptor(w, 0);
    if (d.kind !== 'descriptor' || d.type !== InvDescType.WAIT) throw new Error('not a wait');
    expect(d.fields.SW).toBe(1n);
    expect(d.fields.IF).toBe(0n);
    expect(d.fields.STATUS_ADDR << 2n).toBe(0x10000040n);
    expect(decodeDescriptor([0x25n, 0x10000041n], 0)).toMatchObject({ reserved: [{ word: 1, bits: 1n }] });
  });

  it('context-cache, IOTLB, device-TLB, IEC and PASID device-TLB at their positions', () => {
    expect(encodeDescriptor(InvDescType.CC, { G: 3, DID: 2, SID: 0x18, FM: 1 }, 0)).toEqual([0x0001001800020031n, 0n]);
    expect(encodeDescriptor(InvDescType.IOTLB, { G: 3, DR: 1, DW: 1, DID: 7, ADDR: 0x12n, AM: 1, IH: 1 }, 0)).toEqual([0x700f2n, 0x12041n]);
    expect(encodeDescriptor(InvDescType.DEVICE_IOTLB, { SID: 0x18, MIP: 0x1f, PFSID_3_0: 0xa, PFSID_15_4: 0xbcd, S: 1, ADDR: 0x34n }, 0)).toEqual([
      0xbcd00018001fa003n,
      0x34001n,
    ]);
    expect(encodeDescriptor(InvDescType.IEC, { G: 1, IM: 0x1f, IIDX: 0x1234 }, 0)).toEqual([0x00001234f8000014n, 0n]);
    expect(encodeDescriptor(InvDescType.PASID_DEVICE_IOTLB, { MIP: 0x1f, SID: 0x18, PASID: 0x5, G: 1, S: 1, ADDR: 0x1n }, 1)).toEqual([
      0x00000005001801f8n,
      0x1801n,
      0n,
      0n,
    ]);
  });
});

describe('descriptor validation as data', () => {
  it('reports reserved bits per word (type bits 11:9 are not reserved)', () => {
    const cc = decodeDescriptor([0x1n | 0x40n, 1n], 0);
    expect(cc).toMatchObject({ kind: 'descriptor', type: 1, reserved: [{ word: 0, bits: 0x40n }, { word: 1, bits: 1n }] });
    const pc256 = decodeDescriptor([0x7n, 0n, 0n, 0x8n], 1);
    expect(pc256).toMatchObject({ kind: 'descriptor', reserved: [{ word: 3, bits: 8n }] });
  });

  it('returns invalid-type for 0, 0xa and any type using bits 11:9', () => {
    expect(decodeDescriptor([0n, 0n], 0)).toEqual({ kind: 'invalid-type', type: 0 });
    expect(decodeDescriptor([0xan, 0n], 0)).toEqual({ kind: 'invalid-type', type: 0xa });
    expect(decodeDescriptor([0x205n, 0n, 0n, 0n], 1)).toEqual({ kind: 'invalid-type', type: 0x15 });
  });

  it('returns invalid-width for a 256-bit-only type in a 128-bit queue', () => {
    expect([...VALID_ONLY_IN_256].sort()).toEqual([6, 7, 8, 9]);
    for (const t of VALID_ONLY_IN_256) expect(decodeDescriptor([BigInt(t), 0n], 0)).toEqual({ kind: 'invalid-width', type: t });
    let code: string | undefined;
    try {
      encodeDescriptor(InvDescType.PC, { G: 1 }, 0);
    } catch (e) {
      code = isVsvaError(e) ? e.code : undefined;
    }
    expect(code).toBe('EINVAL');
  });

  it('never throws for short, long or out-of-range word arrays', () => {
    expect(decodeDescriptor([0x5n], 1)).toMatchObject({ kind: 'descriptor', type: 5 });
    expect(decodeDescriptor([-1n, -1n, -1n, -1n, -1n], 1).kind).toBe('invalid-type');
  });
});
