/**
 * What the allocation experiment needs from the system under test, kept abstract so that the
 * orchestration (runner.ts) and the report (report.ts) do not depend on how a scheme reaches
 * the host. schemes.ts implements these over startHost/startGuest and the guest drivers.
 */
import type { AllocScheme } from '../grid.js';

/** An operation the scheme refused; `status` is what the guest saw (errno name, VCRSP status…). */
export class OpFailure extends Error {
  constructor(
    readonly op: 'setup' | 'alloc' | 'bind' | 'dma',
    readonly status: string,
    message?: string,
  ) {
    super(message ?? `${op} failed: ${status}`);
    this.name = 'OpFailure';
  }
}

/** The status label of any error an operation threw. */
export function failureStatus(e: unknown): string {
  if (e instanceof OpFailure) return e.status;
  const code = (e as { code?: unknown })?.code;
  if (typeof code === 'string') return code;
  return (e as Error)?.message?.split(/[:\n]/)[0] ?? String(e);
}

export interface ExperimentHost {
  socket: string;
  pasidBits: number;
  /** IDs the host's IOASID core has in all, and not yet given to a set. */
  capacity(): Promise<{ total: number; available: number }>;
  close(): Promise<void>;
}

/** One VM running a scheme. */
export interface SchemeVm {
  readonly name: string;
  /**
   * Obtain a PASID the way the scheme does: a VCMD ALLOC_PASID round trip to the host
   * (identity), or a guest-private pick (SPID schemes; no host round trip). Throws OpFailure.
   */
  alloc(): Promise<number>;
  /**
   * Make the PASID usable by the VM's device: PASID entry + PASID-cache flush + wait (VT-d), or
   * an ATTACH of a PASID table entry (virtio-iommu). For SPID schemes this is where the host
   * allocates a host PASID. Throws OpFailure.
   */
  bind(pasid: number): Promise<void>;
  /** One device DMA read of `length` bytes through the bound PASID; true when it succeeded. */
  dma(pasid: number, length: number): Promise<boolean>;
  close(): Promise<void>;
}

export interface VmSpec {
  name: string;
  /** IOASID set quota (0 = the rest of the capacity). */
  quota: number;
  /** Kind of the VM's device (default: the scheme's own — `adi` for spid-vtd, else `pf`). */
  device?: 'pf' | 'adi';
}

export interface ExperimentEnv {
  startHost(pasidBits: number): Promise<ExperimentHost>;
  startVm(host: ExperimentHost, scheme: AllocScheme, spec: VmSpec): Promise<SchemeVm>;
  /** Host-side cost of the SPID translation alone (ns per lookup) beside a Map lookup. */
  translationMicro?(): { findBySpidNs: number; mapGetNs: number };
}
