/**
 * DEVICE_DMA: ask an assigned test device to perform one DMA through the host IOMMU
 * (docs/protocol.md §10.8). A 32-byte header, then the write data; the reply is a 32-byte result
 * header, then the bytes read.
 *
 * STAGED (flag bit 3; docs/protocol.md §10.8, "Staged data"): the bytes do not travel in the
 * message. A WRITE's data lies in guest memory at `staging_gpa` (a region of the memory table)
 * and the request carries none; a READ's data is stored there by the host and the reply carries
 * none (its STAGED flag set, `length` = bytes stored). The device's own access still goes through
 * translation at `addr`; staging_gpa is the VMM's buffer, not a DMA address.
 */
import { fail } from '../../src/errors.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { message, type PayloadCodec } from './codec.js';
import { VsvaRequest } from './codes.js';

export const DeviceDmaOp = { READ: 0, WRITE: 1 } as const;
export const DeviceDmaFlag = { PASID_VALID: 1 << 0, PRIV: 1 << 1, EXEC: 1 << 2, STAGED: 1 << 3 } as const;
const DEVICE_DMA_FLAG_MASK = 0xf;
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
  /** STAGED: guest-physical address of the data (WRITE) or of where it goes (READ); else 0 or absent. */
  staging_gpa?: bigint;
  /** WRITE only, not STAGED: the bytes to write (absent or empty for READ). */
  data?: Uint8Array;
}

type DeviceDmaHeader = Omit<DeviceDmaRequest, 'data' | 'staging_gpa'> & { staging_gpa: bigint };

export const DeviceDmaHeaderStruct = new Struct<DeviceDmaHeader>('DEVICE_DMA', [
  { name: 'rid', type: 'u16', doc: 'requester id of the device that performs the DMA' },
  { name: 'op', type: 'u8', doc: '0 READ, 1 WRITE', values: [0, 1] },
  reserved(1),
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID, 1 PRIV (privileged), 2 EXEC (execute), 3 STAGED (data in guest memory at staging_gpa)', mask: DEVICE_DMA_FLAG_MASK },
  { name: 'pasid', type: 'u32', doc: 'PASID the device tags the request with (PASID_VALID), else 0', max: PASID_MAX },
  { name: 'length', type: 'u32', doc: `bytes to transfer (1–${DEVICE_DMA_MAX_LENGTH})`, max: DEVICE_DMA_MAX_LENGTH },
  { name: 'addr', type: 'u64', doc: 'DMA address (IOVA, or GVA with a PASID)' },
  { name: 'staging_gpa', type: 'u64', doc: 'STAGED: guest-physical address of the data; else 0' },
]);

const DH = DeviceDmaHeaderStruct.size;

function staged(v: { flags: number }): boolean {
  return (v.flags & DeviceDmaFlag.STAGED) !== 0;
}

/** Bytes of data that follow the header: a WRITE's, unless STAGED. */
function inlineBytes(v: DeviceDmaRequest): number {
  return v.op === DeviceDmaOp.WRITE && !staged(v) ? v.length : 0;
}

function checkDma(v: DeviceDmaRequest): void {
  if (v.length === 0) fail('EINVAL', 'DEVICE_DMA: length is 0');
  if (!staged(v) && (v.staging_gpa ?? 0n) !== 0n) fail('EINVAL', 'DEVICE_DMA: staging_gpa set without STAGED');
  if (staged(v) && (v.staging_gpa ?? 0n) + BigInt(v.length) > 0x1_0000_0000_0000_0000n) fail('EOVERFLOW', 'DEVICE_DMA: staging_gpa + length wraps past 2^64');
  if ((v.flags & DeviceDmaFlag.PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'DEVICE_DMA: pasid set without PASID_VALID');
  if (v.addr + BigInt(v.length) > 0x1_0000_0000_0000_0000n) fail('EOVERFLOW', 'DEVICE_DMA: addr + length wraps past 2^64');
}

/**
 * 32-byte header, then `length` bytes of data for a WRITE that is not STAGED (nothing otherwise).
 * The data is written into the frame buffer right behind the header: one buffer, one write.
 */
const DeviceDmaCodec: PayloadCodec<DeviceDmaRequest> = {
  sizeOf: (v) => DH + inlineBytes(v),
  encodeInto(buf, off, v) {
    checkDma(v);
    if (inlineBytes(v) > 0) {
      if (!v.data || v.data.length !== v.length) fail('EINVAL', `DEVICE_DMA: WRITE of ${v.length} bytes carries ${v.data?.length ?? 0} bytes of data`);
      buf.set(v.data, off + DH);
    } else if (v.data && v.data.length !== 0) {
      fail('EINVAL', staged(v) ? 'DEVICE_DMA: a STAGED request carries data' : 'DEVICE_DMA: READ carries data');
    }
    DeviceDmaHeaderStruct.encodeInto(buf, off, { ...v, staging_gpa: v.staging_gpa ?? 0n });
  },
  decode(p) {
    if (p.length < DH) fail('EINVAL', `DEVICE_DMA: payload is ${p.length} bytes, shorter than its ${DH}-byte header`);
    const v: DeviceDmaRequest = DeviceDmaHeaderStruct.decode(p, 0);
    checkDma(v);
    const want = DH + inlineBytes(v);
    if (p.length !== want) fail('EINVAL', `DEVICE_DMA: payload is ${p.length} bytes, expected ${want}`);
    if (inlineBytes(v) > 0) v.data = p.subarray(DH);
    return v;
  },
};

export const DeviceDmaStatus = { OK: 0, FAULT: 1 } as const;
export const DEVICE_DMA_RESULT_PASID_VALID = 0x1;
/** OK READ of a STAGED request: the `length` bytes read are in guest memory at staging_gpa, not in the reply. */
export const DEVICE_DMA_RESULT_STAGED = 0x2;

export interface DeviceDmaReply {
  status: number;
  /** FAULT: VT-d fault reason code; 0 on OK. */
  reason: number;
  /** bit 0 PASID_VALID (FAULT only). */
  flags: number;
  pasid: number;
  /** FAULT: the faulting address; 0 on OK. */
  fault_addr: bigint;
  /** READ that succeeded, not STAGED: the bytes read. */
  data?: Uint8Array;
  /** OK READ with STAGED in flags: bytes stored at the request's staging_gpa. */
  staged_length?: number;
}

export const DeviceDmaReplyHeaderStruct = new Struct<Omit<DeviceDmaReply, 'data'> & { length: number }>('DEVICE_DMA reply', [
  { name: 'status', type: 'u32', doc: '0 OK, 1 FAULT', values: [0, 1] },
  { name: 'reason', type: 'u32', doc: 'FAULT: fault reason code (VT-d, 8 bits); 0 on OK', max: 0xff },
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID (FAULT); bit 1 STAGED (OK READ: the data is at staging_gpa)', mask: DEVICE_DMA_RESULT_PASID_VALID | DEVICE_DMA_RESULT_STAGED },
  { name: 'pasid', type: 'u32', doc: 'FAULT with PASID_VALID: the PASID; else 0', max: PASID_MAX },
  { name: 'fault_addr', type: 'u64', doc: 'FAULT: the faulting address; 0 on OK' },
  { name: 'length', type: 'u32', doc: 'READ with OK: the length read (the bytes that follow, or with STAGED the bytes at staging_gpa); else 0', max: DEVICE_DMA_MAX_LENGTH },
  reserved(4),
]);

const RH = DeviceDmaReplyHeaderStruct.size;

function checkDmaReply(v: Omit<DeviceDmaReply, 'data'> & { length: number }): void {
  if (v.status === DeviceDmaStatus.OK && (v.reason !== 0 || (v.flags & ~DEVICE_DMA_RESULT_STAGED) !== 0 || v.pasid !== 0 || v.fault_addr !== 0n)) {
    fail('EINVAL', 'DEVICE_DMA reply: OK with fault fields set');
  }
  if (v.status === DeviceDmaStatus.FAULT && v.length !== 0) fail('EINVAL', 'DEVICE_DMA reply: FAULT with data');
  if (v.status === DeviceDmaStatus.FAULT && (v.flags & DEVICE_DMA_RESULT_STAGED) !== 0) fail('EINVAL', 'DEVICE_DMA reply: FAULT with STAGED');
  if ((v.flags & DEVICE_DMA_RESULT_PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'DEVICE_DMA reply: pasid set without PASID_VALID');
}

/** 32-byte result header, then `length` bytes read (none when STAGED). */
const DeviceDmaReplyCodec: PayloadCodec<DeviceDmaReply> = {
  sizeOf: (v) => RH + ((v.flags & DEVICE_DMA_RESULT_STAGED) !== 0 ? 0 : (v.data?.length ?? 0)),
  encodeInto(buf, off, v) {
    const isStaged = (v.flags & DEVICE_DMA_RESULT_STAGED) !== 0;
    if (isStaged && v.data !== undefined && v.data.length > 0) fail('EINVAL', 'DEVICE_DMA reply: STAGED with inline data');
    const h = { ...v, length: isStaged ? (v.staged_length ?? 0) : (v.data?.length ?? 0) };
    checkDmaReply(h);
    DeviceDmaReplyHeaderStruct.encodeInto(buf, off, h);
    if (v.data && !isStaged) buf.set(v.data, off + RH);
  },
  decode(p) {
    if (p.length < RH) fail('EINVAL', `DEVICE_DMA reply: ${p.length} bytes, shorter than its ${RH}-byte header`);
    const h = DeviceDmaReplyHeaderStruct.decode(p, 0);
    checkDmaReply(h);
    const isStaged = (h.flags & DEVICE_DMA_RESULT_STAGED) !== 0;
    const want = RH + (isStaged ? 0 : h.length);
    if (p.length !== want) fail('EINVAL', `DEVICE_DMA reply: ${p.length} bytes, expected ${want}`);
    const v: DeviceDmaReply = { status: h.status, reason: h.reason, flags: h.flags, pasid: h.pasid, fault_addr: h.fault_addr };
    if (isStaged) v.staged_length = h.length;
    else if (h.length > 0) v.data = p.subarray(RH);
    return v;
  },
};

export const DEVICE_DMA = message<DeviceDmaRequest, DeviceDmaReply>({
  name: 'DEVICE_DMA', code: VsvaRequest.DEVICE_DMA, replyKind: 'status', feature: ProtocolFeature.VSVA | ProtocolFeature.VSVA_DEVICE_DMA,
  request: DeviceDmaCodec, reply: DeviceDmaReplyCodec,
  doc: 'Ask an assigned test device to perform one DMA through the host IOMMU.',
});
