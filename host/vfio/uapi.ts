/**
 * The argument checks of the VFIO vSVA container uAPI (Yi L. Liu's VFIO SVA series, 2019–2020),
 * applied to the structures the protocol carries verbatim (BIND_GPASID / UNBIND_GPASID carry
 * `struct iommu_gpasid_bind_data`, CACHE_INVALIDATE carries `struct iommu_cache_invalidate_info`
 * entries). Pure functions: they only read their argument and throw.
 *
 * Errno (Linux v5.10–5.13 drivers/iommu/iommu.c iommu_check_bind_data / iommu_check_cache_invl_data,
 * and the Intel driver):
 *   bind data — argsz below the struct (72 bytes: the VT-d vendor part is required for the VT-d
 *   format), version ≠ 1, format not IOMMU_PASID_FORMAT_INTEL_VTD, flags outside GPASID_VAL,
 *   non-zero padding, vendor flags outside SRE…WPE, addr_width not 48 or 57 (57 only with
 *   5-level first-level support), gpgd not 4 KiB aligned, gpasid above the PASID space → EINVAL.
 *   cache invalidate info — argsz below offsetof(granu) (16), or below the end of the granule
 *   info the granularity uses (pasid_info 32, addr_info 56), version ≠ 1, a cache bit outside
 *   the three defined, granularity ≥ IOMMU_INV_GRANU_NR, the cache × granularity validity
 *   table (ADDR × PASID cache, DOMAIN × DEV_IOTLB), flags outside the granularity's, non-zero
 *   padding, PASID granularity with neither PASID nor ARCHID, an ADDR range that is not a
 *   power-of-two granule ≥ 4 KiB, aligned, with at least one granule and no wrap → EINVAL.
 */
import { fail } from '../../src/errors.js';
import {
  IOMMU_GPASID_BIND_DATA_SIZE,
  IOMMU_GPASID_BIND_VERSION_1,
  IOMMU_PASID_FORMAT_INTEL_VTD,
  IOMMU_SVA_GPASID_VAL,
  IOMMU_SVA_VTD_GPASID_LAST,
  type GpasidBindRequest,
} from '../../vhost/messages/pasid.js';
import {
  IOMMU_CACHE_INVALIDATE_INFO_VERSION_1,
  IOMMU_CACHE_INV_TYPE,
  IOMMU_INV_ADDR_FLAGS,
  IOMMU_INV_GRANU,
  IOMMU_INV_GRANU_NR,
  IOMMU_INV_PASID_FLAGS,
  type CacheInvalidateEntry,
} from '../../vhost/messages/invalidate.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';

/** offsetof(struct iommu_gpasid_bind_data, vendor): the generic part (5.10+ layout). */
export const GPASID_BIND_MINSZ = 56;
/** offsetof(struct iommu_cache_invalidate_info, granu). */
export const CACHE_INVALIDATE_MINSZ = 16;
/** offsetofend(granu.pasid_info) and offsetofend(granu.addr_info). */
export const CACHE_INVALIDATE_PASID_END = 32;
export const CACHE_INVALIDATE_ADDR_END = 56;

const CACHE_MASK = IOMMU_CACHE_INV_TYPE.IOTLB | IOMMU_CACHE_INV_TYPE.DEV_IOTLB | IOMMU_CACHE_INV_TYPE.PASID;
const ADDR_FLAGS_MASK = IOMMU_INV_ADDR_FLAGS.PASID | IOMMU_INV_ADDR_FLAGS.ARCHID | IOMMU_INV_ADDR_FLAGS.LEAF;
const PASID_FLAGS_MASK = IOMMU_INV_PASID_FLAGS.PASID | IOMMU_INV_PASID_FLAGS.ARCHID;

/** What the Intel driver takes from a checked bind: the first-level configuration. */
export interface CheckedBind {
  gpgd: bigint;
  levels: 4 | 5;
  hpasid: number;
  /** Guest PASID (SPID), or null without IOMMU_SVA_GPASID_VAL. */
  gpasid: number | null;
  vtdFlags: bigint;
  pat: number;
  emt: number;
}

/**
 * iommu_uapi_sva_bind_gpasid → iommu_check_bind_data → the Intel driver's checks.
 * `what` names the operation in messages; `fl5lp` says whether 5-level first level is supported.
 */
export function checkBindData(d: GpasidBindRequest, what: string, fl5lp: boolean, forUnbind = false): CheckedBind {
  if (d.argsz < GPASID_BIND_MINSZ) fail('EINVAL', `${what}: argsz ${d.argsz} < ${GPASID_BIND_MINSZ}`);
  if (d.argsz < IOMMU_GPASID_BIND_DATA_SIZE) fail('EINVAL', `${what}: argsz ${d.argsz} leaves out the VT-d vendor data (${IOMMU_GPASID_BIND_DATA_SIZE} bytes needed)`);
  if (d.version !== IOMMU_GPASID_BIND_VERSION_1) fail('EINVAL', `${what}: version ${d.version} is not IOMMU_GPASID_BIND_VERSION_1`);
  if (d.format !== IOMMU_PASID_FORMAT_INTEL_VTD) fail('EINVAL', `${what}: format ${d.format} is not IOMMU_PASID_FORMAT_INTEL_VTD`);
  if ((d.flags & ~IOMMU_SVA_GPASID_VAL) !== 0n) fail('EINVAL', `${what}: unknown flags 0x${(d.flags & ~IOMMU_SVA_GPASID_VAL).toString(16)}`);
  if (d.padding !== 0n) fail('EINVAL', `${what}: padding is not zero`);
  if (d.hpasid === 0n || d.hpasid > BigInt(PASID_MAX)) fail('EINVAL', `${what}: hpasid ${d.hpasid} is not a PASID (1..${PASID_MAX})`);
  const gval = (d.flags & IOMMU_SVA_GPASID_VAL) !== 0n;
  if (gval && d.gpasid > BigInt(PASID_MAX)) fail('EINVAL', `${what}: gpasid ${d.gpasid} is above ${PASID_MAX}`);
  let levels: 4 | 5 = 4;
  if (!forUnbind) {
    const vtdUnknown = d.vtd_flags & ~(IOMMU_SVA_VTD_GPASID_LAST - 1n);
    if (vtdUnknown !== 0n) fail('EINVAL', `${what}: unknown VT-d flags 0x${vtdUnknown.toString(16)}`);
    if (d.addr_width === 57) {
      if (!fl5lp) fail('EINVAL', `${what}: addr_width 57 needs 5-level first-level paging, which this IOMMU does not support`);
      levels = 5;
    } else if (d.addr_width !== 48) {
      fail('EINVAL', `${what}: addr_width ${d.addr_width} is neither 48 nor 57`);
    }
    if ((d.gpgd & 0xfffn) !== 0n) fail('EINVAL', `${what}: gpgd 0x${d.gpgd.toString(16)} is not 4 KiB aligned`);
    if (d.vtd_emt > 7) fail('EINVAL', `${what}: emt ${d.vtd_emt} is not a 3-bit memory type`);
  }
  return {
    gpgd: d.gpgd,
    levels,
    hpasid: Number(d.hpasid),
    gpasid: gval ? Number(d.gpasid) : null,
    vtdFlags: d.vtd_flags,
    pat: d.vtd_pat,
    emt: d.vtd_emt,
  };
}

export type CheckedInvalidate =
  | { granu: 'domain'; cache: number }
  | { granu: 'pasid'; cache: number; pasid: number | null }
  | { granu: 'addr'; cache: number; pasid: number | null; addr: bigint; size: bigint; leaf: boolean };

const TWO_TO_THE_64 = 1n << 64n;

/** iommu_uapi_cache_invalidate → iommu_check_cache_invl_data, then the VT-d range rules. */
export function checkInvalidateEntry(e: CacheInvalidateEntry, i: number): CheckedInvalidate {
  // The entry's name is built only for a refusal: this check runs once per entry on the hot path.
  const w = (): string => `CACHE_INVALIDATE entry ${i}`;
  if (e.argsz < CACHE_INVALIDATE_MINSZ) fail('EINVAL', `${w()}: argsz ${e.argsz} < ${CACHE_INVALIDATE_MINSZ}`);
  if (e.granularity === IOMMU_INV_GRANU.PASID && e.argsz < CACHE_INVALIDATE_PASID_END) fail('EINVAL', `${w()}: argsz ${e.argsz} is too short for pasid_info`);
  if (e.granularity === IOMMU_INV_GRANU.ADDR && e.argsz < CACHE_INVALIDATE_ADDR_END) fail('EINVAL', `${w()}: argsz ${e.argsz} is too short for addr_info`);
  if (e.version !== IOMMU_CACHE_INVALIDATE_INFO_VERSION_1) fail('EINVAL', `${w()}: version ${e.version} is not 1`);
  if ((e.cache & ~CACHE_MASK) !== 0) fail('EINVAL', `${w()}: unknown cache bits 0x${(e.cache & ~CACHE_MASK).toString(16)}`);
  if (e.granularity >= IOMMU_INV_GRANU_NR) fail('EINVAL', `${w()}: granularity ${e.granularity} is not DOMAIN, PASID or ADDR`);
  if (e.granularity === IOMMU_INV_GRANU.ADDR && (e.cache & IOMMU_CACHE_INV_TYPE.PASID) !== 0) fail('EINVAL', `${w()}: the PASID cache has no ADDR granularity`);
  if (e.granularity === IOMMU_INV_GRANU.DOMAIN && (e.cache & IOMMU_CACHE_INV_TYPE.DEV_IOTLB) !== 0) fail('EINVAL', `${w()}: the device TLB has no DOMAIN granularity`);
  if (e.granularity === IOMMU_INV_GRANU.ADDR && (e.flags & ~ADDR_FLAGS_MASK) !== 0) fail('EINVAL', `${w()}: unknown addr_info flags 0x${(e.flags & ~ADDR_FLAGS_MASK).toString(16)}`);
  if (e.granularity === IOMMU_INV_GRANU.PASID && (e.flags & ~PASID_FLAGS_MASK) !== 0) fail('EINVAL', `${w()}: unknown pasid_info flags 0x${(e.flags & ~PASID_FLAGS_MASK).toString(16)}`);
  for (let k = 0; k < e.padding.length; k++) if (e.padding[k] !== 0) fail('EINVAL', `${w()}: padding is not zero`);

  if (e.granularity === IOMMU_INV_GRANU.DOMAIN) return { granu: 'domain', cache: e.cache };
  const hasPasid = (e.flags & IOMMU_INV_PASID_FLAGS.PASID) !== 0;
  if (hasPasid && (e.pasid === 0n || e.pasid > BigInt(PASID_MAX))) fail('EINVAL', `${w()}: pasid ${e.pasid} is not a PASID (1..${PASID_MAX})`);
  const pasid = hasPasid ? Number(e.pasid) : null;
  if (e.granularity === IOMMU_INV_GRANU.PASID) {
    if ((e.flags & PASID_FLAGS_MASK) === 0) fail('EINVAL', `${w()}: pasid_info needs the PASID or ARCHID flag`);
    return { granu: 'pasid', cache: e.cache, pasid };
  }
  const g = e.granule_size;
  if (g < PAGE_SIZE || (g & (g - 1n)) !== 0n) fail('EINVAL', `${w()}: granule_size ${g} is not a power of two of at least 4096`);
  if (e.nb_granules === 0n) fail('EINVAL', `${w()}: nb_granules is 0`);
  if ((e.addr & (g - 1n)) !== 0n) fail('EINVAL', `${w()}: addr 0x${e.addr.toString(16)} is not aligned to the granule`);
  const size = g * e.nb_granules;
  if (e.addr + size > TWO_TO_THE_64) fail('EINVAL', `${w()}: addr + granule_size × nb_granules wraps past 2^64`);
  return { granu: 'addr', cache: e.cache, pasid, addr: e.addr, size, leaf: (e.flags & IOMMU_INV_ADDR_FLAGS.LEAF) !== 0 };
}
