/**
 * The uAPI experiment (`vsva experiment uapi`): the same guest workload on a VM of each host
 * uAPI — VFIO SVA (docs/protocol.md §10) and iommufd (§13) — and, per operation, the messages
 * that crossed the wire and the latency the guest saw. What the experiment needs from the
 * system is kept abstract (UapiEnv) so that the runner and the report do not depend on how a
 * VM reaches the host; env.ts implements it with a spawned host, startGuest({ uapi }) and the
 * guest driver of either vIOMMU (VT-d or virtio-iommu).
 */
import type { WireCounts } from './wire-tap.js';

export const UAPIS = ['vfio-sva', 'iommufd'] as const;
export type Uapi = (typeof UAPIS)[number];

export const UAPI_LABEL: Record<Uapi, string> = { 'vfio-sva': 'VFIO SVA', iommufd: 'iommufd' };

export type UapiViommu = 'vtd' | 'virtio';

/** What each operation is for the guest driver of each vIOMMU (report.ts prints it). */
export const OP_DESCRIPTION: Record<UapiViommu, string> = {
  vtd: 'a VT-d guest (VCMD 3.1): alloc (VCMD ALLOC_PASID) → bind (PASID entry, PASID-cache invalidation, wait) → dma (64-byte read through the PASID) → invalidate (the process unmaps the page: PASID-based IOTLB and device-TLB invalidation, wait) → fault (the device reads the unmapped page: page request, the guest maps a page, page response, the DMA retried) → unbind (PASID entry cleared, invalidation, wait) → free (VCMD FREE_PASID)',
  virtio:
    'a virtio-iommu guest with the PASID extension (docs/virtio-iommu.md): alloc (a guest-private PASID, no request) → bind (ATTACH_TABLE of the process\'s first-level table) → dma (64-byte read through the PASID) → invalidate (the process unmaps the page: INVALIDATE request) → fault (the device reads the unmapped page: page request on the eventq, the guest maps a page, page response, the DMA retried) → unbind (DETACH_TABLE) → free (guest-private)',
};

/**
 * The operations of one iteration, in the order they run on one guest process (VT-d guest;
 * OP_DESCRIPTION has the virtio-iommu guest's):
 *   alloc       a PASID for the process (VT-d VCMD ALLOC_PASID)
 *   bind        the process's first-level table to the device at that PASID (PASID entry,
 *               PASID-cache invalidation, wait descriptor)
 *   dma         one device DMA read of 64 bytes through the PASID (fills the IOTLB)
 *   invalidate  the process unmaps that page: PASID-based IOTLB and device-TLB invalidation + wait
 *   fault       the device reads the unmapped page again: page request, the guest maps a page,
 *               page response, the DMA retried — the whole round trip as the DMA's caller sees it
 *   unbind      PASID entry cleared, PASID-cache invalidation, wait
 *   free        the PASID returned (VCMD FREE_PASID)
 */
export const UAPI_OPS = ['alloc', 'bind', 'dma', 'invalidate', 'fault', 'unbind', 'free'] as const;
export type UapiOp = (typeof UAPI_OPS)[number];

/** The operations the issue asks the experiment about (the others give context). */
export const HEADLINE_OPS: readonly UapiOp[] = ['bind', 'invalidate', 'unbind', 'fault'];

/** One VM running the workload on one uAPI. */
export interface UapiVm {
  readonly uapi: Uapi;
  readonly name: string;
  /** Messages counted on the VM's connections so far. */
  wire(): WireCounts;
  /** Set up iteration `i`: a fresh guest process with its pages mapped (not measured). */
  prepare(i: number): Promise<void>;
  /** Perform one operation of the current iteration; throws when the guest saw it fail. */
  run(op: UapiOp): Promise<void>;
  /**
   * Wait until every request the VM sent has been answered (a request sent without waiting —
   * e.g. a page response — is then counted with the operation that sent it). Not measured.
   */
  settle(): Promise<void>;
  /** Tear the iteration down, whatever state it reached (not measured). */
  finish(): Promise<void>;
  close(): Promise<void>;
}

export interface UapiHost {
  socket: string;
  close(): Promise<void>;
}

export interface UapiEnv {
  /** How the host runs, for the report (e.g. 'spawned `vsva host` process'). */
  readonly hostKind: string;
  /** The vIOMMU of the guests. */
  readonly viommu: UapiViommu;
  startHost(): Promise<UapiHost>;
  /** A VM on `uapi`; rejects when the VM does not get that uAPI. */
  startVm(host: UapiHost, uapi: Uapi, name: string): Promise<UapiVm>;
}
