/**
 * Host cache invalidations (CACHE_INVALIDATE entries, `struct iommu_cache_invalidate_info` of
 * Linux include/uapi/linux/iommu.h 5.10–5.13; docs/protocol.md §10.6) built from the guest's
 * IOTLB-type descriptors.
 *
 * Granularity mapping (the cache × granularity validity table of that uAPI, as Linux
 * drivers/iommu/intel/iommu.c `inv_type_granu_table` states it: DOMAIN × {IOTLB}; PASID ×
 * {IOTLB, DEV_IOTLB}; ADDR × {IOTLB, DEV_IOTLB}):
 * - PIOTLB all-in-PASID → IOTLB / PASID (flags PASID);
 * - PIOTLB page-selective → IOTLB / ADDR (flags PASID, LEAF when IH), 4 KiB × 2^AM;
 * - IOTLB global → IOTLB / DOMAIN;
 * - device-TLB → DEV_IOTLB / ADDR without PASID (the SID's requests without PASID);
 * - PASID-based device-TLB → DEV_IOTLB / ADDR with PASID, or without PASID when G (all PASIDs).
 * The guest DID is not forwarded (ARCHID): host domain ids are the host's own.
 *
 * The batch these entries are collected in, and its pipelining, is the VFIO SVA uAPI's
 * (guest/uapi/vfio-sva-invalidations.ts); iommufd turns them into HWPT_INVALIDATE entries
 * (guest/uapi/iommufd-invalidations.ts).
 */
import {
  IOMMU_CACHE_INV_TYPE,
  cacheInvalidateEntry as entry,
  IOMMU_INV_ADDR_FLAGS,
  IOMMU_INV_GRANU,
  IOMMU_INV_PASID_FLAGS,
  type CacheInvalidateEntry,
} from '../../vhost/messages/invalidate.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';

const U64 = 1n << 64n;

/** IOTLB entries of one PASID (all-in-PASID). */
export function iotlbPasid(pasid: number): CacheInvalidateEntry {
  return entry({ cache: IOMMU_CACHE_INV_TYPE.IOTLB, granularity: IOMMU_INV_GRANU.PASID, flags: IOMMU_INV_PASID_FLAGS.PASID, pasid: BigInt(pasid) });
}

/** IOTLB entries of one PASID in [addr, addr + 4 KiB × 2^am). */
export function iotlbPasidAddr(pasid: number, addr: bigint, am: number, leafOnly: boolean): CacheInvalidateEntry {
  const span = PAGE_SIZE << BigInt(am);
  return entry({
    cache: IOMMU_CACHE_INV_TYPE.IOTLB,
    granularity: IOMMU_INV_GRANU.ADDR,
    flags: IOMMU_INV_ADDR_FLAGS.PASID | (leafOnly ? IOMMU_INV_ADDR_FLAGS.LEAF : 0),
    pasid: BigInt(pasid),
    addr: addr & ~(span - 1n),
    granule_size: PAGE_SIZE,
    nb_granules: 1n << BigInt(am),
  });
}

/** Bits 31:0 of the address of 4 KiB page `page` (a page number below 2^52). */
export function pageAddrLo(page: number): number {
  return ((page % 0x10_0000) * 4096) >>> 0;
}

/** Bits 63:32 of the address of 4 KiB page `page`. */
export function pageAddrHi(page: number): number {
  return Math.floor(page / 0x10_0000);
}

/**
 * Pages [first, first + pages) (page numbers below 2^52) as the fewest blocks a page-selective
 * descriptor names — 2^am pages aligned to their size, am ≤ maxAm (VT-d spec §6.5.2.4, ADDR and
 * AM) — in address order: `block(page, am)` for each. Their union is exactly the range. Allocates
 * nothing.
 */
export function pageBlocks(first: number, pages: number, maxAm: number, block: (page: number, am: number) => void): void {
  let page = first;
  let left = pages;
  while (left > 0) {
    let am = 0;
    let span = 1;
    while (am < maxAm && page % (2 * span) === 0 && 2 * span <= left) {
      am++;
      span *= 2;
    }
    block(page, am);
    page += span;
    left -= span;
  }
}

/** Every IOTLB entry of the VM (global). */
export function iotlbAll(): CacheInvalidateEntry {
  return entry({ cache: IOMMU_CACHE_INV_TYPE.IOTLB, granularity: IOMMU_INV_GRANU.DOMAIN });
}

/**
 * The range a device-TLB descriptor covers: S = 0 → one 4 KiB page; S = 1 → the lowest clear
 * ADDR bit above bit 11 gives the size (bit 12 clear: 8 KiB; bits 13:12 = 01: 16 KiB; …), the
 * address aligned down to it (VT-d spec rev. 5.10 §6.5.2.5 "Device-TLB Invalidate Descriptor";
 * QEMU hw/i386/intel_iommu.c `vtd_process_device_iotlb_desc`).
 */
export function devTlbRange(addr: bigint, s: boolean): { addr: bigint; size: bigint } {
  const a = BigInt.asUintN(64, addr) & ~(PAGE_SIZE - 1n);
  if (!s) return { addr: a, size: PAGE_SIZE };
  let ones = 0n;
  while (ones < 52n && ((a >> (12n + ones)) & 1n) === 1n) ones++;
  let size = PAGE_SIZE << (ones + 1n);
  if (size > U64) size = U64;
  return { addr: size >= U64 ? 0n : a & ~(size - 1n), size };
}

/** Device-TLB entries of one device, with or without a PASID, in a range. */
export function devIotlb(rid: number, pasid: number | undefined, addr: bigint, size: bigint): CacheInvalidateEntry {
  return entry({
    rid,
    cache: IOMMU_CACHE_INV_TYPE.DEV_IOTLB,
    granularity: IOMMU_INV_GRANU.ADDR,
    flags: pasid === undefined ? 0 : IOMMU_INV_ADDR_FLAGS.PASID,
    pasid: BigInt(pasid ?? 0),
    addr,
    granule_size: PAGE_SIZE,
    nb_granules: size / PAGE_SIZE,
  });
}

export { InvalidationBatch, MAX_MESSAGES_IN_FLIGHT } from '../uapi/vfio-sva-invalidations.js';
