/**
 * Faults and fault events: the one fault record (`IommuFault`) that goes from the translation
 * engine to a device's fault handler, into DMA results and, through the device, into the
 * DEVICE_DMA reply and the FAULT message. The engine keeps the details of its last fault in
 * plain number fields (nothing allocated on a translation) and builds the record only when a
 * fault is reported or returned. Reason codes are the scalable-mode codes of src/vtd/fault.ts
 * (VT-d spec §7.1.3, fault conditions in scalable mode).
 */
import { faultReasonInfo, FaultRequestType, type FaultRequestTypeValue } from '../../src/vtd/fault.js';
import { ACCESS_EXEC, ACCESS_PRIV, ACCESS_WRITE } from './constants.js';

/**
 * Reason 0 is not a VT-d fault: the IOMMU translated the address, but the host physical address
 * is not backed by any host memory region (the bus would answer with an unsupported request).
 * Only DMA calls return it; it is never reported to fault handlers.
 */
export const DMA_UNBACKED_HPA = 0;

/** A fault as reported to handlers and returned from DMA calls. */
export interface IommuFault {
  /** Scalable-mode fault reason (0x30–0x91), or DMA_UNBACKED_HPA. */
  reason: number;
  /** The faulting input address (full address, not page-aligned). */
  addr: bigint;
  /** Requester ID (bus << 8 | devfn). */
  rid: number;
  /** PASID of the request; absent for requests without PASID. */
  pasid?: number;
  write: boolean;
  exec: boolean;
  priv: boolean;
  /** FRCD request type (src/vtd/fault.ts FaultRequestType): WRITE 0 or READ 2. */
  type: FaultRequestTypeValue;
  /** The reason's text (Linux's string for the code). */
  text: string;
  /** The host physical address, for DMA_UNBACKED_HPA. */
  hpa?: bigint;
}

/** What a device's registered handler receives. */
export type IommuFaultEvent =
  | { kind: 'fault'; fault: IommuFault }
  | { kind: 'page-request'; request: PageRequest };

/** A page request (PRI) from a device, as delivered to its fault handler. */
export interface PageRequest {
  rid: number;
  pasid?: number;
  /** Faulting address (page-aligned when reported, as PRI carries page addresses). */
  addr: bigint;
  /** Page request group index (9 bits). */
  prgi: number;
  /** Last page in group. */
  lpig: boolean;
  read: boolean;
  write: boolean;
  exec: boolean;
  priv: boolean;
}

export type FaultHandler = (event: IommuFaultEvent) => void;

/**
 * The record of a fault with `reason` on a request of `rid` / `pasid` (−1: without PASID) with
 * request flags `flags` (constants.ts ACCESS_*) at `addr`.
 */
export function faultRecord(reason: number, rid: number, pasid: number, addr: bigint, flags: number): IommuFault {
  const write = (flags & ACCESS_WRITE) !== 0;
  const rec: IommuFault = {
    reason,
    addr,
    rid,
    write,
    exec: (flags & ACCESS_EXEC) !== 0,
    priv: (flags & ACCESS_PRIV) !== 0,
    type: write ? FaultRequestType.WRITE : FaultRequestType.READ,
    text: faultReasonInfo(reason)?.text ?? `fault reason 0x${reason.toString(16)}`,
  };
  if (pasid >= 0) rec.pasid = pasid;
  return rec;
}
