/**
 * VfioContainer's CACHE_INVALIDATE (VFIO_IOMMU_NESTING_OP_CACHE_INVLD carrying Linux's
 * iommu_cache_invalidate_info entries, v5.10–5.13 include/uapi/linux/iommu.h): each checked
 * entry becomes host IOMMU invalidations of the VM's domains and devices. An address range
 * becomes the aligned power-of-two blocks the descriptors' address mask can express
 * (HostIommu's addressBlocks), or a wider invalidation when it would take too many.
 */
import { isVsvaError, toNegErrno } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import {
  IOMMU_CACHE_INV_TYPE,
  IOMMU_CACHE_INVALIDATE_INFO_VERSION_1,
  IOMMU_INV_ADDR_FLAGS,
  IOMMU_INV_GRANU,
  type CacheInvalidateEntry,
  type CacheInvalidateReply,
} from '../../vhost/messages/invalidate.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { addressBlocks } from '../iommu/index.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { ContainerBindings } from './bindings.js';
import { CACHE_INVALIDATE_ADDR_END, checkInvalidateEntry, type CheckedInvalidate } from './uapi.js';

const log = childLogger('vfio');

/** Ranges and addresses below this convert to numbers exactly. */
const TWO_53 = 2n ** 53n;

/**
 * The address mask `am` when [addr, addr + size) is exactly one block the descriptors' address
 * mask expresses (2^am pages, aligned to its size, am ≤ MAMV), else −1 (addressBlocks splits it).
 */
export function singleBlockMask(addr: bigint, size: bigint): number {
  if (addr >= TWO_53 || size >= TWO_53 || size < PAGE_SIZE) return -1;
  const s = Number(size);
  const am = Math.log2(s) - 12;
  if (!Number.isInteger(am) || am > VTD_MAMV || Number(addr) % s !== 0) return -1;
  return am;
}

const IOTLB_ONLY = IOMMU_CACHE_INV_TYPE.IOTLB;
const PASID_ADDR = IOMMU_INV_ADDR_FLAGS.PASID;
const PASID_ADDR_LEAF = IOMMU_INV_ADDR_FLAGS.PASID | IOMMU_INV_ADDR_FLAGS.LEAF;
const PAGE_N = Number(PAGE_SIZE);
const PASID_MAX_N = BigInt(PASID_MAX);
/** Granules of the largest block one descriptor names (2^MAMV pages). */
const MAX_BLOCK_GRANULES = 1n << BigInt(VTD_MAMV);

/**
 * The address mask of the entry one guest page-selective PASID-based IOTLB flush sends — IOTLB
 * only, ADDR granularity with the PASID flag (and LEAF or not), a PASID in 1..PASID_MAX, argsz
 * and version of v1, zero padding, 4 KiB granules making one aligned block of 2^am pages, am ≤
 * MAMV, below 2^53 — or −1 for any other entry. Such an entry passes checkInvalidateEntry, and
 * applyInvalidate turns it into invalidatePasidIotlbPages(did, pasid, addr, am, leaf) per domain,
 * which is all the fast path does; every other entry takes that general path.
 */
export function pageSelectiveMask(e: CacheInvalidateEntry): number {
  if (e.cache !== IOTLB_ONLY || e.granularity !== IOMMU_INV_GRANU.ADDR || (e.flags !== PASID_ADDR && e.flags !== PASID_ADDR_LEAF)) return -1;
  if (e.argsz < CACHE_INVALIDATE_ADDR_END || e.version !== IOMMU_CACHE_INVALIDATE_INFO_VERSION_1 || e.granule_size !== PAGE_SIZE) return -1;
  if (e.pasid === 0n || e.pasid > PASID_MAX_N || e.addr >= TWO_53 || e.nb_granules > MAX_BLOCK_GRANULES) return -1;
  const pad = e.padding;
  if (pad.length !== 6 || (pad[0]! | pad[1]! | pad[2]! | pad[3]! | pad[4]! | pad[5]!) !== 0) return -1;
  const n = Number(e.nb_granules);
  if (n === 0 || (n & (n - 1)) !== 0 || Number(e.addr) % (n * PAGE_N) !== 0) return -1;
  return 31 - Math.clz32(n);
}

/** An address range of an entry (granularity ADDR); `leaf`: only leaf entries changed. */
interface InvalidateRange {
  addr: bigint;
  size: bigint;
  leaf: boolean;
}

export abstract class ContainerInvalidation extends ContainerBindings {
  /** Entries in order; stops at the first failure and reports how many were handled. */
  cacheInvalidate(entries: CacheInvalidateEntry[]): CacheInvalidateReply {
    // Per message, not per entry: the domains (nothing in the loop adds or frees one) and the
    // last PASID found to be this VM's (nothing in the loop frees one).
    const dids = [...this.domains.values()].map((d) => d.did);
    let owned = -1;
    for (let i = 0; i < entries.length; i++) {
      try {
        const e = entries[i]!;
        const am = pageSelectiveMask(e);
        if (am >= 0) {
          const pasid = Number(e.pasid);
          if (pasid !== owned) {
            this.requirePasid(pasid);
            owned = pasid;
          }
          const leaf = e.flags === PASID_ADDR_LEAF;
          for (let k = 0; k < dids.length; k++) this.iommu.invalidatePasidIotlbPages(dids[k]!, pasid, e.addr, am, leaf);
          this.counters.invalidations++;
          continue;
        }
        const c = checkInvalidateEntry(e, i);
        const pasid = c.granu === 'domain' ? null : c.pasid;
        if (pasid !== null && pasid !== owned) {
          this.requirePasid(pasid);
          owned = pasid;
        }
        this.applyInvalidate(c, pasid, entries[i]!.rid, dids);
        this.counters.invalidations++;
      } catch (e) {
        if (!isVsvaError(e)) throw e;
        log.debug({ vm: this.vmName, entry: i, code: e.code }, e.detail.message);
        this.emit('invalidate', 'CACHE_INVALIDATE', { entries: entries.length, handled: i, error: e.code });
        return { handled: i, first_error: toNegErrno(e) };
      }
    }
    this.emit('invalidate', 'CACHE_INVALIDATE', { entries: entries.length, handled: entries.length });
    return { handled: entries.length, first_error: 0 };
  }

  /** One checked entry whose PASID (if any) is this VM's. */
  private applyInvalidate(c: CheckedInvalidate, pasid: number | null, rid: number, dids: readonly number[]): void {
    const devTlbDev = (c.cache & IOMMU_CACHE_INV_TYPE.DEV_IOTLB) !== 0 ? this.device(rid) : null;
    const range: InvalidateRange | null = c.granu === 'addr' ? c : null;
    if ((c.cache & IOMMU_CACHE_INV_TYPE.PASID) !== 0) {
      for (const dev of this.devices.values()) this.invalidatePasidCacheOf(dev.hostRid, pasid);
    }
    if ((c.cache & IOMMU_CACHE_INV_TYPE.IOTLB) !== 0) {
      for (const did of dids) this.invalidateIotlbOf(did, pasid, range);
    }
    if (devTlbDev !== null && devTlbDev.caps.ats) this.invalidateDevTlbOf(devTlbDev.hostRid, pasid, range);
  }

  /** IOTLB of domain `did`: all, one PASID, or a range (optionally of one PASID). */
  private invalidateIotlbOf(did: number, pasid: number | null, range: InvalidateRange | null): void {
    const io = this.iommu;
    const am = range === null ? -1 : singleBlockMask(range.addr, range.size);
    if (am >= 0) {
      // One aligned power-of-two block (what one guest page-selective descriptor sends): no block list.
      if (pasid === null) io.invalidateIotlbPages(did, range!.addr, am, range!.leaf);
      else io.invalidatePasidIotlbPages(did, pasid, range!.addr, am, range!.leaf);
      return;
    }
    const blocks = range === null ? [] : addressBlocks(range.addr, range.size);
    if (blocks.length === 0) {
      if (pasid === null) io.invalidateIotlbDomain(did);
      else io.invalidatePasidIotlb(did, pasid);
      return;
    }
    for (const b of blocks) {
      if (pasid === null) io.invalidateIotlbPages(did, b.addr, b.am, range!.leaf);
      else io.invalidatePasidIotlbPages(did, pasid, b.addr, b.am, range!.leaf);
    }
  }

  /** PASID-entry cache of host device `rid`: one PASID, or every PASID of every domain it uses. */
  private invalidatePasidCacheOf(rid: number, pasid: number | null): void {
    const dev = this.iommu.device(rid);
    if (pasid !== null) {
      const att = dev.pasidAttachments.get(pasid);
      if (att !== undefined) this.iommu.invalidatePasidCache(att.domain.did, pasid);
      return;
    }
    const dids = new Set<number>();
    for (const att of dev.pasidAttachments.values()) dids.add(att.domain.did);
    if (dev.defaultAttachment !== null) dids.add(dev.defaultAttachment.domain.did);
    for (const did of dids) this.iommu.invalidatePasidCacheDomain(did);
  }

  /** Device-TLB of ATS device `rid`: all, one PASID, or a range. */
  private invalidateDevTlbOf(rid: number, pasid: number | null, range: InvalidateRange | null): void {
    const blocks = range === null ? [] : addressBlocks(range.addr, range.size);
    const which = pasid === null ? { allPasids: true } : { pasid };
    if (blocks.length === 0) {
      this.iommu.invalidateDevTlb(rid, which);
      return;
    }
    for (const b of blocks) this.iommu.invalidateDevTlb(rid, { ...which, addr: b.addr, size: PAGE_SIZE << BigInt(b.am) });
  }
}
