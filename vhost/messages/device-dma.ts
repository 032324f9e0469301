/**
 * DEVICE_DMA: ask an assigned test device to perform one DMA through the host IOMMU
 * (docs/protocol.md §10.8). A 32-byte header, then the write data; the reply is a 32-byte result
 * header, then the bytes read.
 */
import { fail } from '../../src/errors.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { message, type PayloadCodec } from './codec.js';
import { VsvaRequest } from './codes.js';

export const DeviceDmaOp = { READ: 0, WRITE: 1 } as const;
export const DeviceDmaFlag = { PASID_VALID: 1 << 0, PRIV: 1 << 1, EXEC: 1 << 2 } as const;
const DEVICE_DMA_FLAG_MASK = 0x7;
/** Largest DEVICE_DMA transfer (1 MiB; MAX_REQUEST_PAYLOAD leaves room for the header). */
export const DEVICE_DMA_MAX_LENGTH = 0x10_0000;

export interface DeviceDmaRequest {
  rid: number;
  op: number;
  flags: number;
  pasid: number;
  addr: bigint;
  /** READ: bytes to read. WRITE: must equal data.length. */
  length: number;
  /** WRITE only: the bytes to write (absent or empty for READ). */
  data?: Uint8Array;
}

export const DeviceDmaHeaderStruct = new Struct<Omit<DeviceDmaRequest, 'data'>>('DEVICE_DMA', [
  { name: 'rid', type: 'u16', doc: 'requester id of the device that performs the DMA' },
  { name: 'op', type: 'u8', doc: '0 READ, 1 WRITE', values: [0, 1] },
  reserved(1),
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID, 1 PRIV (privileged), 2 EXEC (execute)', mask: DEVICE_DMA_FLAG_MASK },
  { name: 'pasid', type: 'u32', doc: 'PASID the device tags the request with (PASID_VALID), else 0', max: PASID_MAX },
  { name: 'length', type: 'u32', doc: `bytes to transfer (1–${DEVICE_DMA_MAX_LENGTH})`, max: DEVICE_DMA_MAX_LENGTH },
  { name: 'addr', type: 'u64', doc: 'DMA address (IOVA, or GVA with a PASID)' },
  reserved(8),
]);

const DH = DeviceDmaHeaderStruct.size;

function checkDma(v: Omit<DeviceDmaRequest, 'data'>): void {
  if (v.length === 0) fail('EINVAL', 'DEVICE_DMA: length is 0');
  if ((v.flags & DeviceDmaFlag.PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'DEVICE_DMA: pasid set without PASID_VALID');
  if (v.addr + BigInt(v.length) > 0x1_0000_0000_0000_0000n) fail('EOVERFLOW', 'DEVICE_DMA: addr + length wraps past 2^64');
}

/** 32-byte header, then `length` bytes of data for WRITE (nothing for READ). */
const DeviceDmaCodec: PayloadCodec<DeviceDmaRequest> = {
  sizeOf: (v) => DH + (v.op === DeviceDmaOp.WRITE ? v.length : 0),
  encodeInto(buf, off, v) {
    checkDma(v);
    if (v.op === DeviceDmaOp.WRITE) {
      if (!v.data || v.data.length !== v.length) fail('EINVAL', `DEVICE_DMA: WRITE of ${v.length} bytes carries ${v.data?.length ?? 0} bytes of data`);
      buf.set(v.data, off + DH);
    } else if (v.data && v.data.length !== 0) {
      fail('EINVAL', 'DEVICE_DMA: READ carries data');
    }
    DeviceDmaHeaderStruct.encodeInto(buf, off, v);
  },
  decode(p) {
    if (p.length < DH) fail('EINVAL', `DEVICE_DMA: payload is ${p.length} bytes, shorter than its ${DH}-byte header`);
    const v: DeviceDmaRequest = DeviceDmaHeaderStruct.decode(p, 0);
    checkDma(v);
    const want = DH + (v.op === DeviceDmaOp.WRITE ? v.length : 0);
    if (p.length !== want) fail('EINVAL', `DEVICE_DMA: payload is ${p.length} bytes, expected ${want}`);
    if (v.op === DeviceDmaOp.WRITE) v.data = p.subarray(DH);
    return v;
  },
};

export const DeviceDmaStatus = { OK: 0, FAULT: 1 } as const;
export const DEVICE_DMA_RESULT_PASID_VALID = 0x1;

export interface DeviceDmaReply {
  status: number;
  /** FAULT: VT-d fault reason code; 0 on OK. */
  reason: number;
  /** bit 0 PASID_VALID (FAULT only). */
  flags: number;
  pasid: number;
  /** FAULT: the faulting address; 0 on OK. */
  fault_addr: bigint;
  /** READ that succeeded: the bytes read. */
  data?: Uint8Array;
}

export const DeviceDmaReplyHeaderStruct = new Struct<Omit<DeviceDmaReply, 'data'> & { length: number }>('DEVICE_DMA reply', [
  { name: 'status', type: 'u32', doc: '0 OK, 1 FAULT', values: [0, 1] },
  { name: 'reason', type: 'u32', doc: 'FAULT: fault reason code (VT-d, 8 bits); 0 on OK', max: 0xff },
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID (FAULT)', mask: DEVICE_DMA_RESULT_PASID_VALID },
  { name: 'pasid', type: 'u32', doc: 'FAULT with PASID_VALID: the PASID; else 0', max: PASID_MAX },
  { name: 'fault_addr', type: 'u64', doc: 'FAULT: the faulting address; 0 on OK' },
  { name: 'length', type: 'u32', doc: 'bytes of data that follow (READ with OK: the length read; else 0)', max: DEVICE_DMA_MAX_LENGTH },
  reserved(4),
]);

const RH = DeviceDmaReplyHeaderStruct.size;

function checkDmaReply(v: Omit<DeviceDmaReply, 'data'> & { length: number }): void {
  if (v.status === DeviceDmaStatus.OK && (v.reason !== 0 || v.flags !== 0 || v.pasid !== 0 || v.fault_addr !== 0n)) {
    fail('EINVAL', 'DEVICE_DMA reply: OK with fault fields set');
  }
  if (v.status === DeviceDmaStatus.FAULT && v.length !== 0) fail('EINVAL', 'DEVICE_DMA reply: FAULT with data');
  if ((v.flags & DEVICE_DMA_RESULT_PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'DEVICE_DMA reply: pasid set without PASID_VALID');
}

/** 32-byte result header, then `length` bytes read. */
const DeviceDmaReplyCodec: PayloadCodec<DeviceDmaReply> = {
  sizeOf: (v) => RH + (v.data?.length ?? 0),
  encodeInto(buf, off, v) {
    const h = { ...v, length: v.data?.length ?? 0 };
    checkDmaReply(h);
    DeviceDmaReplyHeaderStruct.encodeInto(buf, off, h);
    if (v.data) buf.set(v.data, off + RH);
  },
  decode(p) {
    if (p.length < RH) fail('EINVAL', `DEVICE_DMA reply: ${p.length} bytes, shorter than its ${RH}-byte header`);
    const h = DeviceDmaReplyHeaderStruct.decode(p, 0);
    checkDmaReply(h);
    if (p.length !== RH + h.length) fail('EINVAL', `DEVICE_DMA reply: ${p.length} bytes, expected ${RH + h.length}`);
    const v: DeviceDmaReply = { status: h.status, reason: h.reason, flags: h.flags, pasid: h.pasid, fault_addr: h.fault_addr };
    if (h.length > 0) v.data = p.subarray(RH);
    return v;
  },
};

export const DEVICE_DMA = message<DeviceDmaRequest, DeviceDmaReply>({
  name: 'DEVICE_DMA', code: VsvaRequest.DEVICE_DMA, replyKind: 'status', feature: ProtocolFeature.VSVA | ProtocolFeature.VSVA_DEVICE_DMA,
  request: DeviceDmaCodec, reply: DeviceDmaReplyCodec,
  doc: 'Ask an assigned test device to perform one DMA through the host IOMMU.',
});
