/**
 * Host cache invalidations (CACHE_INVALIDATE entries, `struct iommu_cache_invalidate_info`,
 * reference ioasid-vfio-iommufd.md B.1) built from the guest's IOTLB-type descriptors, and the
 * per-queue-run batch they are collected in (DESIGN §3.1: one CACHE_INVALIDATE per queue run,
 * flushed before any wait descriptor's status write and before any other host request so the
 * host sees them in the guest's order).
 *
 * Granularity mapping (the validity table of B.1: DOMAIN × {IOTLB}; PASID × {IOTLB, DEV_IOTLB};
 * ADDR × {IOTLB, DEV_IOTLB}):
 * - PIOTLB all-in-PASID → IOTLB / PASID (flags PASID);
 * - PIOTLB page-selective → IOTLB / ADDR (flags PASID, LEAF when IH), 4 KiB × 2^AM;
 * - IOTLB global → IOTLB / DOMAIN;
 * - device-TLB → DEV_IOTLB / ADDR without PASID (the SID's requests without PASID);
 * - PASID-based device-TLB → DEV_IOTLB / ADDR with PASID, or without PASID when G (all PASIDs).
 * The guest DID is not forwarded (ARCHID): host domain ids are the host's own.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import {
  CACHE_INVALIDATE_MAX_ENTRIES,
  IOMMU_CACHE_INVALIDATE_INFO_SIZE,
  IOMMU_CACHE_INVALIDATE_INFO_VERSION_1,
  IOMMU_CACHE_INV_TYPE,
  IOMMU_INV_ADDR_FLAGS,
  IOMMU_INV_GRANU,
  IOMMU_INV_PASID_FLAGS,
  type CacheInvalidateEntry,
} from '../../vhost/messages/invalidate.js';
import type { HostPort } from './host-port.js';

const PAGE = 4096n;
const U64 = 1n << 64n;

function entry(e: Partial<CacheInvalidateEntry> & Pick<CacheInvalidateEntry, 'cache' | 'granularity'>): CacheInvalidateEntry {
  return {
    rid: 0,
    argsz: IOMMU_CACHE_INVALIDATE_INFO_SIZE,
    version: IOMMU_CACHE_INVALIDATE_INFO_VERSION_1,
    padding: new Uint8Array(6),
    flags: 0,
    archid: 0,
    pasid: 0n,
    addr: 0n,
    granule_size: 0n,
    nb_granules: 0n,
    ...e,
  };
}

/** IOTLB entries of one PASID (all-in-PASID). */
export function iotlbPasid(pasid: number): CacheInvalidateEntry {
  return entry({ cache: IOMMU_CACHE_INV_TYPE.IOTLB, granularity: IOMMU_INV_GRANU.PASID, flags: IOMMU_INV_PASID_FLAGS.PASID, pasid: BigInt(pasid) });
}

/** IOTLB entries of one PASID in [addr, addr + 4 KiB × 2^am). */
export function iotlbPasidAddr(pasid: number, addr: bigint, am: number, leafOnly: boolean): CacheInvalidateEntry {
  const span = PAGE << BigInt(am);
  return entry({
    cache: IOMMU_CACHE_INV_TYPE.IOTLB,
    granularity: IOMMU_INV_GRANU.ADDR,
    flags: IOMMU_INV_ADDR_FLAGS.PASID | (leafOnly ? IOMMU_INV_ADDR_FLAGS.LEAF : 0),
    pasid: BigInt(pasid),
    addr: addr & ~(span - 1n),
    granule_size: PAGE,
    nb_granules: 1n << BigInt(am),
  });
}

/** Every IOTLB entry of the VM (global). */
export function iotlbAll(): CacheInvalidateEntry {
  return entry({ cache: IOMMU_CACHE_INV_TYPE.IOTLB, granularity: IOMMU_INV_GRANU.DOMAIN });
}

/**
 * The range a device-TLB descriptor covers: S = 0 → one 4 KiB page; S = 1 → the lowest clear
 * ADDR bit above bit 11 gives the size (bit 12 clear: 8 KiB; bits 13:12 = 01: 16 KiB; …), the
 * address aligned down to it (reference §3 "0x3 Device-TLB").
 */
export function devTlbRange(addr: bigint, s: boolean): { addr: bigint; size: bigint } {
  const a = BigInt.asUintN(64, addr) & ~(PAGE - 1n);
  if (!s) return { addr: a, size: PAGE };
  let ones = 0n;
  while (ones < 52n && ((a >> (12n + ones)) & 1n) === 1n) ones++;
  let size = PAGE << (ones + 1n);
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
    granule_size: PAGE,
    nb_granules: size / PAGE,
  });
}

/** CACHE_INVALIDATE entries collected during one queue run. */
export class InvalidationBatch {
  private entries: CacheInvalidateEntry[] = [];
  /** Messages sent, entries handled and entries the host refused, over the model's life. */
  readonly counters = { messages: 0, entries: 0, refused: 0 };

  constructor(
    private readonly host: HostPort,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  get pending(): number {
    return this.entries.length;
  }

  add(e: CacheInvalidateEntry): void {
    this.entries.push(e);
  }

  /**
   * Send what was collected (one message per 1024 entries). An entry the host refuses is
   * logged and skipped; the ones after it are sent again.
   */
  async flush(): Promise<void> {
    let todo = this.entries;
    this.entries = [];
    while (todo.length > 0) {
      const chunk = todo.slice(0, CACHE_INVALIDATE_MAX_ENTRIES);
      this.counters.messages++;
      this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: 'CACHE_INVALIDATE', args: { entries: chunk.length } });
      let handled = chunk.length;
      try {
        const r = await this.host.call('CACHE_INVALIDATE', { entries: chunk });
        handled = r.handled;
        if (r.first_error !== 0) {
          this.counters.refused++;
          this.log.warn({ entry: handled, errno: r.first_error }, 'host refused a cache invalidation entry');
          handled++;
        }
      } catch (e) {
        this.counters.refused += chunk.length;
        this.log.warn({ err: e }, 'CACHE_INVALIDATE failed');
      }
      this.counters.entries += Math.min(handled, chunk.length);
      todo = todo.slice(Math.max(1, Math.min(handled, chunk.length)));
    }
  }
}
