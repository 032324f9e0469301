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
import type { SlProt } from '../iommu/index.js';
import { GPA_DOMAIN, type ContainerDomain, type Mapping } from './container-state.js';
import { ContainerInvalidation } from './cache-invalidate.js';
import { nextSlice, sliceTimer } from './slice-budget.js';

export const MAX_DOMAINS = 64;
export const MAX_MAPPINGS = 65536;
/**
 * Mappings one DMA_UNMAP slice removes at most before the host yields to other requests; also
 * the most an unmap removes synchronously. Linux flushes the IOTLB every VFIO_IOMMU_TLB_SYNC_MAX
 * (512) unmaps (drivers/vfio/vfio_iommu_type1.c).
 */
export const UNMAP_SLICE_MAPPINGS = 512;
/**
 * A slice leaves the table in chunks of this many mappings and ends after the chunk that spent
 * its time budget (SLICE_BUDGET_MS, slice-budget.ts), so a slice may hold fewer than
 * UNMAP_SLICE_MAPPINGS.
 */
export const UNMAP_CHUNK_MAPPINGS = 64;

/** The table permissions of DMA_MAP flags READ (bit 0) and WRITE (bit 1); shared, never changed. */
const PROT_OF_FLAGS: readonly Readonly<SlProt>[] = [
  { read: false, write: false },
  { read: true, write: false },
  { read: false, write: true },
  { read: true, write: true },
];

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
    this.iommu.map(d.did, r.iova, BigInt(hpa), r.size, PROT_OF_FLAGS[r.flags & 3]!);
    const m: Mapping = { iova, size, gpa, hpa, flags: r.flags };
    // Appending (mappings made in IOVA order) allocates no removed-elements array.
    if (at === d.mappings.length) d.mappings.push(m);
    else d.mappings.splice(at, 0, m);
    this.mappingCount++;
  }

  /**
   * VFIO_IOMMU_UNMAP_DMA (type1 v2): removes every mapping wholly inside [iova, iova+size) and
   * returns the bytes removed (0 when none). EINVAL: a mapping straddles either end (nothing is
   * removed).
   *
   * Cost is what the request touches (docs/performance.md, "Fairness and snapshots"): the hit
   * mappings are a contiguous run of the sorted list, found by two binary searches; only its
   * two ends can straddle. They leave the second-level table one slice at a time — one IOTLB
   * flush per slice (Linux batches the same way: vfio_unmap_unpin syncs the IOTLB every
   * VFIO_IOMMU_TLB_SYNC_MAX unmaps, drivers/vfio/vfio_iommu_type1.c) — and the list loses them
   * with one splice per table walk from the run's end. Up to UNMAP_SLICE_MAPPINGS mappings the
   * request completes synchronously; a larger one returns a Promise and yields to the event loop
   * (setImmediate) between slices, as vfio_remove_dma's cond_resched() does, so other VMs'
   * requests are served meanwhile. A slice walks the table in chunks of UNMAP_CHUNK_MAPPINGS and
   * ends early once it has run SLICE_BUDGET_MS. Between slices the container is consistent (the
   * list, the count and the table agree); the session layer (host/server/handlers.ts) holds this VM's
   * later requests until the unmap completes. If the VM's release begins meanwhile (VM teardown),
   * the unmap stops with ENOTCONN; what it removed stays removed.
   */
  dmaUnmap(r: DmaUnmapRequest): DmaUnmapReply | Promise<DmaUnmapReply> {
    const d = this.domain(r.domain);
    if (r.iova % PAGE_SIZE !== 0n || r.size % PAGE_SIZE !== 0n) fail('EINVAL', 'DMA_UNMAP: iova and size must be 4 KiB aligned');
    // Mappings end within the domain's width (below 2^53): clamp the range there, then use numbers.
    const limit = 2 ** this.iommu.haw;
    const lo = r.iova >= BigInt(limit) ? limit : Number(r.iova);
    const hi = r.iova + r.size >= BigInt(limit) ? limit : Number(r.iova + r.size);
    const ms = d.mappings;
    const first = firstEndingAfter(ms, lo);
    const end = firstStartingAtOrAfter(ms, hi, first);
    if (first === end) return { unmapped: 0n };
    for (const m of [ms[first]!, ms[end - 1]!]) {
      if (m.iova < lo || m.iova + m.size > hi) fail('EINVAL', `DMA_UNMAP: the mapping at 0x${m.iova.toString(16)} (+0x${m.size.toString(16)}) straddles the range`);
    }
    if (end - first <= UNMAP_SLICE_MAPPINGS) return { unmapped: BigInt(this.unmapRun(d, first, end)) };
    return this.unmapSliced(d, first, end);
  }

  /**
   * Unmap the run [first, end) slice by slice from its end, yielding between slices: a slice
   * takes chunks of UNMAP_CHUNK_MAPPINGS until it holds UNMAP_SLICE_MAPPINGS or has spent its
   * time budget, then flushes the IOTLB once over its span.
   */
  private async unmapSliced(d: ContainerDomain, first: number, end: number): Promise<DmaUnmapReply> {
    let unmapped = 0;
    let left = end;
    const slice = sliceTimer();
    while (left > first) {
      if (this.released || this.domains.get(d.id) !== d) fail('ENOTCONN', `DMA_UNMAP: domain ${d.id} was released during the unmap (VM teardown)`);
      slice.restart();
      const ms = d.mappings;
      const hi = ms[left - 1]!.iova + ms[left - 1]!.size;
      const floor = Math.max(first, left - UNMAP_SLICE_MAPPINGS);
      let bytes = 0;
      let lo = hi;
      do {
        const from = Math.max(floor, left - UNMAP_CHUNK_MAPPINGS);
        lo = ms[from]!.iova;
        bytes += this.unmapRun(d, from, left, false);
        left = from;
      } while (left > floor && !slice.spent());
      if (bytes > 0) this.iommu.flushUnmapped(d.did, BigInt(lo), BigInt(hi - lo));
      unmapped += bytes;
      if (left > first) await nextSlice();
    }
    return { unmapped: BigInt(unmapped) };
  }

  /**
   * Remove mappings [from, to) of `d` (consecutive in the list): one table unmap over
   * [first iova, last end) — the domain's table holds the container's mappings only, so this
   * removes exactly them — with its one IOTLB flush unless `flush` is false (the caller flushes
   * in the same turn), then one splice. Returns the bytes removed.
   */
  private unmapRun(d: ContainerDomain, from: number, to: number, flush = true): number {
    const ms = d.mappings;
    const start = ms[from]!.iova;
    const last = ms[to - 1]!;
    const bytes = Number(this.iommu.unmap(d.did, BigInt(start), BigInt(last.iova + last.size - start), { flush }));
    // splice(from, n) without the array of removed mappings it would return.
    ms.copyWithin(from, to);
    ms.length -= to - from;
    this.mappingCount -= to - from;
    return bytes;
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
    this.releaseDomain(d.did);
    this.mappingCount -= d.mappings.length;
    this.domains.delete(id);
  }

  /**
   * Free a host domain with its mappings: freeing destroys the domain's table whatever it maps
   * and invalidates the domain's IOTLB entries once (HostIommu.freeDomain), so the mappings
   * need no unmap one by one (that was O(mappings) table walks and flushes).
   */
  protected releaseDomain(did: number): void {
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

/** Index of the first mapping at or after `from` (sorted by iova, disjoint) that starts at or after `at`. */
function firstStartingAtOrAfter(ms: readonly Mapping[], at: number, from: number): number {
  let lo = from;
  let hi = ms.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ms[mid]!.iova < at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
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
