/**
 * VfioContainer's CACHE_INVALIDATE (VFIO_IOMMU_NESTING_OP_CACHE_INVLD carrying Linux's
 * iommu_cache_invalidate_info entries, v5.10–5.13 include/uapi/linux/iommu.h): each checked
 * entry becomes host IOMMU invalidations of the VM's domains and devices. An address range
 * becomes the aligned power-of-two blocks the descriptors' address mask can express
 * (HostIommu's addressBlocks), or a wider invalidation when it would take too many.
 */
import { isVsvaError, toNegErrno } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { IOMMU_CACHE_INV_TYPE, type CacheInvalidateEntry, type CacheInvalidateReply } from '../../vhost/messages/invalidate.js';
import { addressBlocks } from '../iommu/index.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { ContainerBindings } from './bindings.js';
import { checkInvalidateEntry, type CheckedInvalidate } from './uapi.js';

const log = childLogger('vfio');

/** Ranges and addresses below this convert to numbers exactly. */
const TWO_53 = 2n ** 53n;

/**
 * The address mask `am` when [addr, addr + size) is exactly one block the descriptors' address
 * mask expresses (2^am pages, aligned to its size, am ≤ MAMV), else −1 (addressBlocks splits it).
 */
function singleBlockMask(addr: bigint, size: bigint): number {
  if (addr >= TWO_53 || size >= TWO_53 || size < PAGE_SIZE) return -1;
  const s = Number(size);
  const am = Math.log2(s) - 12;
  if (!Number.isInteger(am) || am > VTD_MAMV || Number(addr) % s !== 0) return -1;
  return am;
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
        const c = checkInvalidateEntry(entries[i]!, i);
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
