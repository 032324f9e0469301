/**
 * The iommufd uAPI (docs/protocol.md §13; Linux include/uapi/linux/iommufd.h) behind HostUapi,
 * mapped the way QEMU's intel-iommu drives iommufd for nested translation of an assigned device
 * (hw/i386/intel_iommu.c with hw/vfio/iommufd.c):
 *
 * | the model asks for                  | iommufd                                                          |
 * |-------------------------------------|------------------------------------------------------------------|
 * | bring-up                            | IOAS_ALLOC; IOAS_MAP of guest RAM at IOVA = GPA; FAULT_QUEUE_ALLOC; per device DEVICE_BIND (its dev_id) and GET_HW_INFO; HWPT_ALLOC of the nest parent (NEST_PARENT, PASID) from the IOAS; every RID attached to it |
 * | domain 0 (GPA)                      | the nest-parent paging HWPT                                      |
 * | other domains                       | an IOAS each (IOAS_ALLOC / DESTROY); attached through its automatic paging HWPT |
 * | DMA map / unmap                     | IOAS_MAP (FIXED_IOVA, READABLE / WRITEABLE) / IOAS_UNMAP          |
 * | first-level table at RID+PASID      | HWPT_ALLOC nested (VTD_S1: pgtbl_addr, addr_width, SRE/EAFE/WPE; PASID, FAULT_ID_VALID) over the nest parent + DEVICE_ATTACH with the PASID, or DEVICE_REPLACE when the PASID is routed already; the old nested HWPT is destroyed after |
 * | pass-through / second level         | DEVICE_ATTACH / _REPLACE of the PASID to the nest parent / the domain's IOAS |
 * | route removed                       | DEVICE_DETACH, DESTROY of the nested HWPT                         |
 * | RID re-routed                       | DEVICE_REPLACE (ATTACH when detached)                             |
 * | IOTLB flushes                       | HWPT_INVALIDATE of the nested HWPTs (iommufd-invalidations.ts)    |
 * | page requests                       | IOMMUFD_FAULT records of the VM's fault queue → PAGE_REQUEST for the model; the answer → FAULT_RESPOND with the group's cookie |
 *
 * PASIDs: iommufd has no system PASID allocator. A PASID the guest allocated through the host
 * (VT-d VCMD, virtio-iommu's PASID_ALLOC) is a global PASID of the VM's IOASID set and is
 * attached with GLOBAL_PASID, so PASID quota and frees behave as on the VFIO SVA uAPI; a PASID
 * the guest picked itself (VT-d without VCMD) is a device-local PASID, attached as is, with no
 * allocation and no quota (docs/protocol.md §13.12).
 *
 * The objects are the host's: IDs change on a fresh host. `announce` forgets everything of the
 * previous host, so a replay re-creates the HWPTs and attachments from the models' shadows.
 */
import { fail } from '../../src/errors.js';
import { decodeCap, decodeEcap } from '../../src/vtd/cap-ecap.js';
import { DeviceCap } from '../../vhost/messages/device.js';
import { DmaMapFlag } from '../../vhost/messages/dma.js';
import { PageRequestFlag, type PageRequestMessage } from '../../vhost/messages/backend.js';
import { IOMMU_PAGE_RESP } from '../../vhost/messages/page.js';
import { IOMMU_SVA_VTD_GPASID } from '../../vhost/messages/pasid.js';
import {
  HwptVtdS1Struct,
  IOMMU_HW_INFO_TYPE,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA,
  IOMMU_IOAS_MAP,
  IOMMU_PGFAULT_FLAGS,
  IOMMU_PGFAULT_PERM,
  IOMMU_VTD_S1,
  IOMMUFD_ATTACH,
  IOMMUFD_DEVICE_CAP,
  IOMMUFD_PAGE_RESP,
  structBytes,
  type HwInfoReply,
} from '../../vhost/messages/iommufd.js';
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import type { FirstLevelTable, HostCalls, HostHwInfo, HostUapi, PageResponseArgs, PasidRef, PasidRoute, UapiDevice } from './host-uapi.js';
import type { InvalidationSink } from './invalidation-sink.js';
import { IommufdInvalidationBatch, type NestedHwptIndex } from './iommufd-invalidations.js';

/** The VT-d interrupt window every attached device reserves in its IOAS (docs/protocol.md §13.4). */
const MSI_START = 0xfee0_0000n;
const MSI_END = 0xfef0_0000n;

/** What the VM holds on the host, shared by every view of the uAPI (via). */
export interface IommufdObjects {
  ioas: number;
  /** The nest-parent paging HWPT (domain 0 of the model); 0 when the VM has no device. */
  nestParent: number;
  faultQueue: number;
  /** Per guest RID: dev_id and GET_HW_INFO. */
  readonly devices: Map<number, { devId: number; hw: HwInfoReply }>;
  /** Model domain handle → IOAS ID (domain 0 is not here). */
  readonly domains: Map<number, number>;
  nextDomain: number;
  /** Nested HWPTs by host PASID, then guest RID (owned: destroyed when the route goes). */
  readonly nested: Map<number, Map<number, number>>;
  /** Unanswered page-request groups: `${rid}/${pasid | -1}/${prgi}` → cookie. */
  readonly cookies: Map<string, number>;
  /** Nested HWPTs allocated and not yet attached (held, not orphans, for the reconciliation). */
  readonly pending: Set<number>;
}

function emptyObjects(): IommufdObjects {
  return { ioas: 0, nestParent: 0, faultQueue: 0, devices: new Map(), domains: new Map(), nextDomain: 1, nested: new Map(), cookies: new Map(), pending: new Set() };
}

/** iommu_hwpt_vtd_s1.flags from the bind flags of a first-level PASID entry (SRE, EAFE, WPE; the rest has no stage-1 field). */
export function vtdS1Flags(vtdFlags: bigint): bigint {
  let f = 0n;
  if ((vtdFlags & IOMMU_SVA_VTD_GPASID.SRE) !== 0n) f |= IOMMU_VTD_S1.SRE;
  if ((vtdFlags & IOMMU_SVA_VTD_GPASID.EAFE) !== 0n) f |= IOMMU_VTD_S1.EAFE;
  if ((vtdFlags & IOMMU_SVA_VTD_GPASID.WPE) !== 0n) f |= IOMMU_VTD_S1.WPE;
  return f;
}

/**
 * The host IOMMU behind a device must do what the guest's vIOMMU promises on top of it (QEMU
 * hw/i386/intel_iommu_accel.c `vtd_check_hiod_accel`): VT-d, scalable mode with PASIDs, nested
 * translation with first-level tables, at least the 48-bit guest address width, and the
 * first-level page sizes and depths the guest's tables may use (vsva's VT-d reports CAP.FL1GP
 * and CAP.FL5LP; a virtio-iommu table may have 5 levels too).
 */
export function checkHwInfo(bdf: string, hw: HwInfoReply): void {
  if (hw.out_data_type !== IOMMU_HW_INFO_TYPE.INTEL_VTD) fail('EOPNOTSUPP', `GET_HW_INFO of ${bdf}: data type ${hw.out_data_type} is not Intel VT-d`);
  const cap = decodeCap(hw.cap_reg).fields;
  const ecap = decodeEcap(hw.ecap_reg).fields;
  const missing = (['SMTS', 'PASID', 'NEST', 'FLTS'] as const).filter((f) => ecap[f] !== 1n);
  if (missing.length > 0) fail('EOPNOTSUPP', `GET_HW_INFO of ${bdf}: the host IOMMU lacks ECAP.${missing.join(', ECAP.')} (nested first-level translation)`);
  if (cap.MGAW + 1n < 48n) fail('EOPNOTSUPP', `GET_HW_INFO of ${bdf}: host address width ${cap.MGAW + 1n} is below the guest's 48 bits`);
  const noFl = (['FL1GP', 'FL5LP'] as const).filter((f) => cap[f] !== 1n);
  if (noFl.length > 0) fail('EOPNOTSUPP', `GET_HW_INFO of ${bdf}: the host IOMMU lacks CAP.${noFl.join(', CAP.')}, which the guest's first-level tables may use`);
}

export class IommufdUapi implements HostUapi, NestedHwptIndex {
  readonly kind = 'iommufd' as const;
  readonly replaces = true;
  readonly routesHoldPasids = true;

  constructor(
    private readonly host: HostCalls,
    readonly objects: IommufdObjects = emptyObjects(),
  ) {}

  via(host: HostCalls): IommufdUapi {
    return new IommufdUapi(host, this.objects);
  }

  async announce(devices: readonly UapiDevice[], ramSize: number): Promise<void> {
    const adi = devices.find((d) => d.kind !== 'pf');
    if (adi !== undefined) fail('EOPNOTSUPP', `device ${adi.bdf}: the iommufd uAPI assigns physical functions only (an ADI needs the VFIO SVA uAPI's VDCM)`);
    Object.assign(this.objects, emptyObjects());
    const o = this.objects;
    const h = this.host;
    o.ioas = (await h.call('IOMMUFD_IOAS_ALLOC', { flags: 0 })).out_id;
    const size = BigInt(ramSize);
    for (const [start, end] of [[0n, size < MSI_START ? size : MSI_START], [MSI_END, size]] as const) {
      if (end > start) await h.call('IOMMUFD_IOAS_MAP', { ioas_id: o.ioas, flags: IOMMU_IOAS_MAP.FIXED_IOVA | IOMMU_IOAS_MAP.READABLE | IOMMU_IOAS_MAP.WRITEABLE, user_va: start, length: end - start, iova: start });
    }
    o.faultQueue = (await h.call('IOMMUFD_FAULT_QUEUE_ALLOC', { flags: 0 })).out_id;
    for (const d of devices) {
      const caps = ((d.caps & DeviceCap.ATS) !== 0 ? IOMMUFD_DEVICE_CAP.ATS : 0) | ((d.caps & DeviceCap.PRI) !== 0 ? IOMMUFD_DEVICE_CAP.PRI : 0);
      const devId = (await h.call('IOMMUFD_DEVICE_BIND', { rid: d.rid, pasid_width: (d.caps & DeviceCap.PASID) !== 0 ? d.pasidWidth : 0, caps })).out_id;
      const hw = await h.call('IOMMUFD_GET_HW_INFO', { dev_id: devId, flags: 0 });
      o.devices.set(d.rid, { devId, hw });
      checkHwInfo(d.bdf, hw);
    }
    const first = o.devices.values().next();
    if (first.done === true) return;
    o.nestParent = (
      await h.call('IOMMUFD_HWPT_ALLOC', {
        flags: IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID,
        dev_id: first.value.devId,
        pt_id: o.ioas,
        data_type: IOMMU_HWPT_DATA.NONE,
        data_len: 0,
        fault_id: 0,
        data: new Uint8Array(0),
      })
    ).out_id;
    for (const { devId } of o.devices.values()) await h.call('IOMMUFD_DEVICE_ATTACH', { dev_id: devId, flags: 0, pasid: 0, pt_id: o.nestParent });
  }

  hostObjects(): ReadonlySet<number> {
    const o = this.objects;
    return new Set([o.ioas, o.nestParent, o.faultQueue, ...o.domains.values(), ...this.allNested(), ...o.pending].filter((id) => id !== 0));
  }

  hwInfo(rid: number): HostHwInfo {
    const d = this.objects.devices.get(rid);
    return { cap: d?.hw.cap_reg ?? null, ecap: d?.hw.ecap_reg ?? null };
  }

  // ---- routes ------------------------------------------------------------------------------------

  async routePasid(p: PasidRef, route: PasidRoute, replacing: boolean): Promise<void> {
    const devId = this.devId(p.rid);
    const old = this.nestedOf(p);
    const fresh = route.kind === 'nested' ? await this.allocNested(devId, route.table) : null;
    const ptId = fresh ?? this.ptOf(route.kind === 'sl' ? route.domain : 0);
    if (fresh !== null) this.objects.pending.add(fresh);
    const req = { dev_id: devId, flags: IOMMUFD_ATTACH.PASID | (p.global ? IOMMUFD_ATTACH.GLOBAL_PASID : 0), pasid: p.hpasid, pt_id: ptId };
    try {
      if (replacing) await this.host.call('IOMMUFD_DEVICE_REPLACE', req);
      else await this.host.call('IOMMUFD_DEVICE_ATTACH', req);
    } catch (e) {
      if (fresh !== null) {
        this.objects.pending.delete(fresh);
        await this.destroyQuietly(fresh);
      }
      throw e;
    }
    if (fresh !== null) this.objects.pending.delete(fresh);
    this.setNested(p, fresh);
    if (replacing && old !== undefined) await this.destroyQuietly(old);
  }

  async unroutePasid(p: PasidRef): Promise<void> {
    const nested = this.nestedOf(p);
    await this.host.call('IOMMUFD_DEVICE_DETACH', { dev_id: this.devId(p.rid), flags: IOMMUFD_ATTACH.PASID | (p.global ? IOMMUFD_ATTACH.GLOBAL_PASID : 0), pasid: p.hpasid, pt_id: 0 });
    this.setNested(p, null);
    if (nested !== undefined) await this.host.call('IOMMUFD_DESTROY', { id: nested });
  }

  async attachRid(rid: number, from: number | null, domain: number): Promise<void> {
    const req = { dev_id: this.devId(rid), flags: 0, pasid: 0, pt_id: this.ptOf(domain) };
    if (from !== null) await this.host.call('IOMMUFD_DEVICE_REPLACE', req);
    else await this.host.call('IOMMUFD_DEVICE_ATTACH', req);
  }

  async detachRid(rid: number, _domain?: number): Promise<void> {
    await this.host.call('IOMMUFD_DEVICE_DETACH', { dev_id: this.devId(rid), flags: 0, pasid: 0, pt_id: 0 });
  }

  // ---- domains -------------------------------------------------------------------------------------

  async domainAlloc(): Promise<number> {
    const ioas = (await this.host.call('IOMMUFD_IOAS_ALLOC', { flags: 0 })).out_id;
    const d = this.objects.nextDomain++;
    this.objects.domains.set(d, ioas);
    return d;
  }

  async domainFree(domain: number): Promise<void> {
    const ioas = this.ioasOf(domain);
    await this.host.call('IOMMUFD_DESTROY', { id: ioas });
    this.objects.domains.delete(domain);
  }

  async dmaMap(domain: number, iova: bigint, gpa: bigint, size: bigint, flags: number): Promise<void> {
    const f = IOMMU_IOAS_MAP.FIXED_IOVA | ((flags & DmaMapFlag.READ) !== 0 ? IOMMU_IOAS_MAP.READABLE : 0) | ((flags & DmaMapFlag.WRITE) !== 0 ? IOMMU_IOAS_MAP.WRITEABLE : 0);
    await this.host.call('IOMMUFD_IOAS_MAP', { ioas_id: this.ioasOf(domain), flags: f, user_va: gpa, length: size, iova });
  }

  async dmaUnmap(domain: number, iova: bigint, size: bigint): Promise<void> {
    await this.host.call('IOMMUFD_IOAS_UNMAP', { ioas_id: this.ioasOf(domain), iova, length: size });
  }

  // ---- invalidations, page requests ----------------------------------------------------------------

  invalidations(opts: { log: Logger; trace: TraceBus; vm: string }): InvalidationSink {
    return new IommufdInvalidationBatch(this.host, this, opts.log, opts.trace, opts.vm);
  }

  nestedAt(hpasid: number): number[] {
    const m = this.objects.nested.get(hpasid);
    return m === undefined ? [] : [...m.values()];
  }

  allNested(): number[] {
    const out: number[] = [];
    for (const m of this.objects.nested.values()) out.push(...m.values());
    return out;
  }

  /** FAULT_RESPOND for the group the request belongs to (SUCCESS stays SUCCESS; INVALID and FAILURE become INVALID). */
  async pageResponse(r: PageResponseArgs): Promise<void> {
    const k = cookieKey(r.rid, r.pasid, r.prgi);
    const cookie = this.objects.cookies.get(k);
    if (cookie === undefined) fail('ENOENT', `page response: no page request of ${r.rid.toString(16)} PASID ${r.pasid ?? '-'} group ${r.prgi} is waiting`);
    this.objects.cookies.delete(k);
    await this.host.call('IOMMUFD_FAULT_RESPOND', { fault_id: this.objects.faultQueue, cookie, code: r.code === IOMMU_PAGE_RESP.SUCCESS ? IOMMUFD_PAGE_RESP.SUCCESS : IOMMUFD_PAGE_RESP.INVALID });
  }

  /** IOMMUFD_FAULT → the PAGE_REQUEST it stands for (struct iommu_hwpt_pgfault → the PCI page request). */
  backendEvent(ev: BackendEvent): BackendEvent {
    if (ev.name !== 'IOMMUFD_FAULT') return ev;
    const m = ev.msg;
    let rid: number | undefined;
    for (const [r, d] of this.objects.devices) if (d.devId === m.dev_id) rid = r;
    if (rid === undefined) return ev;
    const hasPasid = (m.flags & IOMMU_PGFAULT_FLAGS.PASID_VALID) !== 0;
    const flags =
      (hasPasid ? PageRequestFlag.PASID_VALID : 0) |
      ((m.flags & IOMMU_PGFAULT_FLAGS.LAST_PAGE) !== 0 ? PageRequestFlag.LPIG : 0) |
      ((m.perm & IOMMU_PGFAULT_PERM.READ) !== 0 ? PageRequestFlag.READ : 0) |
      ((m.perm & IOMMU_PGFAULT_PERM.WRITE) !== 0 ? PageRequestFlag.WRITE : 0) |
      ((m.perm & IOMMU_PGFAULT_PERM.EXEC) !== 0 ? PageRequestFlag.EXEC : 0) |
      ((m.perm & IOMMU_PGFAULT_PERM.PRIV) !== 0 ? PageRequestFlag.PRIV : 0);
    const msg: PageRequestMessage = { rid, prgi: m.grpid, flags, pasid: hasPasid ? m.pasid : 0, addr: m.addr };
    this.objects.cookies.set(cookieKey(rid, hasPasid ? m.pasid : null, m.grpid), m.cookie);
    return { name: 'PAGE_REQUEST', msg };
  }

  // ---- internals -----------------------------------------------------------------------------------

  private nestedOf(p: PasidRef): number | undefined {
    return this.objects.nested.get(p.hpasid)?.get(p.rid);
  }

  private setNested(p: PasidRef, hwpt: number | null): void {
    let m = this.objects.nested.get(p.hpasid);
    if (hwpt === null) {
      m?.delete(p.rid);
      if (m?.size === 0) this.objects.nested.delete(p.hpasid);
      return;
    }
    if (m === undefined) this.objects.nested.set(p.hpasid, (m = new Map()));
    m.set(p.rid, hwpt);
  }

  private devId(rid: number): number {
    const d = this.objects.devices.get(rid);
    if (d === undefined) fail('ENODEV', `no device with RID 0x${rid.toString(16)} is bound to iommufd`);
    return d.devId;
  }

  private ioasOf(domain: number): number {
    const ioas = domain === 0 ? this.objects.ioas : this.objects.domains.get(domain);
    if (ioas === undefined) fail('ENOENT', `domain ${domain} has no IOAS`);
    return ioas;
  }

  /** What a route through `domain` attaches to: the nest parent (domain 0), else the domain's IOAS. */
  private ptOf(domain: number): number {
    if (domain === 0) return this.objects.nestParent !== 0 ? this.objects.nestParent : this.objects.ioas;
    return this.ioasOf(domain);
  }

  private async allocNested(devId: number, t: FirstLevelTable): Promise<number> {
    const data = structBytes(HwptVtdS1Struct, [{ flags: vtdS1Flags(t.vtdFlags), pgtbl_addr: t.flptr, addr_width: t.addrWidth, __reserved: 0 }]);
    const r = await this.host.call('IOMMUFD_HWPT_ALLOC', {
      flags: IOMMU_HWPT_ALLOC.PASID | IOMMU_HWPT_ALLOC.FAULT_ID_VALID,
      dev_id: devId,
      pt_id: this.objects.nestParent,
      data_type: IOMMU_HWPT_DATA.VTD_S1,
      data_len: data.length,
      fault_id: this.objects.faultQueue,
      data,
    });
    return r.out_id;
  }

  private async destroyQuietly(id: number): Promise<void> {
    try {
      await this.host.call('IOMMUFD_DESTROY', { id });
    } catch {
      /* already gone with the host's state; nothing to give back */
    }
  }
}

function cookieKey(rid: number, pasid: number | null, prgi: number): string {
  return `${rid}/${pasid ?? -1}/${prgi}`;
}
