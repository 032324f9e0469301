import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  FixedCodec, encodePayload, Struct, MemTableHeaderStruct, MemoryRegionStruct, CacheInvalidateHeaderStruct,
  CacheInvalidateEntryStruct, DeviceDmaHeaderStruct, FrontendMessages, BackendMessages, PageRequestStruct, PageRequestFlag, type AnySpec,
  type PageRequestMessage,
} from '../../../vhost/index.js';
import type { LaidOutField } from '../../../vhost/wire/struct.js';
import { isVsvaError } from '../../../src/errors.js';
import { allSpecs, requestArb } from '../../property/vhost/arbitraries.js';

function errCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isVsvaError(e) ? e.code : `non-VsvaError: ${String(e)}`;
  }
  return 'accepted';
}

/** The struct(s) a request payload is made of, with their offset inside a valid sample. */
function layouts(spec: AnySpec): { struct: Struct<object>; base: number }[] {
  if (spec.request instanceof FixedCodec) return [{ struct: spec.request.struct as Struct<object>, base: 0 }];
  if (spec.name === 'SET_MEM_TABLE') return [{ struct: MemTableHeaderStruct, base: 0 }, { struct: MemoryRegionStruct, base: 8 }];
  if (spec.name === 'CACHE_INVALIDATE') return [{ struct: CacheInvalidateHeaderStruct, base: 0 }, { struct: CacheInvalidateEntryStruct, base: 8 }];
  if (spec.name === 'DEVICE_DMA') return [{ struct: DeviceDmaHeaderStruct, base: 0 }];
  return [];
}

function sample(spec: AnySpec): Buffer {
  const [v] = fc.sample(requestArb(spec), { numRuns: 1, seed: 42 });
  return encodePayload(spec.request, v);
}

function writeField(buf: Buffer, at: number, f: LaidOutField, value: number): void {
  if (f.size === 1) buf[at] = value;
  else if (f.size === 2) buf.writeUInt16LE(value, at);
  else if (f.size === 4) buf.writeUInt32LE(value >>> 0, at);
  else buf.writeBigUInt64LE(BigInt(value), at);
}

describe('every validator rejects each malformed variant with the documented errno', () => {
  for (const spec of allSpecs) {
    describe(spec.name, () => {
      const valid = sample(spec);

      it('accepts the valid sample', () => {
        expect(errCode(() => spec.request.decode(valid))).toBe('accepted');
      });

      it('short payload → EINVAL', () => {
        if (valid.length === 0) {
          // Nothing shorter exists; a one-byte payload is "long" (below).
          return;
        }
        expect(errCode(() => spec.request.decode(valid.subarray(0, valid.length - 1)))).toBe('EINVAL');
        expect(errCode(() => spec.request.decode(Buffer.alloc(0)))).toBe('EINVAL');
      });

      it('long payload → EINVAL', () => {
        expect(errCode(() => spec.request.decode(Buffer.concat([valid, Buffer.alloc(1)])))).toBe('EINVAL');
        expect(errCode(() => spec.request.decode(Buffer.concat([valid, Buffer.alloc(8)])))).toBe('EINVAL');
      });

      for (const { struct, base } of layouts(spec)) {
        for (const f of struct.fields) {
          const t = f.type;
          if (typeof t !== 'string' && t.kind === 'reserved') {
            it(`non-zero ${struct.name}.${f.name} (reserved, offset ${base + f.offset}) → EOPNOTSUPP`, () => {
              for (const i of [0, f.size - 1]) {
                const bad = Buffer.from(valid);
                bad[base + f.offset + i] = 0x80;
                expect(errCode(() => spec.request.decode(bad))).toBe('EOPNOTSUPP');
              }
            });
          }
          if (f.mask !== undefined && typeof t === 'string') {
            it(`unknown bit in ${struct.name}.${f.name} → EOPNOTSUPP`, () => {
              const bad = Buffer.from(valid);
              const known = Number(f.mask);
              const unknownBit = f.size >= 4 ? 0x8000_0000 : 1 << (f.size * 8 - 1);
              expect(known & unknownBit).toBe(0);
              const at = base + f.offset;
              const cur = f.size === 4 ? bad.readUInt32LE(at) : f.size === 8 ? Number(bad.readBigUInt64LE(at) & 0xffff_ffffn) : f.size === 2 ? bad.readUInt16LE(at) : bad[at]!;
              writeField(bad, at, f, (cur | unknownBit) >>> 0);
              expect(errCode(() => spec.request.decode(bad))).toBe('EOPNOTSUPP');
            });
          }
          if (f.values !== undefined) {
            it(`${struct.name}.${f.name} outside its enum → EINVAL`, () => {
              const bad = Buffer.from(valid);
              writeField(bad, base + f.offset, f, Math.max(...f.values!) + 1);
              expect(errCode(() => spec.request.decode(bad))).toBe('EINVAL');
            });
          }
          if (f.max !== undefined) {
            it(`${struct.name}.${f.name} above ${f.max} → EINVAL`, () => {
              const bad = Buffer.from(valid);
              writeField(bad, base + f.offset, f, f.max! + 1);
              expect(errCode(() => spec.request.decode(bad))).toBe('EINVAL');
            });
          }
        }
      }
    });
  }
});

describe('message-specific rules', () => {
  const dec = (name: keyof typeof FrontendMessages, v: unknown): string => {
    const spec: AnySpec = FrontendMessages[name];
    // Bypass the encoder's own checks: lay the value out field by field.
    const s = (spec.request as FixedCodec<object>).struct;
    const buf = Buffer.alloc(s.size);
    for (const f of s.fields) {
      const x = (v as Record<string, unknown>)[f.name];
      if (x === undefined) continue;
      if (typeof x === 'bigint') buf.writeBigUInt64LE(x, f.offset);
      else if (typeof x === 'string') buf.write(x, f.offset);
      else if (x instanceof Uint8Array) buf.set(x, f.offset);
      else writeField(buf, f.offset, f, x as number);
    }
    return errCode(() => spec.request.decode(buf));
  };

  it('PASID ranges: min > max is EINVAL, a PASID above 20 bits is EINVAL', () => {
    expect(dec('PASID_ALLOC', { min: 5, max: 4 })).toBe('EINVAL');
    expect(dec('PASID_FREE', { min: 0, max: 0x10_0000 })).toBe('EINVAL');
    expect(dec('PASID_ALLOC', { min: 1, max: 0xf_ffff })).toBe('accepted');
  });

  it('DMA_MAP: no permission, zero size → EINVAL; wrap past 2^64 → EOVERFLOW', () => {
    expect(dec('DMA_MAP', { domain: 0, flags: 0, iova: 0n, gpa: 0n, size: 4096n })).toBe('EINVAL');
    expect(dec('DMA_MAP', { domain: 0, flags: 3, iova: 0n, gpa: 0n, size: 0n })).toBe('EINVAL');
    expect(dec('DMA_MAP', { domain: 0, flags: 1, iova: 0xffff_ffff_ffff_f000n, gpa: 0n, size: 0x2000n })).toBe('EOVERFLOW');
    expect(dec('DMA_MAP', { domain: 0, flags: 1, iova: 0xffff_ffff_ffff_f000n, gpa: 0n, size: 0x1000n })).toBe('accepted');
  });

  it('ATTACH: pgtt must match PASID_VALID', () => {
    expect(dec('ATTACH', { rid: 0x18, pgtt: 2, flags: 0, pasid: 0, domain: 0 })).toBe('EINVAL');
    expect(dec('ATTACH', { rid: 0x18, pgtt: 0, flags: 1, pasid: 5, domain: 0 })).toBe('EINVAL');
    expect(dec('ATTACH', { rid: 0x18, pgtt: 0, flags: 0, pasid: 5, domain: 0 })).toBe('EINVAL');
    expect(dec('ATTACH', { rid: 0x18, pgtt: 4, flags: 1, pasid: 5, domain: 0 })).toBe('accepted');
    expect(dec('DETACH', { rid: 0x18, pgtt: 2, flags: 1, pasid: 5, domain: 0 })).toBe('EINVAL');
  });

  it('DEVICE_ADD: capability consistency', () => {
    expect(dec('DEVICE_ADD', { rid: 0x18, kind: 0, pasid_width: 0, caps: 1 })).toBe('EINVAL');
    expect(dec('DEVICE_ADD', { rid: 0x18, kind: 0, pasid_width: 20, caps: 0 })).toBe('EINVAL');
    expect(dec('DEVICE_ADD', { rid: 0x18, kind: 0, pasid_width: 20, caps: 1 | 4 })).toBe('EINVAL');
    expect(dec('DEVICE_ADD', { rid: 0x18, kind: 1, pasid_width: 20, caps: 1 | 2 | 4 })).toBe('accepted');
  });

  it('VM_SETUP: empty name, unterminated name, vIOMMU kind 3', () => {
    expect(dec('VM_SETUP', { name: '', pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) })).toBe('EINVAL');
    expect(dec('VM_SETUP', { name: 'x'.repeat(64), pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) })).toBe('EINVAL');
    expect(dec('VM_SETUP', { name: 'vm', pasid_quota: 1, flags: 3, session_token: new Uint8Array(16) })).toBe('EINVAL');
    expect(dec('VM_SETUP', { name: 'vm', pasid_quota: 1, flags: 2, session_token: new Uint8Array(16) })).toBe('accepted');
  });

  it('BACKEND_ATTACH: an all-zero token is EINVAL', () => {
    expect(dec('BACKEND_ATTACH', { session_token: new Uint8Array(16) })).toBe('EINVAL');
  });

  it('array counts: 0 and above the cap are EINVAL, the size must match the count', () => {
    const mt = FrontendMessages.SET_MEM_TABLE.request;
    const zero = Buffer.alloc(8);
    expect(errCode(() => mt.decode(zero))).toBe('EINVAL');
    const nine = Buffer.alloc(8 + 9 * 288);
    nine.writeUInt32LE(9, 0);
    expect(errCode(() => mt.decode(nine))).toBe('EINVAL');
    const ci = FrontendMessages.CACHE_INVALIDATE.request;
    const many = Buffer.alloc(8);
    many.writeUInt32LE(1025, 0);
    expect(errCode(() => ci.decode(many))).toBe('EINVAL');
    const two = Buffer.alloc(8 + 64);
    two.writeUInt32LE(2, 0);
    expect(errCode(() => ci.decode(two))).toBe('EINVAL');
  });

  it('PAGE_REQUEST: addr must be 4 KiB aligned; pasid needs PASID_VALID; READ or WRITE is required', () => {
    const codec = BackendMessages.PAGE_REQUEST.request;
    const enc = (v: PageRequestMessage): Buffer => {
      const buf = Buffer.alloc(PageRequestStruct.size);
      PageRequestStruct.encodeInto(buf, 0, v);
      return buf;
    };
    const base: PageRequestMessage = { rid: 0x18, prgi: 1, flags: PageRequestFlag.READ, pasid: 0, addr: 0x7000n };
    expect(errCode(() => codec.decode(enc(base)))).toBe('accepted');
    expect(errCode(() => codec.decode(enc({ ...base, addr: 0x7004n })))).toBe('EINVAL');
    expect(errCode(() => codec.decode(enc({ ...base, addr: 0x7fffn })))).toBe('EINVAL');
    expect(errCode(() => codec.decode(enc({ ...base, pasid: 5 })))).toBe('EINVAL');
    expect(errCode(() => codec.decode(enc({ ...base, flags: PageRequestFlag.PASID_VALID, pasid: 5 })))).toBe('EINVAL');
  });

  it('DEVICE_DMA: WRITE must carry exactly length bytes, READ none', () => {
    const codec = FrontendMessages.DEVICE_DMA.request;
    const hdr = Buffer.alloc(32);
    hdr.writeUInt16LE(0x18, 0);
    hdr[2] = 1; // WRITE
    hdr.writeUInt32LE(4, 12);
    expect(errCode(() => codec.decode(Buffer.concat([hdr, Buffer.alloc(3)])))).toBe('EINVAL');
    expect(errCode(() => codec.decode(Buffer.concat([hdr, Buffer.alloc(4)])))).toBe('accepted');
    hdr[2] = 0; // READ
    expect(errCode(() => codec.decode(Buffer.concat([hdr, Buffer.alloc(4)])))).toBe('EINVAL');
    expect(errCode(() => codec.decode(hdr))).toBe('accepted');
    hdr.writeUInt32LE(0, 12);
    expect(errCode(() => codec.decode(hdr))).toBe('EINVAL');
  });
});
