/**
 * The VFIO-style container of one VM (DESIGN §4; seed 004; reference/ioasid-vfio-iommufd.md
 * part B, errno conventions of C.8): PASID_REQUEST (alloc / free of a range, charged to the VM's
 * IOASID set), BIND/UNBIND of guest first-level tables nested over the VM's GPA domain,
 * CACHE_INVALIDATE arrays, DMA_MAP/UNMAP, devices and their attachments, nesting info, page
 * responses and the test devices' DMA.
 *
 * Everything the container is given uses the guest's names (guest RIDs, container-local domain
 * ids, host PASIDs the VM owns); below it only host RIDs, host DIDs and host PASIDs exist.
 * Domain 0 is the VM's GPA domain (second level GPA → HPA), created with the container.
 *
 * Rules every call follows: check, then mutate; roll back partial work; nothing of another VM is
 * reachable — a host PASID of another VM (or none) is ENOENT, a GPA outside the memory table is
 * EFAULT, a device or domain of another VM does not exist for this one (ENOENT).
 *
 * Reference counts (seed 003): a nested binding or a RID+PASID attachment holds one 'iommu'
 * reference per device route; the first nested binding of a PASID attaches its SPID (the guest
 * PASID, when GPASID_VAL) and fires BIND (KVM takes 'kvm'), the last unbind fires UNBIND and
 * detaches the SPID. A PASID freed while routes exist (free before unbind) has its routes torn
 * down by the container's FREE notifier (priority IOMMU), which puts the references.
 *
 * Caps on guest-controlled growth (ENOSPC past them): MAX_DEVICES devices, MAX_DOMAINS domains,
 * MAX_MAPPINGS DMA mappings per VM.
 *
 * Duplicates are successes (docs/reliability.md §3: a front-end may resend a request after a
 * reconnect without knowing whether the first one took effect): BIND_GPASID of a binding
 * identical to the one in place (same device, PASID, guest PASID, table, width and flags),
 * ATTACH of a RID to the domain it is attached to or of a RID+PASID to the domain and PGTT it
 * is attached with, and DMA_MAP of a mapping identical to an existing one (same domain, iova,
 * size, gpa, flags) change nothing and return 0. A different request for the same object keeps
 * its error (EEXIST / EBUSY).
 */
import { fail, isVsvaError, toNegErrno, type VsvaError } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { formatBdf } from '../../src/pci.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { DeviceKind, PasidBindingSnapshot } from '../../src/api/types.js';
import { ATTACH_PASID_VALID, AttachPgtt, DeviceCap, DeviceKind as WireDeviceKind, IOMMU_NESTING_FEAT, type AttachRequest, type DeviceAddRequest, type NestingInfo } from '../../vhost/messages/device.js';
import { DeviceConfigFlag, type DeviceConfigRequest } from '../../vhost/messages/device-config.js';
import type { DmaMapRequest, DmaUnmapRequest, DmaUnmapReply } from '../../vhost/messages/dma.js';
import { IOMMU_PASID_FORMAT_INTEL_VTD, IOMMU_SVA_VTD_GPASID, type GpasidBindRequest, type PasidRange } from '../../vhost/messages/pasid.js';
import { IOMMU_CACHE_INV_TYPE, type CacheInvalidateEntry, type CacheInvalidateReply } from '../../vhost/messages/invalidate.js';
import { PAGE_RESPONSE_PASID_VALID, type DeviceDmaReply, type DeviceDmaRequest, type PageResponseRequest } from '../../vhost/messages/page.js';
import type { IoasidCore, IoasidNotifier, IoasidNotifyArgs, IoasidSet } from '../ioasid/index.js';
import { DmaTestDevice, type DmaDeviceEnv } from '../devices/dma-device.js';
import type { VdcmVm } from '../vdcm/vdcm.js';
import type { ContainerIommu, NestedFirstLevel } from './iommu-port.js';
import type { MemTableMap } from './mem-table.js';
import { checkBindData, checkInvalidateEntry, type CheckedInvalidate } from './uapi.js';

const log = childLogger('vfio');

/** The reference name the container (the IOMMU driver) holds IDs under (seed 003, column IOMMU). */
export const IOMMU_USER = 'iommu';
export const MAX_DEVICES = 32;
export const MAX_DOMAINS = 64;
export const MAX_MAPPINGS = 65536;
/** The VM's GPA domain. */
export const GPA_DOMAIN = 0;
/** PASID_FREE ranges shorter than this are checked ID by ID; longer ones walk the VM's set. */
const PASID_FREE_PROBE_RANGE = 64;

const PAGE = 4096n;

interface Mapping {
  iova: number;
  size: number;
  gpa: number;
  hpa: number;
  /** DMA_MAP flags (READ / WRITE), to recognise an identical re-MAP. */
  flags: number;
}

interface ContainerDomain {
  readonly id: number;
  readonly did: number;
  /** Mappings sorted by iova. */
  readonly mappings: Mapping[];
  /** RIDs (guest) whose requests without PASID go here. */
  readonly rids: Set<number>;
}

/** One PASID route of one device. */
interface PasidRoute {
  readonly kind: 'nested' | 'sl' | 'pt';
  /** Container-local domain id (GPA_DOMAIN for nested bindings). */
  readonly domain: number;
  /** Nested bindings: the guest first-level root (GPA), as the snapshot shows it. */
  readonly flptrHex?: string;
  /** Nested bindings: everything the bind data set, to recognise an identical re-BIND. */
  readonly bindKey?: string;
}

/** Counters per VM (the dashboard's CounterSet minus the IOTLB figures). */
export interface ContainerCounters {
  allocs: number;
  frees: number;
  binds: number;
  unbinds: number;
  invalidations: number;
  faults: number;
  pageRequests: number;
  dmas: number;
}

export interface ContainerEnv {
  readonly vmName: string;
  readonly core: IoasidCore;
  readonly set: IoasidSet;
  readonly iommu: ContainerIommu;
  readonly mem: MemTableMap;
  readonly vdcm: VdcmVm;
  readonly trace?: TraceBus;
  /** Host requester ids are unique across VMs: the server hands them out. */
  allocHostRid(): number;
  freeHostRid(rid: number): void;
  /** Device-facing hooks (backend channel, page requests). */
  readonly deviceEnv: Omit<DmaDeviceEnv, 'vmName' | 'iommu' | 'vdcm' | 'ownsPasid' | 'count' | 'trace'>;
}

export class VfioContainer {
  readonly counters: ContainerCounters = { allocs: 0, frees: 0, binds: 0, unbinds: 0, invalidations: 0, faults: 0, pageRequests: 0, dmas: 0 };
  private readonly devices = new Map<number, DmaTestDevice>();
  private readonly domains = new Map<number, ContainerDomain>();
  private nextDomainId = 1;
  private mappingCount = 0;
  /** hPASID → guest RID → route. */
  private readonly routes = new Map<number, Map<number, PasidRoute>>();
  private readonly notifier: IoasidNotifier;
  private readonly deviceEnv: DmaDeviceEnv;
  private closed = false;

  constructor(private readonly env: ContainerEnv) {
    const did = env.iommu.allocDomain(`${env.vmName} gpa`);
    this.domains.set(GPA_DOMAIN, { id: GPA_DOMAIN, did, mappings: [], rids: new Set() });
    this.notifier = { priority: 'IOMMU', call: (a) => this.onIoasidEvent(a) };
    env.core.registerNotifier(env.set, this.notifier);
    this.deviceEnv = {
      ...env.deviceEnv,
      vmName: env.vmName,
      iommu: env.iommu,
      vdcm: env.vdcm,
      trace: env.trace,
      ownsPasid: (h) => this.ownsLivePasid(h),
      count: (what) => this.counters[what]++,
    };
  }

  // ------------------------------------------------------------------ PASID_REQUEST

  /** VFIO_IOMMU_FLAG_ALLOC_PASID: one PASID in [min, max] from the VM's set. ENOSPC: quota or range exhausted. */
  pasidAlloc(r: PasidRange): number {
    if (r.min > r.max) fail('EINVAL', `PASID_ALLOC: min ${r.min} > max ${r.max}`);
    const id = this.env.core.alloc(this.env.set, r.min, r.max);
    this.counters.allocs++;
    return id;
  }

  /**
   * VFIO_IOMMU_FLAG_FREE_PASID: free every live PASID of this VM in [min, max]; returns how many.
   * ENOENT: the range holds no live PASID of this VM (another VM's PASIDs are not this VM's).
   */
  pasidFree(r: PasidRange): number {
    if (r.min > r.max) fail('EINVAL', `PASID_FREE: min ${r.min} > max ${r.max}`);
    const core = this.env.core;
    const set = this.env.set;
    const ids: number[] = [];
    if (r.max - r.min < PASID_FREE_PROBE_RANGE && core.isSetValid(set)) {
      // A short range (a guest frees one PASID at a time): look at its IDs instead of the set's.
      for (let id = r.min; id <= r.max; id++) {
        const info = core.idInfo(id);
        if (info !== null && info.set === set.id && info.state !== 'free-pending') ids.push(id);
      }
    } else {
      core.forEach(set, (id) => {
        if (id >= r.min && id <= r.max && core.idInfo(id)?.state !== 'free-pending') ids.push(id);
      });
    }
    if (ids.length === 0) fail('ENOENT', `PASID_FREE: no PASID of ${this.env.vmName} in [${r.min}, ${r.max}]`);
    for (const id of ids) {
      this.env.core.free(this.env.set, id);
      this.counters.frees++;
    }
    return ids.length;
  }

  // ------------------------------------------------------------------ bind / unbind

  /** VFIO_IOMMU_NESTING_OP_BIND_PGTBL. */
  bind(req: GpasidBindRequest): void {
    const b = checkBindData(req, 'BIND_GPASID', this.env.iommu.fl5lp);
    const dev = this.device(req.rid);
    this.checkDevicePasid(dev, b.hpasid);
    this.ownLivePasid(b.hpasid);
    const routes = this.routes.get(b.hpasid);
    const cur = routes?.get(dev.guestRid);
    const bindKey = `${b.gpgd}:${b.levels}:${b.vtdFlags}:${b.pat}:${b.emt}:${b.gpasid}`;
    if (cur?.kind === 'nested' && cur.bindKey === bindKey) return; // identical re-BIND: done
    if (cur?.kind === 'nested') fail('EEXIST', `PASID ${b.hpasid} is already bound on ${dev.bdf}`);
    if (cur) fail('EBUSY', `PASID ${b.hpasid} of ${dev.bdf} is attached to domain ${cur.domain}; detach it first`);
    const core = this.env.core;
    const nested = routes ? [...routes.values()].some((x) => x.kind === 'nested') : false;
    const spid = core.idInfo(b.hpasid)!.spid;
    if (nested) {
      if (spid !== b.gpasid) fail('EINVAL', `BIND_GPASID: PASID ${b.hpasid} is bound with guest PASID ${spid ?? 'none'}, not ${b.gpasid ?? 'none'}`);
    } else if (b.gpasid !== null) {
      const other = core.findBySpid(this.env.set, b.gpasid);
      if (other !== null && other !== b.hpasid) fail('EINVAL', `BIND_GPASID: guest PASID ${b.gpasid} already maps to host PASID ${other}`);
    }
    const fl: NestedFirstLevel = {
      flptr: b.gpgd,
      levels: b.levels,
      sre: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.SRE) !== 0n,
      eafe: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.EAFE) !== 0n,
      pcd: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.PCD) !== 0n,
      pwt: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.PWT) !== 0n,
      emte: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.EMTE) !== 0n,
      cd: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.CD) !== 0n,
      wpe: (b.vtdFlags & IOMMU_SVA_VTD_GPASID.WPE) !== 0n,
      pat: b.pat,
      emt: b.emt,
    };
    const gpa = this.domains.get(GPA_DOMAIN)!;
    // Mutations: the IOMMU bind (checks its own input first), then the reference, SPID, BIND.
    this.iommuCall(() => this.env.iommu.bindNested(dev.hostRid, b.hpasid, gpa.did, fl));
    try {
      core.get(this.env.set, b.hpasid, IOMMU_USER);
    } catch (e) {
      this.env.iommu.unbindNested(dev.hostRid, b.hpasid);
      throw e;
    }
    this.setRoute(b.hpasid, dev.guestRid, { kind: 'nested', domain: GPA_DOMAIN, flptrHex: `0x${b.gpgd.toString(16)}`, bindKey });
    if (!nested) {
      if (b.gpasid !== null) core.attachSpid(this.env.set, b.hpasid, b.gpasid);
      core.notify(b.hpasid, 'BIND', { rid: dev.guestRid });
    }
    this.counters.binds++;
    this.emit('bind', 'BIND_GPASID', { bdf: dev.bdf, hpasid: b.hpasid, gpasid: b.gpasid, flptr: `0x${b.gpgd.toString(16)}` });
  }

  /** VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL (uses hpasid). */
  unbind(req: GpasidBindRequest): void {
    const b = checkBindData(req, 'UNBIND_GPASID', this.env.iommu.fl5lp, true);
    const dev = this.device(req.rid);
    this.ownPasid(b.hpasid);
    const routes = this.routes.get(b.hpasid);
    const cur = routes?.get(dev.guestRid);
    if (!cur || cur.kind !== 'nested') fail('ENOENT', `PASID ${b.hpasid} is not bound on ${dev.bdf}`);
    const core = this.env.core;
    this.env.iommu.unbindNested(dev.hostRid, b.hpasid);
    this.deleteRoute(b.hpasid, dev.guestRid);
    const last = ![...(this.routes.get(b.hpasid)?.values() ?? [])].some((x) => x.kind === 'nested');
    if (last) {
      core.notify(b.hpasid, 'UNBIND', { rid: dev.guestRid });
      if (core.idInfo(b.hpasid)?.spid != null) core.detachSpid(this.env.set, b.hpasid);
    }
    core.put(this.env.set, b.hpasid, IOMMU_USER);
    this.counters.unbinds++;
    this.emit('unbind', 'UNBIND_GPASID', { bdf: dev.bdf, hpasid: b.hpasid });
  }

  // ------------------------------------------------------------------ cache invalidation

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
          this.ownPasid(pasid);
          owned = pasid;
        }
        this.applyInvalidate(c, pasid, entries[i]!.rid, dids);
        this.counters.invalidations++;
      } catch (e) {
        if (!isVsvaError(e)) throw e;
        log.debug({ vm: this.env.vmName, entry: i, code: e.code }, e.message);
        this.emit('invalidate', 'CACHE_INVALIDATE', { entries: entries.length, handled: i, error: e.code });
        return { handled: i, first_error: toNegErrno(e) };
      }
    }
    this.emit('invalidate', 'CACHE_INVALIDATE', { entries: entries.length, handled: entries.length });
    return { handled: entries.length, first_error: 0 };
  }

  /** One checked entry whose PASID (if any) is this VM's. */
  private applyInvalidate(c: CheckedInvalidate, pasid: number | null, rid: number, dids: readonly number[]): void {
    const iommu = this.env.iommu;
    const devTlbDev = (c.cache & IOMMU_CACHE_INV_TYPE.DEV_IOTLB) !== 0 ? this.device(rid) : null;
    const range = c.granu === 'addr' ? { addr: c.addr, size: c.size, leaf: c.leaf } : null;
    if ((c.cache & IOMMU_CACHE_INV_TYPE.PASID) !== 0) {
      for (const dev of this.devices.values()) iommu.invalidatePasidCache(dev.hostRid, pasid);
    }
    if ((c.cache & IOMMU_CACHE_INV_TYPE.IOTLB) !== 0) {
      for (const did of dids) iommu.invalidateIotlb(did, pasid, range);
    }
    if (devTlbDev !== null && devTlbDev.caps.ats) iommu.invalidateDevTlb(devTlbDev.hostRid, pasid, range);
  }

  // ------------------------------------------------------------------ DMA_MAP / DMA_UNMAP

  /** VFIO_IOMMU_MAP_DMA: [iova, iova+size) of a domain → guest memory at gpa. */
  dmaMap(r: DmaMapRequest): void {
    const d = this.domain(r.domain);
    if (r.iova % PAGE !== 0n || r.gpa % PAGE !== 0n || r.size % PAGE !== 0n) fail('EINVAL', 'DMA_MAP: iova, gpa and size must be 4 KiB aligned');
    if (r.iova + r.size > 1n << BigInt(this.env.iommu.addrWidth)) fail('EINVAL', `DMA_MAP: iova range ends beyond the ${this.env.iommu.addrWidth}-bit domain`);
    const hpa = this.env.mem.gpaToHpa(r.gpa, r.size);
    const iova = Number(r.iova);
    const size = Number(r.size);
    // Mappings are sorted and disjoint: the first one ending after iova is the only overlap candidate.
    const at = firstEndingAfter(d.mappings, iova);
    const ov = at < d.mappings.length && d.mappings[at]!.iova < iova + size ? d.mappings[at] : undefined;
    if (ov && ov.iova === iova && ov.size === size && ov.gpa === Number(r.gpa) && ov.flags === r.flags) return; // identical re-MAP: done
    if (ov) fail('EEXIST', `DMA_MAP: [0x${iova.toString(16)}, +0x${size.toString(16)}) overlaps the mapping at 0x${ov.iova.toString(16)}`);
    if (this.mappingCount >= MAX_MAPPINGS) fail('ENOSPC', `DMA_MAP: ${this.env.vmName} has ${MAX_MAPPINGS} mappings (the cap)`);
    this.env.iommu.map(d.did, iova, hpa, size, { read: (r.flags & 1) !== 0, write: (r.flags & 2) !== 0 });
    d.mappings.splice(at, 0, { iova, size, gpa: Number(r.gpa), hpa, flags: r.flags });
    this.mappingCount++;
  }

  /**
   * VFIO_IOMMU_UNMAP_DMA (type1 v2): removes every mapping wholly inside [iova, iova+size) and
   * returns the bytes removed (0 when none). EINVAL: a mapping straddles either end (nothing is
   * removed).
   */
  dmaUnmap(r: DmaUnmapRequest): DmaUnmapReply {
    const d = this.domain(r.domain);
    if (r.iova % PAGE !== 0n || r.size % PAGE !== 0n) fail('EINVAL', 'DMA_UNMAP: iova and size must be 4 KiB aligned');
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
    let unmapped = 0;
    for (const m of hit) {
      unmapped += this.env.iommu.unmap(d.did, m.iova, m.size);
      d.mappings.splice(d.mappings.indexOf(m), 1);
      this.mappingCount--;
    }
    return { unmapped: BigInt(unmapped) };
  }

  // ------------------------------------------------------------------ domains

  domainAlloc(): number {
    if (this.domains.size >= MAX_DOMAINS) fail('ENOSPC', `DOMAIN_ALLOC: ${this.env.vmName} has ${MAX_DOMAINS} domains (the cap)`);
    const id = this.nextDomainId;
    const did = this.env.iommu.allocDomain(`${this.env.vmName} domain ${id}`);
    this.domains.set(id, { id, did, mappings: [], rids: new Set() });
    this.nextDomainId++;
    return id;
  }

  /** EINVAL: domain 0; ENOENT: unknown; EBUSY: something is attached. Mappings go with it. */
  domainFree(id: number): void {
    if (id === GPA_DOMAIN) fail('EINVAL', 'DOMAIN_FREE: domain 0 is the VM’s GPA domain and cannot be freed');
    const d = this.domain(id);
    if (d.rids.size > 0 || this.pasidRoutesIn(id) > 0) fail('EBUSY', `DOMAIN_FREE: domain ${id} still has attachments`);
    for (const m of d.mappings) this.env.iommu.unmap(d.did, m.iova, m.size);
    this.mappingCount -= d.mappings.length;
    this.env.iommu.freeDomain(d.did);
    this.domains.delete(id);
  }

  // ------------------------------------------------------------------ devices

  /** DEVICE_ADD: a test device of this VM, attached (RID) to the GPA domain. */
  deviceAdd(r: DeviceAddRequest): void {
    if (this.devices.has(r.rid)) fail('EEXIST', `DEVICE_ADD: device ${formatBdf(r.rid)} already exists`);
    if (this.devices.size >= MAX_DEVICES) fail('ENOSPC', `DEVICE_ADD: ${this.env.vmName} has ${MAX_DEVICES} devices (the cap)`);
    const kind: DeviceKind = r.kind === WireDeviceKind.ADI ? 'adi' : 'pf';
    const caps = { pasidBits: r.pasid_width, ats: (r.caps & DeviceCap.ATS) !== 0, pri: (r.caps & DeviceCap.PRI) !== 0 };
    if (kind === 'adi' && caps.pasidBits === 0) fail('EINVAL', 'DEVICE_ADD: an ADI needs the PASID capability');
    const bdf = formatBdf(r.rid);
    const hostRid = this.env.allocHostRid();
    const gpa = this.domains.get(GPA_DOMAIN)!;
    let step = 0;
    try {
      this.env.iommu.addDevice(hostRid, `${this.env.vmName} ${bdf}`, caps);
      step = 1;
      this.env.iommu.attachRid(hostRid, gpa.did);
      step = 2;
      if (kind === 'adi') this.env.vdcm.addAdi(r.rid);
    } catch (e) {
      if (step >= 2) this.env.iommu.detachRid(hostRid);
      if (step >= 1) this.env.iommu.removeDevice(hostRid);
      this.env.freeHostRid(hostRid);
      throw e;
    }
    gpa.rids.add(r.rid);
    this.devices.set(r.rid, new DmaTestDevice(kind, r.rid, hostRid, bdf, caps, this.deviceEnv));
  }

  /** DEVICE_CONFIG: PRI / ATS enables. EINVAL: an enable without its capability. */
  deviceConfig(r: DeviceConfigRequest): void {
    const dev = this.device(r.rid);
    const pri = (r.flags & DeviceConfigFlag.PRI_ENABLE) !== 0;
    const ats = (r.flags & DeviceConfigFlag.ATS_ENABLE) !== 0;
    if (pri && !dev.caps.pri) fail('EINVAL', `DEVICE_CONFIG: ${dev.bdf} has no PRI capability`);
    if (ats && !dev.caps.ats) fail('EINVAL', `DEVICE_CONFIG: ${dev.bdf} has no ATS capability`);
    dev.priEnabled = pri;
    if (dev.caps.ats) this.env.iommu.setAtsEnabled(dev.hostRid, ats);
    dev.atsEnabled = ats;
  }

  /** ATTACH a RID (requests without PASID) or a RID+PASID to a domain. */
  attach(r: AttachRequest): void {
    const dev = this.device(r.rid);
    const d = this.domain(r.domain);
    if ((r.flags & ATTACH_PASID_VALID) === 0) {
      const curr = this.ridDomain(dev.guestRid);
      if (curr === d) return; // attached there already: done
      if (curr !== undefined) fail('EBUSY', `ATTACH: ${dev.bdf} is attached to domain ${curr.id}; detach it first`);
      this.env.iommu.attachRid(dev.hostRid, d.did);
      d.rids.add(dev.guestRid);
      return;
    }
    const pasid = r.pasid;
    this.checkDevicePasid(dev, pasid);
    this.ownLivePasid(pasid);
    if (r.pgtt === AttachPgtt.PASS_THROUGH && d.id !== GPA_DOMAIN) fail('EINVAL', 'ATTACH: pass-through (pgtt 4) means GPA = IOVA and needs domain 0');
    const cur = this.routes.get(pasid)?.get(dev.guestRid);
    if (cur && cur.kind === (r.pgtt === AttachPgtt.PASS_THROUGH ? 'pt' : 'sl') && cur.domain === d.id) return; // attached so already: done
    if (cur) fail('EBUSY', `ATTACH: PASID ${pasid} of ${dev.bdf} is already ${cur.kind === 'nested' ? 'bound' : `attached to domain ${cur.domain}`}`);
    this.iommuCall(() => this.env.iommu.attachPasid(dev.hostRid, pasid, d.did, r.pgtt === AttachPgtt.PASS_THROUGH ? 'pt' : 'sl'));
    try {
      this.env.core.get(this.env.set, pasid, IOMMU_USER);
    } catch (e) {
      this.env.iommu.detachPasid(dev.hostRid, pasid);
      throw e;
    }
    this.setRoute(pasid, dev.guestRid, { kind: r.pgtt === AttachPgtt.PASS_THROUGH ? 'pt' : 'sl', domain: d.id });
  }

  /** DETACH what ATTACH made. ENOENT: not attached there; EINVAL: a nested binding (use UNBIND_GPASID). */
  detach(r: AttachRequest): void {
    const dev = this.device(r.rid);
    const d = this.domain(r.domain);
    if ((r.flags & ATTACH_PASID_VALID) === 0) {
      if (!d.rids.has(dev.guestRid)) fail('ENOENT', `DETACH: ${dev.bdf} is not attached to domain ${d.id}`);
      this.env.iommu.detachRid(dev.hostRid);
      d.rids.delete(dev.guestRid);
      return;
    }
    const pasid = r.pasid;
    this.ownPasid(pasid);
    const cur = this.routes.get(pasid)?.get(dev.guestRid);
    if (!cur || cur.domain !== d.id) fail('ENOENT', `DETACH: PASID ${pasid} of ${dev.bdf} is not attached to domain ${d.id}`);
    if (cur.kind === 'nested') fail('EINVAL', `DETACH: PASID ${pasid} of ${dev.bdf} is a nested binding; use UNBIND_GPASID`);
    this.env.iommu.detachPasid(dev.hostRid, pasid);
    this.deleteRoute(pasid, dev.guestRid);
    this.env.core.put(this.env.set, pasid, IOMMU_USER);
  }

  /** GET_NESTING_INFO (iommu_nesting_info, reference B.2). */
  nestingInfo(): NestingInfo {
    const iommu = this.env.iommu;
    return {
      format: IOMMU_PASID_FORMAT_INTEL_VTD,
      features: IOMMU_NESTING_FEAT.SYSWIDE_PASID | IOMMU_NESTING_FEAT.BIND_PGTBL | IOMMU_NESTING_FEAT.CACHE_INVLD | IOMMU_NESTING_FEAT.PAGE_RESP,
      addr_width: iommu.addrWidth,
      pasid_bits: this.env.core.pasidBits,
      cap_reg: iommu.capReg,
      ecap_reg: iommu.ecapReg,
    };
  }

  /** PAGE_RESPONSE: complete the device's outstanding page request. ENOENT: unknown device; EINVAL: nothing matches. */
  pageResponse(r: PageResponseRequest): void {
    const dev = this.device(r.rid);
    const pasid = (r.flags & PAGE_RESPONSE_PASID_VALID) !== 0 ? r.pasid : null;
    this.env.deviceEnv.pageRequests.respond(dev.guestRid, pasid, r.grpid, r.code);
  }

  /** DEVICE_DMA: one DMA by a test device. */
  deviceDma(r: DeviceDmaRequest): Promise<DeviceDmaReply> {
    return this.device(r.rid).dma(r);
  }

  // ------------------------------------------------------------------ state

  /** The bindings/attachments of `hpasid` for the snapshot. */
  bindingsOf(hpasid: number): PasidBindingSnapshot[] {
    const rs = this.routes.get(hpasid);
    if (!rs) return [];
    const out: PasidBindingSnapshot[] = [];
    const rids = rs.size === 1 ? rs.keys() : [...rs.keys()].sort((a, b) => a - b);
    for (const rid of rids) {
      const r = rs.get(rid)!;
      const b: PasidBindingSnapshot = { bdf: this.devices.get(rid)?.bdf ?? formatBdf(rid), pgtt: r.kind };
      if (r.flptrHex !== undefined) b.flptr = r.flptrHex;
      out.push(b);
    }
    return out;
  }

  listDevices(): { bdf: string; kind: DeviceKind; hostBdf: string; pri: boolean; ats: boolean }[] {
    return [...this.devices.values()]
      .sort((a, b) => a.guestRid - b.guestRid)
      .map((d) => ({ bdf: d.bdf, kind: d.kind, hostBdf: formatBdf(d.hostRid), pri: d.priEnabled, ats: d.atsEnabled }));
  }

  listDomains(): { id: number; did: number; mappings: number; mappedBytes: number; rids: string[] }[] {
    return [...this.domains.values()].map((d) => ({
      id: d.id,
      did: d.did,
      mappings: d.mappings.length,
      mappedBytes: d.mappings.reduce((n, m) => n + m.size, 0),
      rids: [...d.rids].sort((a, b) => a - b).map(formatBdf),
    }));
  }

  get mappings(): number {
    return this.mappingCount;
  }

  /**
   * Release everything (VM teardown), in dependency order: PASID routes (with their references
   * and UNBIND notifications), RID attachments, devices, mappings, domains, the notifier.
   * PASIDs themselves are freed by the caller (free_all_in_set). Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const core = this.env.core;
    for (const [pasid, rs] of [...this.routes]) {
      for (const [rid, r] of [...rs]) {
        const dev = this.devices.get(rid)!;
        if (r.kind === 'nested') this.env.iommu.unbindNested(dev.hostRid, pasid);
        else this.env.iommu.detachPasid(dev.hostRid, pasid);
        this.deleteRoute(pasid, rid);
        if (r.kind === 'nested' && ![...(this.routes.get(pasid)?.values() ?? [])].some((x) => x.kind === 'nested')) {
          core.notify(pasid, 'UNBIND', { rid });
          if (core.idInfo(pasid)?.spid != null) core.detachSpid(this.env.set, pasid);
        }
        core.put(this.env.set, pasid, IOMMU_USER);
      }
    }
    for (const dev of this.devices.values()) {
      const d = this.ridDomain(dev.guestRid);
      if (d) {
        this.env.iommu.detachRid(dev.hostRid);
        d.rids.delete(dev.guestRid);
      }
      this.env.iommu.removeDevice(dev.hostRid);
      this.env.freeHostRid(dev.hostRid);
    }
    this.devices.clear();
    for (const d of this.domains.values()) {
      for (const m of d.mappings) this.env.iommu.unmap(d.did, m.iova, m.size);
      this.env.iommu.freeDomain(d.did);
    }
    this.domains.clear();
    this.mappingCount = 0;
    if (core.isSetValid(this.env.set)) core.unregisterNotifier(this.env.set, this.notifier);
  }

  // ------------------------------------------------------------------ internals

  /** The device of this VM with guest RID `rid`. ENOENT. */
  private device(rid: number): DmaTestDevice {
    const d = this.devices.get(rid);
    if (!d) fail('ENOENT', `no device ${formatBdf(rid)} in ${this.env.vmName}`);
    return d;
  }

  private domain(id: number): ContainerDomain {
    const d = this.domains.get(id);
    if (!d) fail('ENOENT', `no domain ${id} in ${this.env.vmName}`);
    return d;
  }

  private ridDomain(rid: number): ContainerDomain | undefined {
    for (const d of this.domains.values()) if (d.rids.has(rid)) return d;
    return undefined;
  }

  private pasidRoutesIn(domainId: number): number {
    let n = 0;
    for (const rs of this.routes.values()) for (const r of rs.values()) if (r.domain === domainId) n++;
    return n;
  }

  private checkDevicePasid(dev: DmaTestDevice, pasid: number): void {
    if (dev.caps.pasidBits === 0) fail('EINVAL', `${dev.bdf} has no PASID capability`);
    if (pasid >= 2 ** dev.caps.pasidBits) fail('EINVAL', `PASID ${pasid} is beyond ${dev.bdf}'s ${dev.caps.pasidBits}-bit PASID width`);
  }

  /** `pasid` is allocated in this VM's set (any state). ENOENT otherwise — another VM's too. */
  private ownPasid(pasid: number): void {
    try {
      this.env.core.find(this.env.set, pasid);
    } catch (e) {
      if (isVsvaError(e, 'EACCES') || isVsvaError(e, 'ENOENT') || isVsvaError(e, 'EINVAL')) fail('ENOENT', `PASID ${pasid} is not a PASID of ${this.env.vmName}`);
      throw e;
    }
  }

  /** `pasid` is this VM's and not being freed. ENOENT otherwise. */
  private ownLivePasid(pasid: number): void {
    this.ownPasid(pasid);
    if (this.env.core.idInfo(pasid)!.state === 'free-pending') fail('ENOENT', `PASID ${pasid} of ${this.env.vmName} has been freed`);
  }

  private ownsLivePasid(pasid: number): boolean {
    try {
      this.ownLivePasid(pasid);
      return true;
    } catch {
      return false;
    }
  }

  /** Map the IOMMU's argument errors onto the container's errno (ERANGE/EOPNOTSUPP → EINVAL). */
  private iommuCall(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (isVsvaError(e, 'ERANGE') || isVsvaError(e, 'EOPNOTSUPP')) fail('EINVAL', (e as VsvaError).message);
      throw e;
    }
  }

  private setRoute(pasid: number, rid: number, r: PasidRoute): void {
    let m = this.routes.get(pasid);
    if (!m) this.routes.set(pasid, (m = new Map()));
    m.set(rid, r);
  }

  private deleteRoute(pasid: number, rid: number): void {
    const m = this.routes.get(pasid);
    if (!m) return;
    m.delete(rid);
    if (m.size === 0) this.routes.delete(pasid);
  }

  /**
   * FREE of a PASID that still has routes (the guest freed before unbinding): tear the routes
   * down and put their references (reference A.3 "misbehaving case"). The SPID stays until the
   * ID is reclaimed (detach_spid is not allowed in a FREE handler).
   */
  private onIoasidEvent(a: IoasidNotifyArgs): void {
    if (a.event !== 'FREE' || a.set !== this.env.set) return;
    const rs = this.routes.get(a.id);
    if (!rs) return;
    for (const [rid, r] of [...rs]) {
      const dev = this.devices.get(rid)!;
      if (r.kind === 'nested') this.env.iommu.unbindNested(dev.hostRid, a.id);
      else this.env.iommu.detachPasid(dev.hostRid, a.id);
      this.deleteRoute(a.id, rid);
      this.env.core.put(this.env.set, a.id, IOMMU_USER);
    }
    log.debug({ vm: this.env.vmName, pasid: a.id }, 'freed PASID had routes; torn down');
  }

  private emit(kind: 'bind' | 'unbind' | 'invalidate', name: string, args: Record<string, string | number | boolean | null>): void {
    const t = this.env.trace;
    if (t?.active) t.emit({ kind, side: 'host', vm: this.env.vmName, name, args });
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
