/**
 * IOTLB flushes of a VM on the iommufd uAPI: IOMMUFD_HWPT_INVALIDATE (docs/protocol.md §13.9;
 * include/uapi/linux/iommufd.h `struct iommu_hwpt_invalidate` with
 * `struct iommu_hwpt_vtd_s1_invalidate` entries), as QEMU's intel-iommu flushes the stage-1
 * caches of a nested HWPT when the guest invalidates its PASID-based IOTLB
 * (hw/i386/intel_iommu.c, PIOTLB and IOTLB descriptors → the nested HWPTs of the affected
 * PASIDs).
 *
 * The model hands over host-PASID-based flushes (InvalidationSink); each becomes one VT-d
 * stage-1 entry for every nested HWPT routed at that PASID:
 * - all of a PASID (PIOTLB G=2, IOTLB domain-selective) → addr 0, npages U64_MAX;
 * - a page range (PIOTLB G=3, IOTLB page-selective) → addr, npages 2^AM, LEAF when IH;
 * - IOTLB global → every nested HWPT of the VM, everything;
 * - device-TLB entries → nothing: the kernel flushes the device TLB of every device attached to
 *   a HWPT it invalidates (Linux drivers/iommu/intel/nested.c `intel_nested_cache_invalidate_user`
 *   → `cache_tag_flush_range`), and IOAS_UNMAP does for the paging HWPTs.
 *
 * Batching: entries are collected per HWPT during a run and `flush` sends one HWPT_INVALIDATE
 * per HWPT (up to IOMMUFD_MAX_INV_ENTRIES entries each), all without waiting for each other, and
 * waits for every reply. The reply's handled count says where the host stopped: the failing
 * entry is logged and counted as refused, and the entries after it are sent again.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { IOMMU_CACHE_INV_TYPE, IOMMU_INV_ADDR_FLAGS, IOMMU_INV_GRANU, type CacheInvalidateEntry } from '../../vhost/messages/invalidate.js';
import {
  IOMMU_HWPT_INVALIDATE_DATA,
  IOMMU_VTD_INV_FLAGS_LEAF,
  IOMMUFD_MAX_INV_ENTRIES,
  VtdS1InvalidateStruct,
  structBytes,
  type VtdS1Invalidate,
} from '../../vhost/messages/iommufd.js';
import type { HostCalls } from './host-uapi.js';
import type { InvalidationSink } from './invalidation-sink.js';

export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Where the nested HWPTs are (the iommufd uAPI's routing state). */
export interface NestedHwptIndex {
  /** Nested HWPTs routed at host PASID `hpasid` (any device). */
  nestedAt(hpasid: number): readonly number[];
  /** Every nested HWPT of the VM. */
  allNested(): readonly number[];
}

const ALL: VtdS1Invalidate = { addr: 0n, npages: U64_MAX, flags: 0, __reserved: 0 };

export class IommufdInvalidationBatch implements InvalidationSink {
  private readonly byHwpt = new Map<number, VtdS1Invalidate[]>();
  readonly counters = { messages: 0, entries: 0, refused: 0 };

  constructor(
    private readonly host: HostCalls,
    private readonly index: NestedHwptIndex,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  get pending(): number {
    let n = 0;
    for (const l of this.byHwpt.values()) n += l.length;
    return n;
  }

  add(e: CacheInvalidateEntry): void {
    if ((e.cache & IOMMU_CACHE_INV_TYPE.IOTLB) === 0) return; // device-TLB / PASID cache: the kernel's part
    switch (e.granularity) {
      case IOMMU_INV_GRANU.DOMAIN:
        for (const h of this.index.allNested()) this.push(h, ALL);
        return;
      case IOMMU_INV_GRANU.PASID:
        this.addPasid(Number(e.pasid));
        return;
      case IOMMU_INV_GRANU.ADDR: {
        const leaf = (e.flags & IOMMU_INV_ADDR_FLAGS.LEAF) !== 0 ? IOMMU_VTD_INV_FLAGS_LEAF : 0;
        const pages = (e.granule_size * e.nb_granules) / 4096n;
        for (const h of this.index.nestedAt(Number(e.pasid))) this.push(h, { addr: e.addr, npages: pages, flags: leaf, __reserved: 0 });
      }
    }
  }

  addPasid(pasid: number): void {
    for (const h of this.index.nestedAt(pasid)) this.push(h, ALL);
  }

  addPasidAddr(pasid: number, addrLo: number, addrHi: number, am: number, leafOnly: boolean): void {
    const hwpts = this.index.nestedAt(pasid);
    if (hwpts.length === 0) return;
    const span = 4096n << BigInt(am);
    const addr = ((BigInt(addrHi >>> 0) << 32n) | BigInt(addrLo >>> 0)) & ~(span - 1n);
    const e: VtdS1Invalidate = { addr, npages: 1n << BigInt(am), flags: leafOnly ? IOMMU_VTD_INV_FLAGS_LEAF : 0, __reserved: 0 };
    for (const h of hwpts) this.push(h, e);
  }

  async flush(): Promise<void> {
    while (this.byHwpt.size > 0) {
      const work = [...this.byHwpt];
      this.byHwpt.clear();
      const sends: Promise<void>[] = [];
      for (const [hwpt, entries] of work) {
        for (let i = 0; i < entries.length; i += IOMMUFD_MAX_INV_ENTRIES) sends.push(this.send(hwpt, entries.slice(i, i + IOMMUFD_MAX_INV_ENTRIES)));
      }
      await Promise.all(sends);
    }
  }

  private push(hwpt: number, e: VtdS1Invalidate): void {
    let l = this.byHwpt.get(hwpt);
    if (l === undefined) this.byHwpt.set(hwpt, (l = []));
    l.push(e);
  }

  /** One HWPT_INVALIDATE; entries after a failing one go back into the batch (flush sends them again). */
  private async send(hwpt: number, entries: VtdS1Invalidate[]): Promise<void> {
    this.counters.messages++;
    if (this.trace.active) this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: 'IOMMUFD_HWPT_INVALIDATE', args: { hwpt, entries: entries.length } });
    try {
      const r = await this.host.call('IOMMUFD_HWPT_INVALIDATE', {
        hwpt_id: hwpt,
        data_type: IOMMU_HWPT_INVALIDATE_DATA.VTD_S1,
        entry_len: VtdS1InvalidateStruct.size,
        entry_num: entries.length,
        data: structBytes(VtdS1InvalidateStruct, entries),
      });
      const handled = Math.min(r.entry_num, entries.length);
      this.counters.entries += handled;
      if (r.first_error !== 0 || handled < entries.length) {
        this.counters.refused++;
        this.log.warn({ hwpt, entry: handled, errno: r.first_error }, 'host refused a HWPT invalidation entry');
        const rest = entries.slice(handled + 1);
        for (const e of rest) this.push(hwpt, e);
      }
    } catch (err) {
      this.counters.refused += entries.length;
      this.log.warn({ err, hwpt }, 'IOMMUFD_HWPT_INVALIDATE failed');
    }
  }
}
