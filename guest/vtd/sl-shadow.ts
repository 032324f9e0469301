/**
 * Caching-mode shadowing of a guest second-level table (PASID entries with PGTT = 2,
 * docs/design.md §3.1) into a host kernel-managed domain, as QEMU does for VFIO with CAP.CM = 1: the guest's
 * SL leaves (IOVA → GPA, R/W) become host DMA_MAP mappings of a domain from DOMAIN_ALLOC, and
 * each IOTLB invalidation re-walks the invalidated range and applies the difference.
 *
 * Extents are tracked per guest leaf (4 KiB, 2 MiB or 1 GiB). A re-walk of [start, end) first
 * widens the range to every extent it touches, so a mapping is only ever unmapped whole. Leaves
 * whose output lies outside guest RAM are not shadowed (a DMA through them faults on the host).
 *
 * Entries the guest's own walk would fault on are not shadowed either, and the range they cover
 * is remembered with the spec's reason (VT-d spec §7.1.3, Appendix A): a reserved bit set in an
 * entry of any level, leaf or not (SSL.3, 0x7A; the reserved masks of src/vtd/page-table.ts
 * `slReservedMask`), a next-level table outside guest RAM (SSL.1, 0x78). The host only sees the
 * missing mapping; `faultReason` gives the guest's reason for a fault in such a range.
 */
import type { Logger } from '../../src/log.js';
import { PTE_ADDR_MASK, leafAddrMask, levelShift, slPresent, slReservedMask, type PageSize, type PtLevel } from '../../src/vtd/page-table.js';
import { wordsFromBytes } from '../../src/vtd/layout.js';
import { DmaMapFlag } from '../../vhost/messages/dma.js';
import type { GuestRam } from '../memory/guest-ram.js';
import { FaultReason } from '../../src/vtd/fault.js';
import { VTD_HAW } from './tables.js';
import type { HostUapi } from '../uapi/host-uapi.js';

export interface SlExtent {
  readonly iova: bigint;
  readonly size: bigint;
  readonly gpa: bigint;
  /** DmaMapFlag bits. */
  readonly flags: number;
}

const SIZE_AT: Record<number, PageSize | undefined> = { 1: '4K', 2: '2M', 3: '1G' };

/** A range of the input space the guest's walk faults on (not shadowed). */
interface SlBadRange {
  readonly size: bigint;
  readonly reason: number;
}

function sameExtent(a: SlExtent, b: SlExtent): boolean {
  return a.iova === b.iova && a.size === b.size && a.gpa === b.gpa && a.flags === b.flags;
}

export class SlDomainShadow {
  /** Shadowed leaves by IOVA. */
  readonly extents = new Map<bigint, SlExtent>();
  /** Ranges of entries the guest's walk faults on, by IOVA. */
  private readonly bad = new Map<bigint, SlBadRange>();
  /** Shadow entries (PASID entries / RID paths) using this domain. */
  users = 0;
  /** Guest domain IDs of the PASID entries using it (IOTLB invalidations select by DID). */
  readonly dids = new Set<number>();

  private constructor(
    private readonly uapi: HostUapi,
    private readonly ram: GuestRam,
    private readonly log: Logger,
    /** GPA of the guest's top-level SL table. */
    readonly slptptr: bigint,
    readonly levels: number,
    /** Host domain id (a replay on a fresh host gives it a new one). */
    public domain: number,
  ) {}

  static async create(uapi: HostUapi, ram: GuestRam, log: Logger, slptptr: bigint, levels: number): Promise<SlDomainShadow> {
    const domain = await uapi.domainAlloc();
    return new SlDomainShadow(uapi, ram, log, slptptr, levels, domain);
  }

  /** Input address width of the guest table. */
  get inputLimit(): bigint {
    return 1n << BigInt(levelShift(this.levels + 1));
  }

  /** The guest's fault reason for an access at `iova` that the shadow left unmapped, or undefined. */
  faultReason(iova: bigint): number | undefined {
    for (const [at, b] of this.bad) if (iova >= at && iova < at + b.size) return b.reason;
    return undefined;
  }

  /**
   * Re-walk [start, end) of the guest table and make the host domain match it.
   * Returns the number of host mappings added and removed.
   */
  async sync(start = 0n, end = this.inputLimit): Promise<{ mapped: number; unmapped: number }> {
    let lo = start < 0n ? 0n : start;
    let hi = end > this.inputLimit ? this.inputLimit : end;
    for (const e of this.extents.values()) {
      if (e.iova < hi && e.iova + e.size > lo) {
        if (e.iova < lo) lo = e.iova;
        if (e.iova + e.size > hi) hi = e.iova + e.size;
      }
    }
    const want = new Map<bigint, SlExtent>();
    for (const [at, b] of this.bad) if (at < hi && at + b.size > lo) this.bad.delete(at);
    if (this.slptptr + 4096n > BigInt(this.ram.size)) this.bad.set(0n, { size: this.inputLimit, reason: FaultReason.SSL_1_SL_ENTRY_ACCESS });
    else this.walk(this.slptptr, this.levels, 0n, lo, hi, want);
    const unmaps: SlExtent[] = [];
    for (const e of this.extents.values()) {
      if (e.iova >= hi || e.iova + e.size <= lo) continue;
      const w = want.get(e.iova);
      if (w !== undefined && sameExtent(w, e)) want.delete(e.iova);
      else unmaps.push(e);
    }
    await Promise.all(
      unmaps.map(async (e) => {
        this.extents.delete(e.iova);
        await this.uapi.dmaUnmap(this.domain, e.iova, e.size);
      }),
    );
    const maps = [...want.values()];
    const results = await Promise.allSettled(
      maps.map(async (e) => {
        await this.uapi.dmaMap(this.domain, e.iova, e.gpa, e.size, e.flags);
        this.extents.set(e.iova, e);
      }),
    );
    for (const r of results) if (r.status === 'rejected') this.log.warn({ err: r.reason, domain: this.domain }, 'SL shadow: host DMA_MAP failed');
    return { mapped: results.filter((r) => r.status === 'fulfilled').length, unmapped: unmaps.length };
  }

  /**
   * Replay on a fresh host (docs/reliability.md §2): allocate a new host domain and map every
   * shadowed extent again from the shadow — not from guest memory, so what the host holds is
   * exactly what it held before (the guest's later IOTLB invalidations bring changes, as
   * before). Returns the mappings made; a refused map drops that extent (logged).
   */
  async replay(uapi: HostUapi): Promise<number> {
    const domain = await uapi.domainAlloc();
    this.domain = domain;
    let n = 0;
    for (const e of [...this.extents.values()]) {
      try {
        await uapi.dmaMap(domain, e.iova, e.gpa, e.size, e.flags);
        n++;
      } catch (err) {
        this.extents.delete(e.iova);
        this.log.warn({ err, domain, iova: e.iova.toString(16) }, 'SL shadow replay: host DMA_MAP failed');
      }
    }
    return n;
  }

  /** Free the host domain (its mappings go with it). */
  async destroy(): Promise<void> {
    this.extents.clear();
    this.bad.clear();
    await this.uapi.domainFree(this.domain);
  }

  private walk(table: bigint, level: number, base: bigint, lo: bigint, hi: bigint, out: Map<bigint, SlExtent>): void {
    const words = wordsFromBytes(this.ram.read(Number(table), 4096), 0, 512);
    const shift = BigInt(levelShift(level));
    const span = 1n << shift;
    const first = lo > base ? Number((lo - base) >> shift) : 0;
    for (let i = first; i < 512; i++) {
      const iova = base + BigInt(i) * span;
      if (iova >= hi) break;
      const pte = words[i]!;
      if (!slPresent(pte)) continue;
      const size = SIZE_AT[level];
      const ps = level > 1 && size !== undefined && (pte & 0x80n) !== 0n;
      if ((pte & slReservedMask(level as PtLevel, ps, VTD_HAW)) !== 0n) {
        this.log.debug({ level, iova: iova.toString(16) }, 'SL shadow: entry with reserved bits not shadowed');
        this.bad.set(iova, { size: span, reason: FaultReason.SSL_3_SL_ENTRY_RESERVED });
        continue;
      }
      if (level === 1 || ps) {
        const gpa = pte & leafAddrMask(size!);
        if (gpa + span > BigInt(this.ram.size)) continue;
        const flags = ((pte & 1n) !== 0n ? DmaMapFlag.READ : 0) | ((pte & 2n) !== 0n ? DmaMapFlag.WRITE : 0);
        out.set(iova, { iova, size: span, gpa, flags });
      } else if (level > 1) {
        const next = pte & PTE_ADDR_MASK;
        if (next + 4096n > BigInt(this.ram.size)) this.bad.set(iova, { size: span, reason: FaultReason.SSL_1_SL_ENTRY_ACCESS });
        else this.walk(next, level - 1, iova, lo, hi, out);
      }
    }
  }
}
