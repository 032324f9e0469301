/**
 * The IOMMUFD_* message family's envelope (vhost/messages/iommufd.ts): codes in 0x200–0x2ff
 * gated by VSVA_IOMMUFD, fixed layouts that round-trip, inline driver data and entry arrays
 * checked against their header, reserved bytes, array bounds.
 */
import { describe, it, expect } from 'vitest';
import {
  FrontendMessages, FrontendMessagesByCode, HwptVtdS1Struct, IommufdMessages, IOMMUFD_MAX_INV_ENTRIES, ProtocolFeature,
  VM_SETUP, VM_SETUP_UAPI_IOMMUFD, VtdS1InvalidateStruct, encodePayload, structBytes,
} from '../../../vhost/index.js';
import { expectedErrnoOf } from '../../support/error-code.js';

const { IOMMUFD_HWPT_ALLOC, IOMMUFD_HWPT_INVALIDATE, IOMMUFD_IOAS_MAP, IOMMUFD_IOAS_ALLOW_IOVAS, IOMMUFD_FAULT_READ, IOMMUFD_DESTROY, IOMMUFD_IOAS_IOVA_RANGES } = IommufdMessages;

describe('IOMMUFD message family', () => {
  it('lives at 0x200–0x2ff in the front-end catalogue, every message gated by VSVA and VSVA_IOMMUFD', () => {
    for (const spec of Object.values(IommufdMessages)) {
      expect(spec.code).toBeGreaterThanOrEqual(0x200);
      expect(spec.code).toBeLessThan(0x300);
      expect(spec.feature).toBe(ProtocolFeature.VSVA | ProtocolFeature.VSVA_IOMMUFD);
      expect(FrontendMessagesByCode.get(spec.code)).toBe(spec);
      expect((FrontendMessages as Record<string, unknown>)[spec.name]).toBe(spec);
    }
    expect(Object.keys(IommufdMessages)).toHaveLength(18);
  });

  it('round-trips fixed layouts and refuses non-zero reserved bytes (EOPNOTSUPP) and wrong sizes (EINVAL)', () => {
    const map = { ioas_id: 3, flags: 7, user_va: 0x1000n, length: 0x2000n, iova: 0x4000_0000n };
    expect(IOMMUFD_IOAS_MAP.request.decode(encodePayload(IOMMUFD_IOAS_MAP.request, map))).toEqual(map);
    const d = encodePayload(IOMMUFD_DESTROY.request, { id: 9 });
    expect(d.length).toBe(8);
    d[5] = 1;
    expect(expectedErrnoOf(() => IOMMUFD_DESTROY.request.decode(d))).toBe('EOPNOTSUPP');
    expect(expectedErrnoOf(() => IOMMUFD_DESTROY.request.decode(Buffer.alloc(4)))).toBe('EINVAL');
  });

  it('carries HWPT_ALLOC driver data inline, data_len bytes of it', () => {
    const data = structBytes(HwptVtdS1Struct, [{ flags: 1n, pgtbl_addr: 0x10_0000n, addr_width: 57, __reserved: 0 }]);
    const req = { flags: 8, dev_id: 1, pt_id: 2, data_type: 1, data_len: 24, fault_id: 0, data };
    const wire = encodePayload(IOMMUFD_HWPT_ALLOC.request, req);
    expect(wire.length).toBe(24 + 24);
    expect(IOMMUFD_HWPT_ALLOC.request.decode(wire)).toEqual(req);
    expect(expectedErrnoOf(() => IOMMUFD_HWPT_ALLOC.request.decode(wire.subarray(0, 40)))).toBe('EINVAL');
    expect(expectedErrnoOf(() => encodePayload(IOMMUFD_HWPT_ALLOC.request, { ...req, data_len: 300, data: new Uint8Array(300) }))).toBe('EINVAL');
  });

  it('carries HWPT_INVALIDATE entries inline (entry_len × entry_num), ignoring entry_len when entry_num is 0', () => {
    const data = structBytes(VtdS1InvalidateStruct, [{ addr: 0x1000n, npages: 1n, flags: 1, __reserved: 0 }]);
    const req = { hwpt_id: 4, data_type: 0, entry_len: 24, entry_num: 1, data };
    expect(IOMMUFD_HWPT_INVALIDATE.request.decode(encodePayload(IOMMUFD_HWPT_INVALIDATE.request, req))).toEqual(req);
    const empty = { hwpt_id: 4, data_type: 0, entry_len: 0xffff, entry_num: 0, data: new Uint8Array(0) };
    expect(IOMMUFD_HWPT_INVALIDATE.request.decode(encodePayload(IOMMUFD_HWPT_INVALIDATE.request, empty))).toEqual(empty);
    const big = Buffer.alloc(16);
    big.writeUInt32LE(24, 8);
    big.writeUInt32LE(IOMMUFD_MAX_INV_ENTRIES + 1, 12);
    expect(expectedErrnoOf(() => IOMMUFD_HWPT_INVALIDATE.request.decode(big))).toBe('EINVAL');
    expect(expectedErrnoOf(() => IOMMUFD_HWPT_INVALIDATE.request.decode(Buffer.concat([encodePayload(IOMMUFD_HWPT_INVALIDATE.request, req), Buffer.alloc(1)])))).toBe('EINVAL');
    expect(expectedErrnoOf(() => IOMMUFD_HWPT_INVALIDATE.reply.decode(Buffer.from([0, 0, 0, 0, 1, 0, 0, 0])))).toBe('EINVAL');
  });

  it('bounds its arrays', () => {
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE(65, 4);
    expect(expectedErrnoOf(() => IOMMUFD_IOAS_ALLOW_IOVAS.request.decode(hdr))).toBe('EINVAL');
    const ok = { ioas_id: 1, count: 1, items: [{ start: 0n, last: 0xfffn }] };
    expect(IOMMUFD_IOAS_ALLOW_IOVAS.request.decode(encodePayload(IOMMUFD_IOAS_ALLOW_IOVAS.request, ok))).toEqual(ok);
    expect(expectedErrnoOf(() => encodePayload(IOMMUFD_IOAS_ALLOW_IOVAS.request, { ...ok, count: 2 }))).toBe('EINVAL');
    expect(expectedErrnoOf(() => IOMMUFD_FAULT_READ.request.decode(Buffer.from([1, 0, 0, 0, 0, 1, 1, 0])))).toBe('EINVAL');
    const ranges = { count: 1, out_iova_alignment: 4096n, items: [{ start: 0n, last: (1n << 48n) - 1n }] };
    expect(IOMMUFD_IOAS_IOVA_RANGES.reply.decode(encodePayload(IOMMUFD_IOAS_IOVA_RANGES.reply, ranges))).toEqual(ranges);
  });

  it('VM_SETUP knows flag bit 2 (UAPI_IOMMUFD); other unknown bits stay EOPNOTSUPP', () => {
    const req = { name: 'vm', pasid_quota: 0, flags: 1 | VM_SETUP_UAPI_IOMMUFD, session_token: new Uint8Array(16) };
    expect(VM_SETUP.request.decode(encodePayload(VM_SETUP.request, req))).toEqual(req);
    const bad = encodePayload(VM_SETUP.request, req);
    bad.writeUInt32LE(0x8, 68);
    expect(expectedErrnoOf(() => VM_SETUP.request.decode(bad))).toBe('EOPNOTSUPP');
  });
});
