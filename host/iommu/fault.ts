/**
 * Translation faults and fault events.
 *
 * The engine keeps the details of the last fault in one reusable `FaultState` (no allocation on
 * the translation path); a plain `IommuFault` record is built only when a fault is reported to a
 * handler or returned from a DMA call. Reason codes are the scalable-mode codes of
 * src/vtd/fault.ts (reference §5 "Fault reason codes").
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

/** The engine's reusable record of the last fault. */
export class FaultState {
  reason = 0;
  rid = 0;
  /** −1 for a request without PASID. */
  pasid = -1;
  /** Faulting address = vpn · 4096 + off (vpn is exact for any 64-bit address). */
  vpn = 0;
  off = 0;
  /** Request flags (constants.ts ACCESS_*). */
  flags = 0;
  /** Fault processing disabled (PASID directory or PASID entry FPD): not reported. */
  fpd = false;

  get addr(): bigint {
    return BigInt(this.vpn) * 4096n + BigInt(this.off);
  }

  /** A fresh record of this fault. */
  toRecord(): IommuFault {
    const write = (this.flags & ACCESS_WRITE) !== 0;
    const rec: IommuFault = {
      reason: this.reason,
      addr: this.addr,
      rid: this.rid,
      write,
      exec: (this.flags & ACCESS_EXEC) !== 0,
      priv: (this.flags & ACCESS_PRIV) !== 0,
      type: write ? FaultRequestType.WRITE : FaultRequestType.READ,
      text: faultReasonInfo(this.reason)?.text ?? `fault reason 0x${this.reason.toString(16)}`,
    };
    if (this.pasid >= 0) rec.pasid = this.pasid;
    return rec;
  }
}
