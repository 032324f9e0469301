/**
 * The host uAPI a VM's vIOMMU model speaks, behind one interface (docs/protocol.md §13.12): the
 * VT-d and virtio-iommu models say *what* the host must do — route a device's PASID through a
 * guest first-level table, pass it through, or through a shadow domain; map guest memory into a
 * domain; flush IOTLB entries; answer a page request — and an implementation says it in one
 * uAPI:
 *
 * - vfio-sva.ts: the VFIO SVA uAPI of Yi L. Liu's "[RFC v1 0/4] vfio: support Shared Virtual
 *   Addressing" (2019) — DEVICE_ADD, DOMAIN_ALLOC, ATTACH, BIND_GPASID, CACHE_INVALIDATE,
 *   PAGE_RESPONSE (docs/protocol.md §10);
 * - iommufd.ts: Linux iommufd (include/uapi/linux/iommufd.h) as QEMU's intel-iommu drives it
 *   for nested translation of assigned devices (hw/i386/intel_iommu.c, hw/vfio/iommufd.c) —
 *   IOAS, nest-parent and nested HWPTs, PASID attach / replace, HWPT_INVALIDATE, the fault queue
 *   (docs/protocol.md §13).
 *
 * Domains are the model's handles: domain 0 is the VM's GPA space (guest RAM mapped at
 * IOVA = GPA, what every first-level table nests on); other domains come from `domainAlloc`.
 * The same guest drivers and workloads run on either uAPI; only the messages on the wire differ.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { BackendEvent, FrontendClient } from '../../vhost/roles/frontend.js';
import type { InvalidationSink } from './invalidation-sink.js';

export type UapiKind = 'vfio-sva' | 'iommufd';

/** How a uAPI reaches the host: typed requests by message name (guest/viommu.ts HostCalls). */
export type HostCalls = Pick<FrontendClient, 'call'>;

/** An assigned device as the VM announces it (guest/viommu.ts GuestDevice). */
export interface UapiDevice {
  readonly bdf: string;
  readonly rid: number;
  readonly kind: 'pf' | 'adi';
  /** DeviceCap bits (PASID, ATS, PRI, …). */
  readonly caps: number;
  readonly pasidWidth: number;
}

export const UAPI_KINDS: readonly UapiKind[] = ['vfio-sva', 'iommufd'];

/** A guest first-level table as a PASID entry with PGTT 1 describes it (the bind data of a nested route). */
export interface FirstLevelTable {
  /** Guest first-level table root (GPA). */
  readonly flptr: bigint;
  /** 48 (4-level) or 57 (5-level). */
  readonly addrWidth: number;
  /** IOMMU_SVA_VTD_GPASID flag bits (SRE, EAFE, PCD, PWT, EMTE, CD, WPE). */
  readonly vtdFlags: bigint;
  readonly pat: number;
  readonly emt: number;
}

/** Where a device's PASID is routed. */
export type PasidRoute =
  /** Nested: the guest first-level table over the GPA domain. */
  | { readonly kind: 'nested'; readonly table: FirstLevelTable }
  /** Pass-through: the GPA domain. */
  | { readonly kind: 'pt' }
  /** Second level: a domain from domainAlloc (a shadow of a guest second-level table). */
  | { readonly kind: 'sl'; readonly domain: number };

/** A PASID of a device: the guest's and the one the host knows (equal unless guest-private). */
export interface PasidRef {
  readonly rid: number;
  readonly gpasid: number;
  readonly hpasid: number;
  /** The host PASID was allocated with PASID_ALLOC from the VM's IOASID set (VCMD, virtio). */
  readonly global: boolean;
}

/** A page response (PAGE_RESPONSE's fields; code IOMMU_PAGE_RESP). */
export interface PageResponseArgs {
  readonly rid: number;
  /** The PASID the host reported the request with, or null (no PASID). */
  readonly pasid: number | null;
  readonly prgi: number;
  readonly code: number;
}

/** What the host told the VM at bring-up (GET_HW_INFO on iommufd; null fields on VFIO SVA). */
export interface HostHwInfo {
  readonly cap: bigint | null;
  readonly ecap: bigint | null;
}

export interface HostUapi {
  readonly kind: UapiKind;
  /**
   * The same uAPI state reached through other calls (a replay on a fresh host goes to the new
   * client directly, before the link is up).
   */
  via(host: HostCalls): HostUapi;
  /** Whether a route can be changed in place (iommufd REPLACE), without tearing the old one down first. */
  readonly replaces: boolean;
  /**
   * Whether a route at a global PASID holds that PASID: its PASID_FREE is deferred until the
   * route is removed, so the VMM removes the routes of a PASID the guest frees (iommufd
   * GLOBAL_PASID). False: freeing a PASID tears its routes down on the host (VFIO SVA).
   */
  readonly routesHoldPasids: boolean;
  /**
   * Bring-up after VM_SETUP and SET_MEM_TABLE on a fresh host: the devices assigned and the
   * GPA domain (domain 0) mapping guest RAM [0, ramSize), every device's RID attached to it.
   * Forgets every object of a previous host.
   */
  announce(devices: readonly UapiDevice[], ramSize: number): Promise<void>;
  /**
   * IDs of the host objects the uAPI holds (iommufd: IOASes, HWPTs, the fault queue), for the
   * reconciliation after a resume: the VM's objects not among them were left by an allocation
   * whose reply was lost. Null: the uAPI has no such objects (VFIO SVA).
   */
  hostObjects(): ReadonlySet<number> | null;
  /** The host IOMMU's registers as GET_HW_INFO reported them (iommufd), for inspection. */
  hwInfo(rid: number): HostHwInfo;

  /** Route `p` as `route`. `replacing`: something is routed there now (only when `replaces`). */
  routePasid(p: PasidRef, route: PasidRoute, replacing: boolean): Promise<void>;
  /** Remove the route of `p` (it was `route`). */
  unroutePasid(p: PasidRef, route: PasidRoute): Promise<void>;
  /** Route a device's requests without PASID through `domain`; `from`: the domain they use now (null: none). */
  attachRid(rid: number, from: number | null, domain: number): Promise<void>;
  /** Block a device's requests without PASID (they used `domain`). */
  detachRid(rid: number, domain: number): Promise<void>;

  domainAlloc(): Promise<number>;
  domainFree(domain: number): Promise<void>;
  /** Map [gpa, gpa + size) of guest RAM at `iova` of `domain` (DmaMapFlag READ / WRITE). */
  dmaMap(domain: number, iova: bigint, gpa: bigint, size: bigint, flags: number): Promise<void>;
  dmaUnmap(domain: number, iova: bigint, size: bigint): Promise<void>;

  /** A batch of IOTLB flushes for the model's invalidation runs (cache-invalidations.ts contract). */
  invalidations(opts: { log: Logger; trace: TraceBus; vm: string }): InvalidationSink;
  pageResponse(r: PageResponseArgs): Promise<void>;
  /**
   * A backend message as the models know them: iommufd's IOMMUFD_FAULT becomes the PAGE_REQUEST
   * it reports (the cookie is remembered for the response); others pass unchanged.
   */
  backendEvent(ev: BackendEvent): BackendEvent;
}
