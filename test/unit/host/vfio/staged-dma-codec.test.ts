/**
 * DEVICE_DMA's STAGED form (vhost/messages/device-dma.ts; docs/protocol.md §10.8 "Staged data"):
 * no data bytes in either direction, staging_gpa only with the flag.
 */
import { describe, it, expect } from 'vitest';
import { FrontendMessages } from '../../../../vhost/messages/catalogue.js';
import { encodePayload } from '../../../../vhost/messages/codec.js';
import { DeviceDmaFlag, DeviceDmaOp, DEVICE_DMA_RESULT_STAGED } from '../../../../vhost/messages/device-dma.js';
import { errorCodeOf } from '../../../support/error-code.js';

const req = FrontendMessages.DEVICE_DMA.request;
const rep = FrontendMessages.DEVICE_DMA.reply;

describe('DEVICE_DMA STAGED', () => {
  const base = { rid: 0x18, pasid: 0, addr: 0x1000n, length: 4096 };
  it('a staged WRITE is the 32-byte header alone; staging_gpa round-trips', () => {
    const p = encodePayload(req, { ...base, op: DeviceDmaOp.WRITE, flags: DeviceDmaFlag.STAGED, staging_gpa: 0x4000_0000_0000n });
    expect(p.length).toBe(32);
    const v = req.decode(p);
    expect(v.staging_gpa).toBe(0x4000_0000_0000n);
    expect(v.data).toBeUndefined();
  });
  it('staging_gpa without STAGED is EINVAL; a staged request with data is EINVAL; staging wrap is EOVERFLOW', () => {
    expect(errorCodeOf(() => encodePayload(req, { ...base, op: DeviceDmaOp.READ, flags: 0, staging_gpa: 0x1000n }))).toBe('EINVAL');
    expect(errorCodeOf(() => encodePayload(req, { ...base, op: DeviceDmaOp.WRITE, flags: DeviceDmaFlag.STAGED, staging_gpa: 0n, data: new Uint8Array(4096) }))).toBe('EINVAL');
    expect(errorCodeOf(() => encodePayload(req, { ...base, op: DeviceDmaOp.READ, flags: DeviceDmaFlag.STAGED, staging_gpa: 0xffff_ffff_ffff_f000n + 1n }))).toBe('EOVERFLOW');
    const raw = encodePayload(req, { ...base, op: DeviceDmaOp.READ, flags: 0 });
    raw.writeBigUInt64LE(0x1000n, 24);
    expect(errorCodeOf(() => req.decode(raw))).toBe('EINVAL');
  });
  it('a staged READ reply carries the length and no data; a FAULT cannot be STAGED', () => {
    const p = encodePayload(rep, { status: 0, reason: 0, flags: DEVICE_DMA_RESULT_STAGED, pasid: 0, fault_addr: 0n, staged_length: 4096 });
    expect(p.length).toBe(32);
    expect(rep.decode(p)).toEqual({ status: 0, reason: 0, flags: DEVICE_DMA_RESULT_STAGED, pasid: 0, fault_addr: 0n, staged_length: 4096 });
    expect(errorCodeOf(() => encodePayload(rep, { status: 1, reason: 5, flags: DEVICE_DMA_RESULT_STAGED, pasid: 0, fault_addr: 0x1000n }))).toBe('EINVAL');
    expect(errorCodeOf(() => encodePayload(rep, { status: 0, reason: 0, flags: DEVICE_DMA_RESULT_STAGED, pasid: 0, fault_addr: 0n, data: new Uint8Array(4) }))).toBe('EINVAL');
  });
});
