/**
 * VfioContainer's domains and DMA mappings: DOMAIN_ALLOC / DOMAIN_FREE and DMA_MAP / DMA_UNMAP
 * (VFIO type1 v2: VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA, drivers/vfio/vfio_iommu_type1.c).
 *
 * Mappings are kept as numbers: an IOVA range enters only through `iovaRange`, which asserts
 * that it ends within the host IOMMU's address width (48 bits, below 2^53) before converting.
 */
import { fail } from '../../src/errors.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import type { DmaMapRequest, DmaUnmapReply, DmaUnmapRequest } from '../../vhost/messages/dma.js';
import { GPA_DOMAIN, type Mapping } from './container-state.js';
import { ContainerInvalidation } from './cache-invalidate.js';

export const MAX_DOMAINS = 64;
export const MAX_MAPPINGS = 65536;

export abstract class ContainerDmaMap extends ContainerInvalidation {
  private nextDomainId = 1;

  /** VFIO_IOMMU_MAP_DMA: [iova, iova+size) of a domain → guest memory at gpa. */
  dmaMap(r: DmaMapRequest): void {
    const d = this.domain(r.domain);
    if (r.iova % PAGE_SIZE !== 0n || r.gpa % PAGE_SIZE !== 0n || r.size % PAGE_SIZE !== 0n) fail('EINVAL', 'DMA_MAP: iova, gpa and size must be 4 KiB aligned');
    const [iova, size] = this.iovaRange(r.iova, r.size, 'DMA_MAP');
    const hpa = this.env.mem.gpaToHpa(r.gpa, r.size);
    const gpa = Number(r.gpa); // inside the memory table (gpaToHpa checked it)
    // Mappings are sorted and disjoint: the first one ending after iova is the only overlap candidate.
    const at = firstEndingAfter(d.mappings, iova);
    const ov = at < d.mappings.length && d.mappings[at]!.iova < iova + size ? d.mappings[at] : undefined;
    if (ov && ov.iova === iova && ov.size === size && ov.gpa === gpa && ov.flags === r.flags) return; // identical re-MAP: done
    if (ov) fail('EEXIST', `DMA_MAP: [0x${iova.toString(16)}, +0x${size.toString(16)}) overlaps the mapping at 0x${ov.iova.toString(16)}`);
    if (this.mappingCount >= MAX_MAPPINGS) fail('ENOSPC', `DMA_MAP: ${this.vmName} has ${MAX_MAPPINGS} mappings (the cap)`);
    this.iommu.map(d.did, r.iova, BigInt(hpa), r.size, { read: (r.flags & 1) !== 0, write: (r.flags & 2) !== 0 });
    d.mappings.splice(at, 0, { iova, size, gpa, hpa, flags: r.flags });
    this.mappingCount++;
  }

  /**
   * VFIO_IOMMU_UNMAP_DMA (type1 v2): removes every mapping wholly inside [iova, iova+size) and
   * returns the bytes removed (0 when none). EINVAL: a mapping straddles either end (nothing is
   * removed).
   */
  dmaUnmap(r: DmaUnmapRequest): DmaUnmapReply {
    const d = this.domain(r.domain);
    if (r.iova % PAGE_SIZE !== 0n || r.size % PAGE_SIZE !== 0n) fail('EINVAL', 'DMA_UNMAP: iova and size must be 4 KiB aligned');
    const lo = r.iova;
    const hi = r.iova + r.size;
    const hit: Mapping[] = [];
    for (const m of d.mappings) {
      const ms = BigInt(m.iova);
      const me = ms + BigInt(m.size);
      if (me <= lo || ms >= hi) continue;
      if (ms < lo || me > hi) fail('EINVAL', `DMA_UNMAP: the mapping at 0x${m.iova.toString(16)} (+0x${m.size.toString(16)}) straddles the range`);
      hit.push(m);
    }
    let unmapped = 0n;
    for (const m of hit) {
      unmapped += this.iommu.unmap(d.did, BigInt(m.iova), BigInt(m.size));
      d.mappings.splice(d.mappings.indexOf(m), 1);
      this.mappingCount--;
    }
    return { unmapped };
  }

  domainAlloc(): number {
    if (this.domains.size >= MAX_DOMAINS) fail('ENOSPC', `DOMAIN_ALLOC: ${this.vmName} has ${MAX_DOMAINS} domains (the cap)`);
    const id = this.nextDomainId;
    const did = this.iommu.allocDomain({ name: `${this.vmName} domain ${id}` }).did;
    this.domains.set(id, { id, did, mappings: [], rids: new Set() });
    this.nextDomainId++;
    return id;
  }

  /** EINVAL: domain 0; ENOENT: unknown; EBUSY: something is attached. Mappings go with it. */
  domainFree(id: number): void {
    if (id === GPA_DOMAIN) fail('EINVAL', 'DOMAIN_FREE: domain 0 is the VM’s GPA domain and cannot be freed');
    const d = this.domain(id);
    if (d.rids.size > 0 || this.pasidRoutesIn(id) > 0) fail('EBUSY', `DOMAIN_FREE: domain ${id} still has attachments`);
    this.releaseDomain(d.did, d.mappings);
    this.mappingCount -= d.mappings.length;
    this.domains.delete(id);
  }

  /** Unmap a host domain's mappings and free it. */
  protected releaseDomain(did: number, mappings: readonly Mapping[]): void {
    for (const m of mappings) this.iommu.unmap(did, BigInt(m.iova), BigInt(m.size));
    this.iommu.freeDomain(did);
  }

  /**
   * [iova, iova + size) as numbers, after asserting that it ends within the host IOMMU's address
   * width (the domains' input width). EINVAL otherwise (VFIO: an IOVA outside the aperture).
   */
  private iovaRange(iova: bigint, size: bigint, what: string): [iova: number, size: number] {
    const width = this.iommu.haw;
    if (iova + size > 1n << BigInt(width)) fail('EINVAL', `${what}: iova range ends beyond the ${width}-bit domain`);
    return [Number(iova), Number(size)];
  }
}

/** Index of the first mapping (sorted by iova, disjoint) that ends after `iova`; length when none. */
function firstEndingAfter(ms: readonly Mapping[], iova: number): number {
  let lo = 0;
  let hi = ms.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const m = ms[mid]!;
    if (m.iova + m.size <= iova) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
