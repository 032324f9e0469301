/**
 * PAGE_RESPONSE: the answer to a PAGE_REQUEST group (docs/protocol.md §10.7), carrying Linux's
 * `struct iommu_page_response` fields (include/uapi/linux/iommu.h, 5.10).
 */
import { fail } from '../../src/errors.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, message } from './codec.js';
import { VsvaRequest } from './codes.js';

/** Page request group index is 9 bits (VT-d page request descriptor PRGI). */
export const PRGI_MAX = 0x1ff;
export const PAGE_RESPONSE_PASID_VALID = 0x1;
/** enum iommu_page_response_code (include/uapi/linux/iommu.h): PCI PRI Success / Invalid Request / Response Failure. */
export const IOMMU_PAGE_RESP = { SUCCESS: 0, INVALID: 1, FAILURE: 2 } as const;

export interface PageResponseRequest {
  rid: number;
  flags: number;
  pasid: number;
  /** Page request group index (PRGI). */
  grpid: number;
  code: number;
}

export const PageResponseStruct = new Struct<PageResponseRequest>('PAGE_RESPONSE', [
  { name: 'rid', type: 'u16', doc: 'requester id of the device that sent the page request' },
  reserved(2),
  { name: 'flags', type: 'u32', doc: 'bit 0 PASID_VALID', mask: PAGE_RESPONSE_PASID_VALID },
  { name: 'pasid', type: 'u32', doc: 'PASID of the request (with PASID_VALID), else 0', max: PASID_MAX },
  { name: 'grpid', type: 'u32', doc: 'page request group index (PRGI)', max: PRGI_MAX },
  { name: 'code', type: 'u32', doc: '0 SUCCESS, 1 INVALID, 2 FAILURE', values: [0, 1, 2] },
  reserved(4),
]);

export const PAGE_RESPONSE = message<PageResponseRequest, void>({
  name: 'PAGE_RESPONSE', code: VsvaRequest.PAGE_RESPONSE, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(PageResponseStruct, (v) => {
    if ((v.flags & PAGE_RESPONSE_PASID_VALID) === 0 && v.pasid !== 0) fail('EINVAL', 'PAGE_RESPONSE: pasid set without PASID_VALID');
  }),
  reply: EMPTY,
  doc: 'Answer a PAGE_REQUEST group (iommu_page_response).',
});
