/**
 * The VFIO SVA uAPI (docs/protocol.md §10; Yi L. Liu, "[RFC v1 0/4] vfio: support Shared Virtual
 * Addressing", 2019) behind HostUapi: the container's domains, ATTACH / DETACH with a host PGTT,
 * BIND_GPASID / UNBIND_GPASID with `struct iommu_gpasid_bind_data`, CACHE_INVALIDATE, and
 * PAGE_RESPONSE. Domain 0 is the container's GPA domain every assigned device starts attached to.
 *
 * Stateless: every call is one request; a route is never replaced in place (the shadow tears the
 * old one down first).
 */
import { DeviceKind } from '../../vhost/messages/device.js';
import { ATTACH_PASID_VALID, AttachPgtt } from '../../vhost/messages/device.js';
import { DmaMapFlag } from '../../vhost/messages/dma.js';
import { PAGE_RESPONSE_PASID_VALID } from '../../vhost/messages/page.js';
import {
  IOMMU_GPASID_BIND_DATA_SIZE,
  IOMMU_GPASID_BIND_VERSION_1,
  IOMMU_PASID_FORMAT_INTEL_VTD,
  IOMMU_SVA_GPASID_VAL,
  type GpasidBindRequest,
} from '../../vhost/messages/pasid.js';
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import type { FirstLevelTable, HostCalls, HostHwInfo, HostUapi, PageResponseArgs, PasidRef, PasidRoute, UapiDevice } from './host-uapi.js';
import type { InvalidationSink } from './invalidation-sink.js';
import { InvalidationBatch } from './vfio-sva-invalidations.js';

/** BIND_GPASID / UNBIND_GPASID data: host PASID `hpasid` for guest PASID `gpasid` (equal under identity), GPASID_VAL. */
export function gpasidBindData(rid: number, gpasid: number, hpasid: number, t: FirstLevelTable): GpasidBindRequest {
  return {
    rid,
    argsz: IOMMU_GPASID_BIND_DATA_SIZE,
    version: IOMMU_GPASID_BIND_VERSION_1,
    format: IOMMU_PASID_FORMAT_INTEL_VTD,
    addr_width: t.addrWidth,
    flags: IOMMU_SVA_GPASID_VAL,
    gpgd: t.flptr,
    hpasid: BigInt(hpasid),
    gpasid: BigInt(gpasid),
    padding: 0n,
    vtd_flags: t.vtdFlags,
    vtd_pat: t.pat,
    vtd_emt: t.emt,
  };
}

export class VfioSvaUapi implements HostUapi {
  readonly kind = 'vfio-sva' as const;
  readonly replaces = false;
  readonly routesHoldPasids = false;

  constructor(private readonly host: HostCalls) {}

  via(host: HostCalls): VfioSvaUapi {
    return new VfioSvaUapi(host);
  }

  /** DEVICE_ADD per device, and all of guest RAM mapped in domain 0 (the container's GPA domain). */
  async announce(devices: readonly UapiDevice[], ramSize: number): Promise<void> {
    for (const d of devices) {
      await this.host.call('DEVICE_ADD', { rid: d.rid, kind: d.kind === 'adi' ? DeviceKind.ADI : DeviceKind.PF, pasid_width: d.pasidWidth, caps: d.caps });
    }
    await this.host.call('DMA_MAP', { domain: 0, flags: DmaMapFlag.READ | DmaMapFlag.WRITE, iova: 0n, gpa: 0n, size: BigInt(ramSize) });
  }

  hostObjects(): null {
    return null;
  }

  hwInfo(): HostHwInfo {
    return { cap: null, ecap: null };
  }

  async routePasid(p: PasidRef, route: PasidRoute): Promise<void> {
    switch (route.kind) {
      case 'nested':
        await this.host.call('BIND_GPASID', gpasidBindData(p.rid, p.gpasid, p.hpasid, route.table));
        return;
      case 'pt':
        await this.host.call('ATTACH', { rid: p.rid, pgtt: AttachPgtt.PASS_THROUGH, flags: ATTACH_PASID_VALID, pasid: p.hpasid, domain: 0 });
        return;
      case 'sl':
        await this.host.call('ATTACH', { rid: p.rid, pgtt: AttachPgtt.SECOND_LEVEL, flags: ATTACH_PASID_VALID, pasid: p.hpasid, domain: route.domain });
    }
  }

  async unroutePasid(p: PasidRef, route: PasidRoute): Promise<void> {
    if (route.kind === 'nested') await this.host.call('UNBIND_GPASID', gpasidBindData(p.rid, p.gpasid, p.hpasid, route.table));
    else await this.host.call('DETACH', { rid: p.rid, pgtt: 0, flags: ATTACH_PASID_VALID, pasid: p.hpasid, domain: route.kind === 'pt' ? 0 : route.domain });
  }

  async attachRid(rid: number, _from: number | null, domain: number): Promise<void> {
    await this.host.call('ATTACH', { rid, pgtt: 0, flags: 0, pasid: 0, domain });
  }

  async detachRid(rid: number, domain: number): Promise<void> {
    await this.host.call('DETACH', { rid, pgtt: 0, flags: 0, pasid: 0, domain });
  }

  async domainAlloc(): Promise<number> {
    return (await this.host.call('DOMAIN_ALLOC', {})).domain;
  }

  async domainFree(domain: number): Promise<void> {
    await this.host.call('DOMAIN_FREE', { domain });
  }

  async dmaMap(domain: number, iova: bigint, gpa: bigint, size: bigint, flags: number): Promise<void> {
    await this.host.call('DMA_MAP', { domain, flags, iova, gpa, size });
  }

  async dmaUnmap(domain: number, iova: bigint, size: bigint): Promise<void> {
    await this.host.call('DMA_UNMAP', { domain, iova, size });
  }

  invalidations(opts: { log: Logger; trace: TraceBus; vm: string }): InvalidationSink {
    return new InvalidationBatch(this.host, opts.log, opts.trace, opts.vm);
  }

  async pageResponse(r: PageResponseArgs): Promise<void> {
    await this.host.call('PAGE_RESPONSE', { rid: r.rid, flags: r.pasid !== null ? PAGE_RESPONSE_PASID_VALID : 0, pasid: r.pasid ?? 0, grpid: r.prgi, code: r.code });
  }

  backendEvent(ev: BackendEvent): BackendEvent {
    return ev;
  }
}
