/**
 * The nested-translation fixture shared by the in-process IOMMU bench (iommu.ts) and the host
 * process of the shared-RAM bench (shared-ram-host.ts): guest RAM placed at GUEST_HPA in a
 * HostMemory region, mapped GPA 0 → GUEST_HPA in a second-level domain with 4 KiB pages, and a
 * 4-level first-level table written into guest RAM from GPA 1 MiB up, as a guest driver would
 * (first-level entries: VT-d spec §9.7), bound nested to RID/PASID.
 */
import type { MemoryBacking } from '../../memory/backing.js';
import { encode } from '../../vtd/layout.js';
import { FL_PTE, levelIndex } from '../../vtd/page-table.js';
import { HostMemory } from '../../../host/memory/host-memory.js';
import { HostIommu } from '../../../host/iommu/index.js';

export const GUEST_HPA = 0x4000_0000;
export const RID = 0x0100;
export const PASID = 7;
/** The GVA of the first page of the hit/walk working set (mapHitPages). */
export const HIT_GVA = 0x4000_0000;
/** Pages in the hit/walk working set. */
export const HIT_PAGES = 1024;
/** Source and destination GVAs of the 1 MiB DMA copies (mapCopyPages). */
export const COPY_SRC_GVA = 0x5000_0000;
export const COPY_DST_GVA = 0x6000_0000;
/** GPAs the copy source and destination pages map to. */
export const COPY_SRC_GPA = 0xc00000;
export const COPY_DST_GPA = 0xe00000;

export interface NestedFixture {
  readonly iommu: HostIommu;
  /** Map one 4 KiB GVA page to a GPA page in the first-level table (allocating tables as needed). */
  mapFl(gva: number, gpa: number): void;
}

/** Build the fixture over `ram` (its whole size is mapped); `regionName` names the HostMemory region. */
export function buildNestedFixture(ram: MemoryBacking, regionName: string): NestedFixture {
  const ramBytes = ram.size;
  const mem = new HostMemory();
  mem.addRegion(regionName, GUEST_HPA, ram);
  const iommu = new HostIommu({ memory: mem });
  const vm = iommu.allocDomain({ name: 'bench-vm' });
  for (let gpa = 0; gpa < ramBytes; gpa += 4096) iommu.map(vm, BigInt(gpa), BigInt(GUEST_HPA + gpa), 4096n, { read: true, write: true });
  iommu.addDevice({ rid: RID });
  const root = 0x100000;
  let next = root + 4096;
  const mapFl = (gva: number, gpa: number): void => {
    let tbl = root;
    for (let l = 4; l > 1; l--) {
      const at = tbl + levelIndex(gva, l) * 8;
      const e = ram.readU64(at);
      if ((e & 1n) === 0n) {
        const t = next;
        next += 4096;
        ram.writeU64(at, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(t) >> 12n })[0]!);
        tbl = t;
      } else tbl = Number(e & 0x000ffffffffff000n);
    }
    ram.writeU64(tbl + levelIndex(gva, 1) * 8, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(gpa) >> 12n })[0]!);
  };
  iommu.bindPgtablePasid(RID, PASID, vm, { flptr: BigInt(root) });
  return { iommu, mapFl };
}

/**
 * Map the hit/walk working set: HIT_PAGES GVA pages from HIT_GVA, each to a GPA page in 8..12 MiB.
 * Returns 4 × HIT_PAGES addresses (a power of two) spread over those pages at varying offsets.
 */
export function mapHitPages(fx: NestedFixture): Float64Array {
  for (let i = 0; i < HIT_PAGES; i++) fx.mapFl(HIT_GVA + i * 4096, 0x800000 + i * 4096);
  const addrs = new Float64Array(HIT_PAGES * 4);
  for (let i = 0; i < addrs.length; i++) addrs[i] = HIT_GVA + (i % HIT_PAGES) * 4096 + ((i * 40) % 4096);
  return addrs;
}

/**
 * Map the 256 source and 256 destination pages of a 1 MiB copy: to contiguous GPA pages from
 * COPY_SRC_GPA / COPY_DST_GPA, or, `scattered`, to the same pages in reverse order.
 */
export function mapCopyPages(fx: NestedFixture, scattered = false): void {
  for (let i = 0; i < 256; i++) {
    const page = scattered ? 255 - i : i;
    fx.mapFl(COPY_SRC_GVA + i * 4096, COPY_SRC_GPA + page * 4096);
    fx.mapFl(COPY_DST_GVA + i * 4096, COPY_DST_GPA + page * 4096);
  }
}

/**
 * `walks` cold nested translations of `addrs` (cycled; its length a power of two), the IOTLB and
 * paging-structure caches flushed before each. Returns the sum of the results (a sink for the JIT).
 */
export function coldWalks(fx: NestedFixture, addrs: Float64Array, walks: number): number {
  const { iommu } = fx;
  const eng = iommu.engine;
  const mask = addrs.length - 1;
  let acc = 0;
  for (let i = 0; i < walks; i++) {
    iommu.invalidateIotlbGlobal();
    acc += eng.translate(RID, PASID, addrs[i & mask]!, 0);
  }
  return acc;
}
