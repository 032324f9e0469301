/**
 * IOMMU domains (Linux struct iommu_domain; the domain / RID / PASID model of the /dev/iommu
 * proposal, vfio "remove the unused mdev iommu hook" thread, 2021): an I/O page table and the
 * RID / RID+PASID routes attached to it.
 *
 * - 'paging': kernel-managed second-level table (map/unmap); attached routes get PGTT = 2, and
 *   user-managed first-level tables bound on it (nesting parent) get PGTT = 3 with the parent's
 *   DID ("inherit the domain ID in iotlb due to nesting").
 * - 'identity': pass-through (PGTT = 4), HPA = input address. One static instance, DID 1
 *   (Linux FLPT_DEFAULT_DID).
 * - 'sva': a first-level table in host memory managed outside the IOMMU (native SVA: a host
 *   process's page table), attached per PASID with PGTT = 1.
 */
import type { SecondLevelTable } from './sl-table.js';

export type DomainType = 'paging' | 'identity' | 'sva';

/** Host PGTT names as the topology view prints them. */
export type PgttName = 'first-level' | 'second-level' | 'nested' | 'pass-through';

/** First-level configuration of a nested binding (bind_pgtable_pasid) or an SVA domain. */
export interface FirstLevelConfig {
  /** First-level table pointer: a GPA for nested bindings, an HPA for SVA domains. */
  flptr: bigint;
  /** 4- or 5-level paging (FLPM 0 / 1). */
  levels: 4 | 5;
  sre: boolean;
  /** Applied only together with SRE (Linux intel/pasid.c sets WPE only with SRE). */
  wpe: boolean;
  eafe: boolean;
  nxe: boolean;
  ere: boolean;
  smep: boolean;
  pcd: boolean;
  pwt: boolean;
  /** 32-bit PAT value. */
  pat: number;
  /** 3-bit extended memory type. */
  emt: number;
  cd: boolean;
  emte: boolean;
}

/** One route into a domain. */
export interface Attachment {
  readonly rid: number;
  /** The PASID, or null for the RID itself (requests without PASID; PASID entry RID_PASID). */
  readonly pasid: number | null;
  readonly domain: IommuDomain;
  /** Host PGTT written into the PASID entry. */
  readonly pgtt: number;
  /** For nested bindings: the bound first-level table. */
  readonly nested?: FirstLevelConfig;
}

export class IommuDomain {
  /** The routes using the domain (a Set: removing one costs no key string). */
  readonly attachments = new Set<Attachment>();
  freed = false;

  constructor(
    readonly did: number,
    readonly type: DomainType,
    readonly name: string,
    /** The second-level table ('paging' only). */
    readonly table: SecondLevelTable | null,
    /** SLADE in PASID entries of this domain ('paging'). */
    readonly slade: boolean,
    /** SLEE in PASID entries of this domain ('paging'). */
    readonly slee: boolean,
    /** The first-level table ('sva' only). */
    readonly firstLevel: FirstLevelConfig | null,
  ) {}
}
