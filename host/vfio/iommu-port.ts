/**
 * What the container uAPI needs from the host IOMMU (host/iommu/), as one narrow interface: the
 * VFIO type1 driver's view of the IOMMU API (iommu_domain_alloc, iommu_map/unmap,
 * iommu_attach_device(_pasid), iommu_sva_bind_gpasid, cache_invalidate, page responses).
 * `host-iommu-port.ts` implements it over HostIommu; everything above it speaks host RIDs,
 * host domain IDs and host PASIDs only.
 *
 * Every method checks before it mutates and throws a VsvaError (nothing changed) on failure.
 */
import type { DmaResult } from '../../src/api/types.js';

export interface DeviceCaps {
  /** PASID width in bits; 0 = no PASID capability. */
  pasidBits: number;
  ats: boolean;
  pri: boolean;
}

export interface SlProt {
  read: boolean;
  write: boolean;
}

/** The guest first-level table of a nested binding (iommu_gpasid_bind_data, VT-d vendor part). */
export interface NestedFirstLevel {
  /** First-level root, a GPA translated through the parent domain. */
  flptr: bigint;
  levels: 4 | 5;
  sre: boolean;
  eafe: boolean;
  pcd: boolean;
  pwt: boolean;
  emte: boolean;
  cd: boolean;
  wpe: boolean;
  pat: number;
  emt: number;
}

/** Host PGTT of a RID+PASID attachment made with attachPasid. */
export type AttachPgtt = 'sl' | 'pt';

export interface DmaAccess {
  /** Host PASID the request is tagged with, or null for a request without PASID. */
  pasid: number | null;
  addr: bigint;
  write: boolean;
  priv: boolean;
  exec: boolean;
  /**
   * Do not record a fault (an ATS translation that fails goes back to the device, which may
   * then issue a page request; nothing is reported).
   */
  noReport: boolean;
}

export interface IommuStatsView {
  iotlbHits: number;
  iotlbMisses: number;
  walks: number;
  faults: number;
}

export interface ContainerIommu {
  readonly pasidBits: number;
  /** 5-level first-level paging supported (bind addr_width 57). */
  readonly fl5lp: boolean;
  readonly capReg: bigint;
  readonly ecapReg: bigint;
  /** Host address width (stage-1 output width reported by GET_NESTING_INFO). */
  readonly addrWidth: number;

  addDevice(rid: number, name: string, caps: DeviceCaps): void;
  removeDevice(rid: number): void;

  /** A kernel-managed (second-level) domain; returns its host domain ID. */
  allocDomain(name: string): number;
  freeDomain(did: number): void;
  map(did: number, iova: number, hpa: number, size: number, prot: SlProt): void;
  /** Unmap and flush the IOTLB for the range (kernel-managed domain); returns bytes unmapped. */
  unmap(did: number, iova: number, size: number): number;

  attachRid(rid: number, did: number): void;
  detachRid(rid: number): void;
  attachPasid(rid: number, pasid: number, did: number, pgtt: AttachPgtt): void;
  detachPasid(rid: number, pasid: number): void;
  /** bind_pgtable_pasid: nested over `parentDid` (implicitly attaches the PASID to it). */
  bindNested(rid: number, pasid: number, parentDid: number, fl: NestedFirstLevel): void;
  unbindNested(rid: number, pasid: number): void;

  /** IOTLB of a domain: all, one PASID, or a range (optionally one PASID), leaf-only hint. */
  invalidateIotlb(did: number, pasid: number | null, range: { addr: bigint; size: bigint; leaf: boolean } | null): void;
  /** PASID-entry cache of a device: all PASIDs, or one. */
  invalidatePasidCache(rid: number, pasid: number | null): void;
  /** ATS Enable of a device (DEVICE_CONFIG ATS_ENABLE): off drops its device-TLB and stops filling it. */
  setAtsEnabled(rid: number, on: boolean): void;
  /** Device-TLB of an ATS device: all, one PASID, or a range. */
  invalidateDevTlb(rid: number, pasid: number | null, range: { addr: bigint; size: bigint } | null): void;

  /** One DMA read through the translation engine. */
  dmaRead(rid: number, access: DmaAccess, length: number): DmaResult;
  /** One DMA write through the translation engine. */
  dmaWrite(rid: number, access: DmaAccess, data: Uint8Array): DmaResult;

  stats(): IommuStatsView;
}
