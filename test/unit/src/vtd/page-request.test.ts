import { describe, expect, it } from 'vitest';
import { decodeDescriptor, InvDescType } from '../../../../src/vtd/descriptors.js';
import { PGRP_RESP_CODE, decodePageRequest, encodePageRequest, pageGroupResponseFor } from '../../../../src/vtd/page-request.js';

const REQ = { PP: 1, RID: 0x18, PASID: 5, RDR: 1, WRR: 1, LPIG: 1, PRGI: 0x1a, ADDR: 0x7fff12345000n >> 12n } as const;
const REQ_WORDS = [0x0000000500180101n, 0x00007fff123450d7n, 0n, 0n];

describe('page request descriptor', () => {
  it('encodes to the exact words and decodes back', () => {
    expect(encodePageRequest(REQ)).toEqual(REQ_WORDS);
    const d = decodePageRequest(REQ_WORDS);
    expect(d.reserved).toEqual([]);
    expect(d.fields).toMatchObject({ TYPE: 1n, PP: 1n, RID: 0x18n, PASID: 5n, RDR: 1n, WRR: 1n, LPIG: 1n, PRGI: 0x1an, ER: 0n, PMR: 0n });
  });

  it('flags reserved bits 15:10 and 63:54 of qw0', () => {
    expect(decodePageRequest([REQ_WORDS[0]! | 0x400n | (1n << 54n), REQ_WORDS[1]!, 0n, 0n]).reserved).toEqual([{ word: 0, bits: 0x400n | (1n << 54n) }]);
  });
});

describe('page group response', () => {
  it('answers a request with the same RID, PASID, PRGI and LPIG', () => {
    const w = pageGroupResponseFor(decodePageRequest(REQ_WORDS).fields, PGRP_RESP_CODE.SUCCESS);
    expect(w).toEqual([0x0000000500180019n, 0xd4n, 0n, 0n]);
    const d = decodeDescriptor(w, 1);
    if (d.kind !== 'descriptor' || d.type !== InvDescType.PGRP_RESP) throw new Error('not a page group response');
    expect(d.fields.RESP_CODE).toBe(0n);
    expect(d.fields.PRGI).toBe(0x1an);
    expect(d.reserved).toEqual([]);
  });

  it('carries the failure code and echoes private data when PDP is set', () => {
    const req = decodePageRequest(encodePageRequest({ ...REQ, PDP: 1, PRIVATE_DATA_LO: 0x1111n, PRIVATE_DATA_HI: 0x2222n })).fields;
    const w = pageGroupResponseFor(req, PGRP_RESP_CODE.FAILURE);
    expect(w).toEqual([0x000000050018f039n, 0xd4n, 0x1111n, 0x2222n]);
    expect(() => pageGroupResponseFor(req, 2 as never)).toThrow(/EINVAL/);
  });
});
