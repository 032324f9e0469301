/**
 * Page request descriptor (256-bit, written by the IOMMU into the page request queue) and the
 * page group response descriptor (type 0x9, submitted by software on the invalidation queue).
 * Sources: VT-d spec ch. 7 ("Page Request Descriptor", "Page Group Response Descriptor"),
 * Linux drivers/iommu/intel/prq.c (`struct page_req_dsc`, `intel_iommu_page_response`).
 *
 * Page request descriptor: qw0 type (7:0, = 1), PP 8, PDP 9, RID 31:16, PASID 51:32, ER 52,
 * PMR 53; qw1 RDR 0, WRR 1, LPIG 2, PRGI 11:3, ADDR 63:12; qw2/qw3 private data. Bits qw0 15:10
 * and 63:54 are reserved.
 */
import { fail } from '../errors.js';
import { bit, bitRange, bits, decode, defineLayout, encode, type Decoded, type FieldInput } from './layout.js';
import { InvDescType, PGRP_RESP_CODE, PGRP_RESP_DESC, encodeDescriptor } from './descriptors.js';

export { PGRP_RESP_CODE, PGRP_RESP_DESC };

/** Page request descriptor type value (QEMU VTD_PRD_TYPE). */
export const PAGE_REQ_DSC_TYPE = 1;
/** Bytes per page request descriptor. */
export const PAGE_REQ_DSC_SIZE = 32;

export const PAGE_REQ_DSC = defineLayout({
  name: 'PAGE_REQ_DSC',
  words: 4,
  fields: [
    bits('TYPE', 0, 7, 0, 'descriptor type (= 1)'),
    bit('PP', 0, 8, 'PASID present'),
    bit('PDP', 0, 9, 'private data present'),
    bits('RID', 0, 31, 16, 'requester ID'),
    bits('PASID', 0, 51, 32),
    bit('ER', 0, 52, 'execute requested'),
    bit('PMR', 0, 53, 'privileged mode requested'),
    bit('RDR', 1, 0, 'read requested'),
    bit('WRR', 1, 1, 'write requested'),
    bit('LPIG', 1, 2, 'last page in group'),
    bits('PRGI', 1, 11, 3, 'page request group index'),
    bits('ADDR', 1, 63, 12, 'page address bits 63:12'),
    bits('PRIVATE_DATA_LO', 2, 63, 0, 'private data qw2'),
    bits('PRIVATE_DATA_HI', 3, 63, 0, 'private data qw3'),
  ],
  reserved: [bitRange(15, 10) | bitRange(63, 54), 0n, 0n, 0n],
});

export type PageRequestFields = Decoded<typeof PAGE_REQ_DSC>['fields'];

/**
 * Encode a page request descriptor; TYPE defaults to 1.
 * @throws VsvaError EINVAL for a value that does not fit its field.
 */
export function encodePageRequest(values: FieldInput<typeof PAGE_REQ_DSC>): bigint[] {
  return encode(PAGE_REQ_DSC, { TYPE: PAGE_REQ_DSC_TYPE, ...values });
}

/** Decode a page request descriptor (never throws for 4 words). */
export function decodePageRequest(words: readonly bigint[]): Decoded<typeof PAGE_REQ_DSC> {
  return decode(PAGE_REQ_DSC, words);
}

export type PageResponseCode = (typeof PGRP_RESP_CODE)[keyof typeof PGRP_RESP_CODE];

/**
 * The 256-bit page group response descriptor answering `req` with `code`: echoes RID, PRGI,
 * LPIG, the PASID when PP is set, and the private data when PDP is set (Linux
 * `intel_svm_page_response`).
 * @throws VsvaError EINVAL for a code that is not 0, 1 or 0xF.
 */
export function pageGroupResponseFor(req: PageRequestFields, code: PageResponseCode): bigint[] {
  if (code !== PGRP_RESP_CODE.SUCCESS && code !== PGRP_RESP_CODE.INVALID && code !== PGRP_RESP_CODE.FAILURE) {
    fail('EINVAL', `page group response code ${String(code)} is not 0, 1 or 0xF`);
  }
  const pdp = req.PDP === 1n;
  return encodeDescriptor(
    InvDescType.PGRP_RESP,
    {
      PP: req.PP,
      PDP: req.PDP,
      RESP_CODE: code,
      RID: req.RID,
      PASID: req.PP === 1n ? req.PASID : 0n,
      LPIG: req.LPIG,
      PRGI: req.PRGI,
      PRIVATE_DATA_LO: pdp ? req.PRIVATE_DATA_LO : 0n,
      PRIVATE_DATA_HI: pdp ? req.PRIVATE_DATA_HI : 0n,
    },
    1,
  );
}
