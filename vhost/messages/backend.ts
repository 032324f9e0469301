/**
 * Back-end → front-end requests on the backend channel (docs/protocol.md §9, §10.11–§10.13). They are
 * answered only when REPLY_ACK was negotiated on the main connection and NEED_REPLY is set,
 * with a u64 ack (0, or a negative errno), as vhost-user's BACKEND_IOTLB_MSG (QEMU docs/interop/vhost-user.rst, "Back-end message types").
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message } from './codec.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { VsvaBackendRequest } from './codes.js';
import { PRGI_MAX } from './page.js';

export const FaultFlag = { PASID_VALID: 1 << 0, WRITE: 1 << 1, PRIV: 1 << 2, EXEC: 1 << 3 } as const;
const FAULT_FLAG_MASK = 0xf;

export interface FaultMessage {
  rid: number;
  /** FaultFlag bits: PASID_VALID, WRITE (request type; clear = read), PRIV, EXEC. */
  flags: number;
  pasid: number;
  /** VT-d fault reason code (8 bits). */
  reason: number;
  addr: bigint;
}

export const FaultStruct = new Struct<FaultMessage>('FAULT', [
  { name: 'rid', type: 'u16', doc: 'requester id of the faulting device' },
  reserved(2),
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID, 1 WRITE (clear: read), 2 PRIV, 3 EXEC', mask: FAULT_FLAG_MASK },
  { name: 'pasid', type: 'u32', doc: 'PASID (with PASID_VALID), else 0', max: PASID_MAX },
  { name: 'reason', type: 'u32', doc: 'VT-d fault reason code', max: 0xff },
  { name: 'addr', type: 'u64', doc: "faulting address, exact: the first byte the access could not reach (the request's addr when its first page faults, else the start of the page that faulted)" },
  reserved(8),
]);

export const FAULT = message<FaultMessage, void>({
  name: 'FAULT', code: VsvaBackendRequest.FAULT, replyKind: 'ack', feature: ProtocolFeature.BACKEND_REQ,
  request: new FixedCodec(FaultStruct, (v) => {
    if ((v.flags & FaultFlag.PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'FAULT: pasid set without PASID_VALID');
  }),
  reply: EMPTY,
  doc: 'An unrecoverable DMA translation fault of one of the VM’s devices.',
});

export const PageRequestFlag = {
  PASID_VALID: 1 << 0,
  /** Last page in group. */
  LPIG: 1 << 1,
  READ: 1 << 2,
  WRITE: 1 << 3,
  EXEC: 1 << 4,
  PRIV: 1 << 5,
} as const;
const PAGE_REQUEST_FLAG_MASK = 0x3f;

export interface PageRequestMessage {
  rid: number;
  /** Page request group index. */
  prgi: number;
  flags: number;
  pasid: number;
  /** Page address (4 KiB aligned). */
  addr: bigint;
}

export const PageRequestStruct = new Struct<PageRequestMessage>('PAGE_REQUEST', [
  { name: 'rid', type: 'u16', doc: 'requester id of the device' },
  { name: 'prgi', type: 'u16', doc: 'page request group index', max: PRGI_MAX },
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID, 1 LPIG, 2 READ, 3 WRITE, 4 EXEC, 5 PRIV', mask: PAGE_REQUEST_FLAG_MASK },
  { name: 'pasid', type: 'u32', doc: 'PASID (with PASID_VALID), else 0', max: PASID_MAX },
  reserved(4),
  { name: 'addr', type: 'u64', doc: 'page address, 4 KiB aligned' },
]);

export const PAGE_REQUEST = message<PageRequestMessage, void>({
  name: 'PAGE_REQUEST', code: VsvaBackendRequest.PAGE_REQUEST, replyKind: 'ack', feature: ProtocolFeature.BACKEND_REQ,
  request: new FixedCodec(PageRequestStruct, (v) => {
    if ((v.flags & PageRequestFlag.PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'PAGE_REQUEST: pasid set without PASID_VALID');
    if ((v.flags & (PageRequestFlag.READ | PageRequestFlag.WRITE)) === 0) fail('EINVAL', 'PAGE_REQUEST: neither READ nor WRITE');
    if (v.addr % PAGE_SIZE !== 0n) fail('EINVAL', 'PAGE_REQUEST: addr is not 4 KiB aligned');
  }),
  reply: EMPTY,
  doc: 'A PRI page request; the guest answers the group with PAGE_RESPONSE on the main channel.',
});

const PASID_FREED_GPASID_VALID = 0x1;
const PasidFreedReason = {
  /** Freed by the host administrator. */
  ADMIN: 0,
  /** The VM's quota was lowered below its use. */
  QUOTA: 1,
  /** The IOASID set was torn down. */
  TEARDOWN: 2,
} as const;

export interface PasidFreedMessage {
  /** Host PASID that was freed. */
  pasid: number;
  /** Guest PASID (SPID) it was known by, with GPASID_VALID. */
  gpasid: number;
  flags: number;
  reason: number;
}

export const PasidFreedStruct = new Struct<PasidFreedMessage>('PASID_FREED', [
  { name: 'pasid', type: 'u32', doc: 'host PASID', max: PASID_MAX },
  { name: 'gpasid', type: 'u32', doc: 'guest PASID (SPID) with GPASID_VALID, else 0', max: PASID_MAX },
  { name: 'flags', type: 'u32', doc: 'bit 0 GPASID_VALID', mask: PASID_FREED_GPASID_VALID },
  { name: 'reason', type: 'u32', doc: '0 ADMIN, 1 QUOTA, 2 TEARDOWN', values: Object.values(PasidFreedReason) },
]);

export const PASID_FREED = message<PasidFreedMessage, void>({
  name: 'PASID_FREED', code: VsvaBackendRequest.PASID_FREED, replyKind: 'ack', feature: ProtocolFeature.BACKEND_REQ,
  request: new FixedCodec(PasidFreedStruct, (v) => {
    if ((v.flags & PASID_FREED_GPASID_VALID) === 0 && v.gpasid !== 0) fail('EINVAL', 'PASID_FREED: gpasid set without GPASID_VALID');
  }),
  reply: EMPTY,
  doc: 'The host freed a PASID of this VM on its own initiative.',
});
