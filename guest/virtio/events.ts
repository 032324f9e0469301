/**
 * eventq reports: the spec's fault event (virtio 1.2 §5.13.6, fault reporting) and the project's page-request event
 * (docs/virtio-iommu.md §5.5), their encoding and decoding, and how a host fault (VT-d reason
 * code, docs/protocol.md FAULT) becomes a virtio fault reason.
 */
import { FaultEvent, FaultFlag, FaultReason, PageRequestEvent } from './iommu-spec.js';
import { LeWriter, ReqReader } from './state.js';

export interface FaultReport {
  kind: 'fault';
  reason: number;
  flags: number;
  endpoint: number;
  /** Guest PASID (FaultFlag.PASID set). */
  pasid?: number;
  address: bigint;
}

export interface PageRequestReport {
  kind: 'page-request';
  flags: number;
  endpoint: number;
  /** Guest PASID (FaultFlag.PASID set). */
  pasid?: number;
  address: bigint;
  grpid: number;
}

export type EventReport = FaultReport | PageRequestReport;

/**
 * Virtio fault reason for a host (VT-d scalable-mode) fault reason: faults in the root, context,
 * PASID-directory or PASID-table walk (0x30–0x6f) mean nothing is attached for the RID or
 * RID+PASID → DOMAIN; faults in the first- or second-level walk and the general checks
 * (0x70–0x9f) → MAPPING; anything else → UNKNOWN.
 */
export function virtioFaultReason(vtdReason: number): number {
  if (vtdReason >= 0x30 && vtdReason <= 0x6f) return FaultReason.DOMAIN;
  if (vtdReason >= 0x70 && vtdReason <= 0x9f) return FaultReason.MAPPING;
  return FaultReason.UNKNOWN;
}

/** The fields both reports share (the fault layout, which the page-request event extends). */
function encodeReport(size: number, reason: number, r: { flags: number; endpoint: number; address: bigint; pasid?: number | undefined }): LeWriter {
  const w = new LeWriter(size).u8(FaultEvent.REASON, reason).u32(FaultEvent.FLAGS, r.flags).u32(FaultEvent.ENDPOINT, r.endpoint).u64(FaultEvent.ADDRESS, r.address);
  if (r.pasid !== undefined) w.u32(FaultEvent.PASID, r.pasid);
  return w;
}

export function encodeFault(r: Omit<FaultReport, 'kind'>): Uint8Array {
  return encodeReport(FaultEvent.SIZE, r.reason, r).bytes;
}

export function encodePageRequest(r: Omit<PageRequestReport, 'kind'>): Uint8Array {
  return encodeReport(PageRequestEvent.SIZE, FaultReason.PAGE_REQUEST, r).u32(PageRequestEvent.GRPID, r.grpid).bytes;
}

/**
 * Decode an eventq buffer the way a driver does (Linux drivers/iommu/virtio-iommu.c `viommu_event_handler`): a report whose head reserved bytes are
 * non-zero is ignored (null); an unknown reason is UNKNOWN; `pasid` is read only with
 * FaultFlag.PASID. A page request needs the 32-byte layout.
 */
export function decodeEvent(bytes: Uint8Array): EventReport | null {
  if (bytes.length < FaultEvent.SIZE) return null;
  const r = new ReqReader(bytes);
  if (!r.isZero(1, 3)) return null;
  const reason = r.u8(FaultEvent.REASON);
  const flags = r.u32(FaultEvent.FLAGS);
  const endpoint = r.u32(FaultEvent.ENDPOINT);
  const address = r.u64(FaultEvent.ADDRESS);
  const pasid = flags & FaultFlag.PASID ? r.u32(FaultEvent.PASID) : undefined;
  if (reason === FaultReason.PAGE_REQUEST) {
    if (bytes.length < PageRequestEvent.SIZE) return null;
    const pr: PageRequestReport = { kind: 'page-request', flags, endpoint, address, grpid: r.u32(PageRequestEvent.GRPID) };
    if (pasid !== undefined) pr.pasid = pasid;
    return pr;
  }
  const f: FaultReport = { kind: 'fault', reason: reason <= FaultReason.MAPPING ? reason : FaultReason.UNKNOWN, flags, endpoint, address };
  if (pasid !== undefined) f.pasid = pasid;
  return f;
}
