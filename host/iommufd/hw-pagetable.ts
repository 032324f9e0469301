/**
 * HW page tables (drivers/iommu/iommufd/hw_pagetable.c) on the host IOMMU:
 * - paging HWPT: a host paging domain (second level) built from an IOAS and kept identical to
 *   it; NEST_PARENT makes it a parent for nested HWPTs; an automatic one is created when a
 *   device is attached to an IOAS directly (iommufd_device_auto_get_domain) and destroyed with
 *   its last attachment.
 * - nested HWPT: a user-managed VT-d stage-1 table (struct iommu_hwpt_vtd_s1: first-level
 *   table GPA, address width 48 / 57, SRE / EAFE / WPE) over a nest-parent paging HWPT. On the
 *   host IOMMU an attachment of it is a nested PASID entry (PGTT 3, Linux intel/nested.c and
 *   intel_pasid_setup_nested) with the parent's DID and second level.
 *
 * Driver data and invalidation entries arrive as the user's bytes and are read as
 * copy_struct_from_user does (include/linux/uaccess.h): shorter than the struct → EINVAL,
 * longer with a non-zero byte past it → E2BIG.
 */
import { fail } from '../../src/errors.js';
import { IOMMU_VTD_INV_FLAGS_LEAF, IOMMU_VTD_S1, HwptVtdS1Struct, VtdS1InvalidateStruct, type HwptVtdS1, type VtdS1Invalidate } from '../../vhost/messages/iommufd.js';
import type { IommuDomain } from '../iommu/index.js';
import type { FaultQueue } from './fault-queue.js';
import type { Ioas, IoasMirror, IoasProt } from './ioas.js';
import type { IommufdObject } from './object-table.js';

const VTD_S1_FLAGS = IOMMU_VTD_S1.SRE | IOMMU_VTD_S1.EAFE | IOMMU_VTD_S1.WPE;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** The host domain operations a paging HWPT needs (HostIommu's map / unmap by DID). */
export interface PagingDomainOps {
  map(did: number, iova: bigint, hpa: bigint, size: bigint, prot: { read: boolean; write: boolean }): void;
  unmap(did: number, iova: bigint, size: bigint): bigint;
}

export class HwptPaging implements IommufdObject, IoasMirror {
  readonly kind = 'hwpt-paging' as const;
  users = 0;
  /** Nested HWPTs on this one. */
  readonly children = new Set<HwptNested>();

  constructor(
    readonly id: number,
    readonly ioas: Ioas,
    readonly domain: IommuDomain,
    private readonly ops: PagingDomainOps,
    readonly nestParent: boolean,
    /** IOMMU_HWPT_ALLOC_PASID: may be attached to PASIDs. */
    readonly pasidCapable: boolean,
    /** Created by an attach to the IOAS; destroyed with its last attachment. */
    readonly auto: boolean,
    readonly fault: FaultQueue | null,
  ) {}

  map(iova: bigint, hpa: number, length: bigint, prot: IoasProt): void {
    this.ops.map(this.domain.did, iova, BigInt(hpa), length, prot);
  }

  unmap(iova: bigint, length: bigint): void {
    this.ops.unmap(this.domain.did, iova, length);
  }
}

/** The checked first-level configuration of a nested HWPT. */
export interface VtdS1Config {
  flptr: bigint;
  levels: 4 | 5;
  sre: boolean;
  eafe: boolean;
  wpe: boolean;
}

export class HwptNested implements IommufdObject {
  readonly kind = 'hwpt-nested' as const;
  users = 0;

  constructor(
    readonly id: number,
    readonly parent: HwptPaging,
    readonly s1: VtdS1Config,
    readonly pasidCapable: boolean,
    readonly fault: FaultQueue | null,
  ) {}
}

export type Hwpt = HwptPaging | HwptNested;

/** copy_struct_from_user: `bytes` as a struct of `size` bytes (EINVAL shorter, E2BIG non-zero tail). */
export function structFromUser(bytes: Uint8Array, size: number, what: string): Buffer {
  if (bytes.length < size) fail('EINVAL', `${what}: ${bytes.length} bytes, the struct has ${size}`);
  for (let i = size; i < bytes.length; i++) if (bytes[i] !== 0) fail('E2BIG', `${what}: non-zero byte at offset ${i}, past the ${size}-byte struct`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, size);
}

/**
 * struct iommu_hwpt_vtd_s1 → the nested configuration (Linux intel/nested.c
 * intel_iommu_domain_alloc_nested, intel_pasid_setup_nested): unknown flags or a non-zero
 * __reserved → EOPNOTSUPP; address width other than 48 / 57, or a table address that is not
 * 4 KiB aligned or beyond the parent's input width → EINVAL.
 */
export function parseVtdS1(data: Uint8Array, parentWidth: number, what: string): VtdS1Config {
  const v: HwptVtdS1 = HwptVtdS1Struct.decode(structFromUser(data, HwptVtdS1Struct.size, what), 0);
  if ((v.flags & ~VTD_S1_FLAGS) !== 0n) fail('EOPNOTSUPP', `${what}: unknown VT-d stage-1 flags 0x${(v.flags & ~VTD_S1_FLAGS).toString(16)}`);
  if (v.__reserved !== 0) fail('EOPNOTSUPP', `${what}: __reserved is not 0`);
  if (v.addr_width !== 48 && v.addr_width !== 57) fail('EINVAL', `${what}: address width ${v.addr_width} is not 48 or 57`);
  if (v.pgtbl_addr % 4096n !== 0n) fail('EINVAL', `${what}: first-level table 0x${v.pgtbl_addr.toString(16)} is not 4 KiB aligned`);
  if (v.pgtbl_addr >= 1n << BigInt(parentWidth)) fail('EINVAL', `${what}: first-level table 0x${v.pgtbl_addr.toString(16)} is beyond the parent's ${parentWidth}-bit width`);
  return {
    flptr: v.pgtbl_addr,
    levels: v.addr_width === 57 ? 5 : 4,
    sre: (v.flags & IOMMU_VTD_S1.SRE) !== 0n,
    eafe: (v.flags & IOMMU_VTD_S1.EAFE) !== 0n,
    wpe: (v.flags & IOMMU_VTD_S1.WPE) !== 0n,
  };
}

/** One checked invalidation: a page range, or everything of the PASID (`all`). */
export interface VtdS1Range {
  all: boolean;
  addr: bigint;
  /** Bytes (when not `all`). */
  size: bigint;
  leaf: boolean;
}

/**
 * Entry `index` of an IOMMU_HWPT_INVALIDATE array of struct iommu_hwpt_vtd_s1_invalidate (Linux
 * intel/nested.c intel_nested_cache_invalidate_user): E2BIG / EINVAL as structFromUser; unknown
 * flags or a non-zero __reserved → EOPNOTSUPP; an unaligned address, or npages U64_MAX with a
 * non-zero address → EINVAL. addr 0 with npages U64_MAX, or a range past 2^64, is everything.
 */
export function parseVtdS1Invalidate(data: Uint8Array, entryLen: number, index: number): VtdS1Range {
  const what = `IOMMUFD_HWPT_INVALIDATE entry ${index}`;
  const raw = data.subarray(index * entryLen, (index + 1) * entryLen);
  const e: VtdS1Invalidate = VtdS1InvalidateStruct.decode(structFromUser(raw, VtdS1InvalidateStruct.size, what), 0);
  if ((e.flags & ~IOMMU_VTD_INV_FLAGS_LEAF) !== 0 || e.__reserved !== 0) fail('EOPNOTSUPP', `${what}: unknown flags 0x${e.flags.toString(16)} or non-zero __reserved`);
  if (e.addr % 4096n !== 0n) fail('EINVAL', `${what}: address 0x${e.addr.toString(16)} is not 4 KiB aligned`);
  if (e.npages === U64_MAX && e.addr !== 0n) fail('EINVAL', `${what}: npages U64_MAX needs address 0`);
  const leaf = (e.flags & IOMMU_VTD_INV_FLAGS_LEAF) !== 0;
  const size = e.npages * 4096n;
  if (e.npages === U64_MAX || e.addr + size > U64_MAX + 1n) return { all: true, addr: 0n, size: 0n, leaf };
  return { all: false, addr: e.addr, size, leaf };
}
