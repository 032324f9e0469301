/**
 * Second-level DMA mappings (docs/protocol.md §10.4), as VFIO_IOMMU_MAP_DMA / UNMAP_DMA: the
 * back-end maps IOVA → guest page (GPA, resolved through SET_MEM_TABLE) → host page.
 */
import { fail } from '../../src/errors.js';
import { ProtocolFeature } from '../wire/features.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, FixedCodec, checkNoWrap, message } from './codec.js';
import { VsvaRequest } from './codes.js';

export const DmaMapFlag = { READ: 1 << 0, WRITE: 1 << 1 } as const;
const DMA_MAP_FLAG_MASK = 0x3;

export interface DmaMapRequest {
  domain: number;
  flags: number;
  iova: bigint;
  gpa: bigint;
  size: bigint;
}

export const DmaMapStruct = new Struct<DmaMapRequest>('DMA_MAP', [
  { name: 'domain', type: 'u32', doc: 'domain id' },
  { name: 'flags', type: 'u32', doc: 'bit 0 READ, bit 1 WRITE (at least one)', mask: DMA_MAP_FLAG_MASK },
  { name: 'iova', type: 'u64', doc: 'I/O virtual address' },
  { name: 'gpa', type: 'u64', doc: 'guest physical address it maps to' },
  { name: 'size', type: 'u64', doc: 'bytes (non-zero)' },
]);

export const DMA_MAP = message<DmaMapRequest, void>({
  name: 'DMA_MAP', code: VsvaRequest.DMA_MAP, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DmaMapStruct, (v) => {
    if (v.flags === 0) fail('EINVAL', 'DMA_MAP: neither READ nor WRITE');
    if (v.size === 0n) fail('EINVAL', 'DMA_MAP: size is 0');
    checkNoWrap('DMA_MAP iova', v.iova, v.size);
    checkNoWrap('DMA_MAP gpa', v.gpa, v.size);
  }),
  reply: EMPTY,
  doc: 'Map [iova, iova+size) of a domain to guest physical memory.',
});

export interface DmaUnmapRequest {
  domain: number;
  iova: bigint;
  size: bigint;
}

export interface DmaUnmapReply {
  unmapped: bigint;
}

export const DmaUnmapStruct = new Struct<DmaUnmapRequest>('DMA_UNMAP', [
  { name: 'domain', type: 'u32', doc: 'domain id' },
  reserved(4),
  { name: 'iova', type: 'u64', doc: 'I/O virtual address' },
  { name: 'size', type: 'u64', doc: 'bytes (non-zero)' },
]);

export const DmaUnmapReplyStruct = new Struct<DmaUnmapReply>('DMA_UNMAP reply', [
  { name: 'unmapped', type: 'u64', doc: 'bytes actually unmapped' },
]);

export const DMA_UNMAP = message<DmaUnmapRequest, DmaUnmapReply>({
  name: 'DMA_UNMAP', code: VsvaRequest.DMA_UNMAP, replyKind: 'status', feature: ProtocolFeature.VSVA,
  request: new FixedCodec(DmaUnmapStruct, (v) => {
    if (v.size === 0n) fail('EINVAL', 'DMA_UNMAP: size is 0');
    checkNoWrap('DMA_UNMAP iova', v.iova, v.size);
  }),
  reply: new FixedCodec(DmaUnmapReplyStruct),
  doc: 'Unmap [iova, iova+size) of a domain.',
});
