/**
 * The state every part of VfioContainer works on (container.ts lists the parts): the VM's
 * devices, its domains with their DMA mappings, the PASID routes of its devices, its counters;
 * the lookups and ownership checks the parts share; and what a device needs from its container
 * (DeviceContainer).
 */
import { fail, isVsvaError } from '../../src/errors.js';
import { formatBdf } from '../../src/pci.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { PasidBindingSnapshot } from '../../src/api/types.js';
import { decodeCap } from '../../src/vtd/cap-ecap.js';
import type { IoasidCore, IoasidSet } from '../ioasid/index.js';
import type { HostIommu } from '../iommu/index.js';
import type { DeviceChannel, DeviceContainer, DeviceCounters, DmaTestDevice } from '../devices/dma-device.js';
import type { EventCounterName } from '../monitor/types.js';
import type { VdcmVm } from '../vdcm/vdcm.js';
import type { MemTableMap } from './mem-table.js';

/** The reference name the container (the IOMMU driver) holds IDs under (LPC 2020 SIOV IOASID talk: the IOMMU user). */
export const IOMMU_USER = 'iommu';
/** The VM's GPA domain. */
export const GPA_DOMAIN = 0;

/** What the host service gives a VM's container. */
/** See ContainerEnv.pasidNumbering. */
export interface PasidNumbering {
  floor(): number;
  readonly replays: boolean;
  allocated(id: number): void;
}

export interface ContainerEnv {
  readonly vmName: string;
  readonly core: IoasidCore;
  readonly set: IoasidSet;
  readonly iommu: HostIommu;
  readonly mem: MemTableMap;
  readonly vdcm: VdcmVm;
  readonly trace?: TraceBus;
  /** The VM's backend channel, for its devices' FAULT and PAGE_REQUEST. */
  readonly channel: DeviceChannel;
  /** Host requester ids are unique across VMs: the server hands them out. */
  allocHostRid(): number;
  freeHostRid(rid: number): void;
  /**
   * Host-wide PASID numbering across a host restart (host/server/vm-reservations.ts): `floor()`
   * is the lowest PASID another VM may take while VMs of the previous run may still replay
   * theirs (0: no such VM); `replays`: this VM is one of them (it reclaimed its name);
   * `allocated(id)` records a PASID handed out. Absent: none.
   */
  readonly pasidNumbering?: PasidNumbering;
}

/** Counters per VM: the dashboard's event counters (host/monitor EVENT_COUNTER_NAMES) and DMAs. */
export type ContainerCounters = Record<EventCounterName, number> & DeviceCounters;

/** One DMA mapping; IOVAs, sizes and addresses fit 48 bits (asserted where they enter, dma-map.ts). */
export interface Mapping {
  iova: number;
  size: number;
  gpa: number;
  hpa: number;
  /** DMA_MAP flags (READ / WRITE), to recognise an identical re-MAP. */
  flags: number;
}

export interface ContainerDomain {
  readonly id: number;
  /** The host domain's DID. */
  readonly did: number;
  /** Mappings sorted by iova. */
  readonly mappings: Mapping[];
  /** RIDs (guest) whose requests without PASID go here. */
  readonly rids: Set<number>;
}

/** One PASID route of one device. */
export interface PasidRoute {
  readonly kind: PasidBindingSnapshot['pgtt'];
  /** Container-local domain id (GPA_DOMAIN for nested bindings). */
  readonly domain: number;
  /** Nested bindings: the guest first-level root (GPA), as the snapshot shows it. */
  readonly flptrHex?: string;
  /** Nested bindings: everything the bind data set, to recognise an identical re-BIND. */
  readonly bindKey?: string;
}

export abstract class ContainerState implements DeviceContainer {
  readonly counters: ContainerCounters = { allocs: 0, frees: 0, binds: 0, unbinds: 0, invalidations: 0, faults: 0, pageRequests: 0, dmas: 0 };
  readonly vmName: string;
  readonly iommu: HostIommu;
  readonly vdcm: VdcmVm;
  readonly channel: DeviceChannel;
  readonly trace: TraceBus | undefined;
  protected readonly core: IoasidCore;
  protected readonly set: IoasidSet;
  protected readonly devices = new Map<number, DmaTestDevice>();
  protected readonly domains = new Map<number, ContainerDomain>();
  /** hPASID → guest RID → route. */
  protected readonly routes = new Map<number, Map<number, PasidRoute>>();
  protected mappingCount = 0;
  /** The VM's release has begun (container.ts releaseSteps): nothing may start or continue. */
  protected released = false;
  /** The host IOMMU walks 5-level first-level tables (CAP.FL5LP): binds may give addr_width 57. */
  protected readonly fl5lp: boolean;

  constructor(protected readonly env: ContainerEnv) {
    this.vmName = env.vmName;
    this.iommu = env.iommu;
    this.vdcm = env.vdcm;
    this.channel = env.channel;
    this.trace = env.trace;
    this.core = env.core;
    this.set = env.set;
    this.fl5lp = decodeCap(env.iommu.capabilities().cap).fields.FL5LP === 1n;
    const did = env.iommu.allocDomain({ name: `${env.vmName} gpa` }).did;
    this.domains.set(GPA_DOMAIN, { id: GPA_DOMAIN, did, mappings: [], rids: new Set() });
  }

  /** Whether `pasid` is this VM's and not being freed. */
  ownsLivePasid(pasid: number): boolean {
    try {
      this.requireLivePasid(pasid);
      return true;
    } catch {
      return false;
    }
  }

  /** The device of this VM with guest RID `rid`. ENOENT. */
  protected device(rid: number): DmaTestDevice {
    const d = this.devices.get(rid);
    if (!d) fail('ENOENT', `no device ${formatBdf(rid)} in ${this.vmName}`);
    return d;
  }

  protected domain(id: number): ContainerDomain {
    const d = this.domains.get(id);
    if (!d) fail('ENOENT', `no domain ${id} in ${this.vmName}`);
    return d;
  }

  /** The domain the RID's requests without PASID go to. */
  protected ridDomain(rid: number): ContainerDomain | undefined {
    for (const d of this.domains.values()) if (d.rids.has(rid)) return d;
    return undefined;
  }

  protected pasidRoutesIn(domainId: number): number {
    let n = 0;
    for (const rs of this.routes.values()) for (const r of rs.values()) if (r.domain === domainId) n++;
    return n;
  }

  protected checkDevicePasid(dev: DmaTestDevice, pasid: number): void {
    if (dev.caps.pasidBits === 0) fail('EINVAL', `${dev.bdf} has no PASID capability`);
    if (pasid >= 2 ** dev.caps.pasidBits) fail('EINVAL', `PASID ${pasid} is beyond ${dev.bdf}'s ${dev.caps.pasidBits}-bit PASID width`);
  }

  /** `pasid` is allocated in this VM's set (any state). ENOENT otherwise — another VM's too. */
  protected requirePasid(pasid: number): void {
    try {
      this.core.find(this.set, pasid);
    } catch (e) {
      if (isVsvaError(e, 'EACCES') || isVsvaError(e, 'ENOENT') || isVsvaError(e, 'EINVAL')) fail('ENOENT', `PASID ${pasid} is not a PASID of ${this.vmName}`);
      throw e;
    }
  }

  /** `pasid` is this VM's and not being freed. ENOENT otherwise. */
  protected requireLivePasid(pasid: number): void {
    this.requirePasid(pasid);
    if (this.core.isFreePending(pasid)) fail('ENOENT', `PASID ${pasid} of ${this.vmName} has been freed`);
  }

  /** Map the IOMMU's argument errors onto the container's errno (ERANGE/EOPNOTSUPP → EINVAL). */
  protected iommuCall(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (isVsvaError(e, 'ERANGE') || isVsvaError(e, 'EOPNOTSUPP')) fail('EINVAL', e.detail.message);
      throw e;
    }
  }

  protected setRoute(pasid: number, rid: number, r: PasidRoute): void {
    let m = this.routes.get(pasid);
    if (!m) this.routes.set(pasid, (m = new Map()));
    m.set(rid, r);
  }

  protected deleteRoute(pasid: number, rid: number): void {
    const m = this.routes.get(pasid);
    if (!m) return;
    m.delete(rid);
    if (m.size === 0) this.routes.delete(pasid);
  }

  /** Whether `pasid` still has a nested binding on some device. */
  protected hasNestedRoute(pasid: number): boolean {
    for (const r of this.routes.get(pasid)?.values() ?? []) if (r.kind === 'nested') return true;
    return false;
  }

  protected emit(kind: 'bind' | 'unbind' | 'invalidate', name: string, args: Record<string, string | number | boolean | null>): void {
    const t = this.trace;
    if (t?.active) t.emit({ kind, side: 'host', vm: this.vmName, name, args });
  }
}
