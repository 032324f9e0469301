/**
 * The iommufd personality of one VM (drivers/iommu/iommufd/: main.c, ioas.c, hw_pagetable.c,
 * device.c, eventq.c; uAPI include/uapi/linux/iommufd.h): the VM's objects — IOASes, HWPTs,
 * bound devices, fault queues — with their IDs and lifetimes, on the shared host IOMMU. Every
 * request of the IOMMUFD_* message family (docs/protocol.md §13) is one method here, taking the
 * decoded wire request.
 *
 * Errno conventions (the uAPI header's "General ioctl format"): an unknown flag bit or type →
 * EOPNOTSUPP; an unknown ID, or an ID of another kind where one kind is expected → ENOENT; a
 * malformed or inconsistent argument, or a `pt_id` of a kind the request cannot use → EINVAL;
 * a non-zero byte past the struct in user data → E2BIG; an object in use → EBUSY; a wrapping
 * range → EOVERFLOW; no room (IDs, IOVA) → ENOSPC. Every method checks before it mutates and
 * undoes partial work.
 *
 * Nothing of another VM is reachable: IDs are per context, devices are the VM's own, memory is
 * the VM's memory table (EFAULT outside it), global PASIDs come from the VM's IOASID set.
 */
import { fail, VsvaError } from '../../src/errors.js';
import { formatBdf } from '../../src/pci.js';
import { PASID_BITS } from '../../src/vtd/pasid-entry.js';
import {
  IOMMU_HW_CAP, IOMMU_HW_INFO_TYPE, IOMMU_HWPT_ALLOC, IOMMU_HWPT_DATA, IOMMU_HWPT_INVALIDATE_DATA, IOMMU_IOAS_MAP,
  IOMMU_PGFAULT_FLAGS, IOMMU_PGFAULT_PERM, IOMMUFD_ATTACH, IOMMUFD_DEVICE_CAP, IOMMUFD_PAGE_RESP, VtdS1InvalidateStruct,
  type DeviceAttachRequest, type DeviceBindRequest, type FaultRespondRequest, type HwInfoReply, type HwInfoRequest,
  type HwptAllocRequest, type HwptInvalidateReply, type HwptInvalidateRequest, type HwptPgfault, type IoasCopyRequest,
  type IoasMapRequest, type IoasUnmapRequest, type IovaRange,
} from '../../vhost/messages/iommufd.js';
import type { IoasidCore, IoasidSet } from '../ioasid/index.js';
import { addressBlocks, PageResponseCode, type HostIommu, type IommuFaultEvent, type PageRequest } from '../iommu/index.js';
import { attach, detach, replace, IommufdDevice, type AttachEnv } from './device.js';
import { IommufdDma, type IommufdDmaEnv } from './dma.js';
import { FaultQueue } from './fault-queue.js';
import { HwptNested, HwptPaging, parseVtdS1, parseVtdS1Invalidate, type Hwpt } from './hw-pagetable.js';
import { IOAS_CHUNK_AREAS, IOAS_SLICE_AREAS, IOVA_ALIGNMENT, Ioas, MAX_IOAS_AREAS, type IoasArea, type IoasAreaBudget } from './ioas.js';
import { nextSlice, sliceTimer } from '../vfio/slice-budget.js';
import { ObjectTable } from './object-table.js';
import type { IommufdSnapshot } from './snapshot.js';
import { snapshotOf } from './snapshot.js';

const MAP_FLAGS = IOMMU_IOAS_MAP.FIXED_IOVA | IOMMU_IOAS_MAP.WRITEABLE | IOMMU_IOAS_MAP.READABLE;
const HWPT_FLAGS = IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.DIRTY_TRACKING | IOMMU_HWPT_ALLOC.FAULT_ID_VALID | IOMMU_HWPT_ALLOC.PASID;
const NESTED_FLAGS = IOMMU_HWPT_ALLOC.FAULT_ID_VALID | IOMMU_HWPT_ALLOC.PASID;
const ATTACH_FLAGS = IOMMUFD_ATTACH.PASID | IOMMUFD_ATTACH.GLOBAL_PASID;
const DEVICE_CAPS = IOMMUFD_DEVICE_CAP.ATS | IOMMUFD_DEVICE_CAP.PRI;
/** Devices one VM may bind (ENOSPC past it). */
export const MAX_IOMMUFD_DEVICES = 32;

export interface IommufdEnv {
  vmName: string;
  iommu: HostIommu;
  core: IoasidCore;
  set: IoasidSet;
  /** Host physical address of guest memory [gpa, gpa + size) (EFAULT outside the memory table). */
  gpaToHpa(gpa: bigint, size: bigint): number;
  allocHostRid(): number;
  freeHostRid(rid: number): void;
  /** DEVICE_DMA / DEVICE_CONFIG for the bound devices (absent: no DMA paths, e.g. in unit tests). */
  dma?: IommufdDmaEnv;
  /**
   * The VM's event counters (the dashboard's rates): a nested HWPT attached or replaced at a
   * PASID counts as a bind, its detach as an unbind, each handled HWPT_INVALIDATE entry as an
   * invalidation — what the VFIO SVA uAPI counts for BIND, UNBIND and CACHE_INVALIDATE.
   */
  counters?: { binds: number; unbinds: number; invalidations: number };
}

export class IommufdContext {
  readonly objects = new ObjectTable();
  /** The bound devices' DMA paths (DEVICE_DMA, DEVICE_CONFIG), when the VM gave a DMA environment. */
  readonly dma: IommufdDma | null;
  private readonly attachEnv: AttachEnv;
  private closed = false;
  /** Areas of all this VM's IOASes together, against MAX_IOAS_AREAS. */
  private readonly areaBudget: IoasAreaBudget = { areas: 0, max: MAX_IOAS_AREAS };

  constructor(private readonly env: IommufdEnv) {
    this.attachEnv = { iommu: env.iommu, core: env.core, set: env.set, releaseAuto: (h) => this.destroyHwpt(h) };
    this.dma = env.dma === undefined ? null : new IommufdDma(env.vmName, env.iommu, env.dma);
  }

  // ---- DESTROY ---------------------------------------------------------------------------------

  /** IOMMU_DESTROY. ENOENT; EBUSY in use (a device is owned by its binding: DEVICE_UNBIND). */
  destroy(id: number): void {
    const what = 'IOMMUFD_DESTROY';
    const o = this.objects.any(id, what);
    if (o.kind === 'device') fail('EBUSY', `${what}: device ${id} is owned by its binding; unbind it`);
    this.objects.remove(o, what);
    if (o instanceof HwptPaging || o instanceof HwptNested) this.releaseHwpt(o);
    else if (o instanceof FaultQueue) o.close();
    else if (o instanceof Ioas) o.forgetAreas();
  }

  // ---- IOAS ------------------------------------------------------------------------------------

  ioasAlloc(flags: number): number {
    if (flags !== 0) fail('EOPNOTSUPP', `IOMMUFD_IOAS_ALLOC: unknown flags 0x${flags.toString(16)}`);
    return this.objects.add(new Ioas(this.objects.reserveId(), this.areaBudget)).id;
  }

  ioasMap(r: IoasMapRequest): bigint {
    const what = 'IOMMUFD_IOAS_MAP';
    if ((r.flags & ~MAP_FLAGS) !== 0) fail('EOPNOTSUPP', `${what}: unknown flags 0x${(r.flags & ~MAP_FLAGS).toString(16)}`);
    const ioas = this.ioas(r.ioas_id, what);
    if ((r.flags & (IOMMU_IOAS_MAP.READABLE | IOMMU_IOAS_MAP.WRITEABLE)) === 0) fail('EINVAL', `${what}: neither READABLE nor WRITEABLE`);
    if (r.user_va % IOVA_ALIGNMENT !== 0n) fail('EINVAL', `${what}: user_va 0x${r.user_va.toString(16)} is not 4 KiB aligned`);
    const span = ioas.placeArea((r.flags & IOMMU_IOAS_MAP.FIXED_IOVA) !== 0 ? r.iova : null, r.length, what);
    if (r.user_va + r.length > 1n << 64n) fail('EOVERFLOW', `${what}: user_va + length wraps past 2^64`);
    const hpa = this.env.gpaToHpa(r.user_va, r.length);
    ioas.insert([{ iova: span.start, length: r.length, gpa: r.user_va, hpa, prot: prot(r.flags) }]);
    return span.start;
  }

  /** IOAS_UNMAP; a Promise when cut into slices (Ioas.unmap), which stops with ENOTCONN if the context closes meanwhile. */
  ioasUnmap(r: IoasUnmapRequest): bigint | Promise<bigint> {
    return this.ioas(r.ioas_id, 'IOMMUFD_IOAS_UNMAP').unmap(r.iova, r.length, 'IOMMUFD_IOAS_UNMAP', () => !this.closed);
  }

  ioasCopy(r: IoasCopyRequest): bigint {
    const what = 'IOMMUFD_IOAS_COPY';
    if ((r.flags & ~MAP_FLAGS) !== 0) fail('EOPNOTSUPP', `${what}: unknown flags 0x${(r.flags & ~MAP_FLAGS).toString(16)}`);
    const src = this.ioas(r.src_ioas_id, what);
    const dst = this.ioas(r.dst_ioas_id, what);
    const pieces = src.slice(r.src_iova, r.length, what);
    const span = dst.placeArea((r.flags & IOMMU_IOAS_MAP.FIXED_IOVA) !== 0 ? r.dst_iova : null, r.length, what);
    const p = prot(r.flags);
    const areas: IoasArea[] = pieces.map((x) => ({ iova: span.start + x.offset, length: x.length, gpa: x.gpa, hpa: x.hpa, prot: { read: p.read && x.prot.read, write: p.write && x.prot.write } }));
    dst.insert(areas);
    return span.start;
  }

  ioasIovaRanges(ioasId: number): { alignment: bigint; ranges: IovaRange[] } {
    const ioas = this.ioas(ioasId, 'IOMMUFD_IOAS_IOVA_RANGES');
    return { alignment: IOVA_ALIGNMENT, ranges: ioas.iovaRanges() };
  }

  ioasAllowIovas(ioasId: number, ranges: IovaRange[]): void {
    this.ioas(ioasId, 'IOMMUFD_IOAS_ALLOW_IOVAS').allowIovas(ranges, 'IOMMUFD_IOAS_ALLOW_IOVAS');
  }

  // ---- devices ---------------------------------------------------------------------------------

  /** Bind a new device of the VM (blocked until attached). EEXIST: its RID is bound; ENOSPC; EOPNOTSUPP unknown caps. */
  deviceBind(r: DeviceBindRequest): number {
    const what = 'IOMMUFD_DEVICE_BIND';
    if ((r.caps & ~DEVICE_CAPS) !== 0) fail('EOPNOTSUPP', `${what}: unknown capability bits 0x${(r.caps & ~DEVICE_CAPS).toString(16)}`);
    if (r.pasid_width > PASID_BITS) fail('EINVAL', `${what}: PASID width ${r.pasid_width} is beyond ${PASID_BITS}`);
    const ats = (r.caps & IOMMUFD_DEVICE_CAP.ATS) !== 0;
    const pri = (r.caps & IOMMUFD_DEVICE_CAP.PRI) !== 0;
    if (pri && (!ats || r.pasid_width === 0)) fail('EINVAL', `${what}: PRI needs ATS and the PASID capability`);
    const devices = this.objects.ofKind<IommufdDevice>('device');
    if (devices.some((d) => d.guestRid === r.rid)) fail('EEXIST', `${what}: device ${formatBdf(r.rid)} is bound`);
    if (devices.length >= MAX_IOMMUFD_DEVICES) fail('ENOSPC', `${what}: ${this.env.vmName} has ${MAX_IOMMUFD_DEVICES} devices (the cap)`);
    const id = this.objects.reserveId();
    const bdf = formatBdf(r.rid);
    const hostRid = this.env.allocHostRid();
    let step = 0;
    try {
      // ATS starts disabled: the guest enables it (DEVICE_CONFIG ATS_ENABLE), as for the VFIO SVA uAPI.
      this.env.iommu.addDevice({ rid: hostRid, name: `${this.env.vmName} ${bdf}`, pasidBits: r.pasid_width, ats, atsEnabled: false, pri });
      step = 1;
      const dev = new IommufdDevice(id, r.rid, hostRid, bdf, r.pasid_width, ats, pri);
      this.env.iommu.registerFaultHandler(hostRid, (ev) => this.onFault(dev, ev));
      this.objects.add(dev);
      this.dma?.add(dev);
      return id;
    } catch (e) {
      if (step >= 1) this.env.iommu.removeDevice(hostRid);
      this.env.freeHostRid(hostRid);
      throw e;
    }
  }

  /** Unbind a device with no attachment left (EBUSY otherwise). */
  deviceUnbind(devId: number): void {
    const what = 'IOMMUFD_DEVICE_UNBIND';
    const dev = this.device(devId, what);
    if (dev.attachmentCount > 0) fail('EBUSY', `${what}: device ${dev.bdf} has ${dev.attachmentCount} attachment(s)`);
    for (const f of this.objects.ofKind<FaultQueue>('fault')) f.dropDevice(dev.id);
    this.objects.forget(dev);
    this.dma?.remove(dev.guestRid);
    this.env.iommu.unregisterFaultHandler(dev.hostRid);
    this.env.iommu.removeDevice(dev.hostRid);
    this.env.freeHostRid(dev.hostRid);
  }

  /** A bound device by its guest RID (for the VM's DMA paths), or undefined. */
  deviceByRid(rid: number): IommufdDevice | undefined {
    return this.objects.ofKind<IommufdDevice>('device').find((d) => d.guestRid === rid);
  }

  /** ATTACH; a Promise when it builds an automatic HWPT from a large IOAS (newPaging). */
  deviceAttach(r: DeviceAttachRequest): number | Promise<number> {
    return this.change(r, 'IOMMUFD_DEVICE_ATTACH', false);
  }

  /** REPLACE; a Promise as for deviceAttach. */
  deviceReplace(r: DeviceAttachRequest): number | Promise<number> {
    return this.change(r, 'IOMMUFD_DEVICE_REPLACE', true);
  }

  deviceDetach(r: DeviceAttachRequest): void {
    const what = 'IOMMUFD_DEVICE_DETACH';
    const { dev, pasid } = this.attachArgs(r, what);
    const cur = pasid === null ? undefined : dev.pasids.get(pasid)?.hwpt;
    detach(this.attachEnv, dev, pasid, what);
    if (cur?.kind === 'hwpt-nested') this.counted('unbinds', what, { dev_id: dev.id, pasid, hwpt_id: cur.id });
  }

  /** Count a bind or unbind of a nested HWPT at a PASID and trace it with the VM's name. */
  private counted(k: 'binds' | 'unbinds', name: string, args: Record<string, number | null>): void {
    if (this.env.counters) this.env.counters[k]++;
    const t = this.env.dma?.trace;
    if (t?.active) t.emit({ kind: k === 'binds' ? 'bind' : 'unbind', side: 'host', vm: this.env.vmName, name, args });
  }

  // ---- HWPT --------------------------------------------------------------------------------------

  /** IOMMU_HWPT_ALLOC (iommufd_hwpt_alloc); a Promise when a paging HWPT is built from a large IOAS (newPaging). */
  hwptAlloc(r: HwptAllocRequest): number | Promise<number> {
    const what = 'IOMMUFD_HWPT_ALLOC';
    if ((r.flags & ~HWPT_FLAGS) !== 0) fail('EOPNOTSUPP', `${what}: unknown flags 0x${(r.flags & ~HWPT_FLAGS).toString(16)}`);
    if ((r.data_type === IOMMU_HWPT_DATA.NONE) !== (r.data_len === 0)) fail('EINVAL', `${what}: data_type ${r.data_type} with data_len ${r.data_len}`);
    if ((r.flags & IOMMU_HWPT_ALLOC.FAULT_ID_VALID) === 0 && r.fault_id !== 0) fail('EINVAL', `${what}: fault_id without FAULT_ID_VALID`);
    this.device(r.dev_id, what);
    const fault = (r.flags & IOMMU_HWPT_ALLOC.FAULT_ID_VALID) !== 0 ? this.objects.get<FaultQueue>(r.fault_id, 'fault', what) : null;
    const pt = this.objects.any(r.pt_id, what);
    const pasidCapable = (r.flags & IOMMU_HWPT_ALLOC.PASID) !== 0;
    if (pt instanceof Ioas) {
      if (r.data_type !== IOMMU_HWPT_DATA.NONE) fail('EINVAL', `${what}: a HWPT from an IOAS takes no driver data`);
      const h = this.newPaging(pt, (r.flags & IOMMU_HWPT_ALLOC.NEST_PARENT) !== 0, pasidCapable, false, fault, (r.flags & IOMMU_HWPT_ALLOC.DIRTY_TRACKING) !== 0, what);
      return h instanceof HwptPaging ? h.id : h.then((x) => x.id);
    }
    if (!(pt instanceof HwptPaging)) fail('EINVAL', `${what}: pt_id ${r.pt_id} is a ${pt.kind}, not an IOAS or a paging HWPT`);
    if (r.data_type === IOMMU_HWPT_DATA.NONE || (r.flags & ~NESTED_FLAGS) !== 0) fail('EOPNOTSUPP', `${what}: a nested HWPT needs driver data and takes only FAULT_ID_VALID / PASID`);
    if (r.data_type !== IOMMU_HWPT_DATA.VTD_S1) fail('EOPNOTSUPP', `${what}: data type ${r.data_type} is not VTD_S1`);
    if (!pt.nestParent) fail('EINVAL', `${what}: HWPT ${pt.id} was not allocated with NEST_PARENT`);
    const s1 = parseVtdS1(r.data, pt.domain.table!.width, what);
    const h = new HwptNested(this.objects.reserveId(), pt, s1, pasidCapable, fault);
    this.objects.add(h);
    pt.users++;
    pt.children.add(h);
    if (fault) fault.users++;
    return h.id;
  }

  /** IOMMU_GET_HW_INFO: the VT-d registers behind a device (struct iommu_hw_info_vtd). */
  getHwInfo(r: HwInfoRequest): HwInfoReply {
    const what = 'IOMMUFD_GET_HW_INFO';
    if (r.flags !== 0) fail('EOPNOTSUPP', `${what}: unknown flags 0x${r.flags.toString(16)}`);
    const dev = this.device(r.dev_id, what);
    const { cap, ecap } = this.env.iommu.capabilities();
    return {
      out_data_type: IOMMU_HW_INFO_TYPE.INTEL_VTD,
      vtd_flags: 0,
      out_capabilities: IOMMU_HW_CAP.DIRTY_TRACKING,
      cap_reg: cap,
      ecap_reg: ecap,
      out_max_pasid_log2: dev.pasidBits,
    };
  }

  /**
   * IOMMU_HWPT_INVALIDATE of a nested HWPT: each VT-d stage-1 entry becomes PASID-based IOTLB
   * invalidations (page-selective blocks, or all of the PASID) of the parent's DID for every
   * PASID the HWPT is attached at, plus device-TLB invalidations where ATS is on. Request-level
   * errors throw (nothing handled); an entry's error stops the array and is reported with the
   * count handled before it.
   */
  hwptInvalidate(r: HwptInvalidateRequest): HwptInvalidateReply {
    const what = 'IOMMUFD_HWPT_INVALIDATE';
    const h = this.objects.get<HwptNested>(r.hwpt_id, 'hwpt-nested', what);
    if (r.data_type !== IOMMU_HWPT_INVALIDATE_DATA.VTD_S1) fail('EINVAL', `${what}: data type ${r.data_type} is not VTD_S1`);
    if (r.entry_num === 0) return { entry_num: 0, first_error: 0 };
    if (r.entry_len < VtdS1InvalidateStruct.size) fail('EINVAL', `${what}: entry_len ${r.entry_len} is shorter than ${VtdS1InvalidateStruct.size}`);
    if (r.data.length !== r.entry_len * r.entry_num) fail('EINVAL', `${what}: ${r.data.length} bytes of entries, expected ${r.entry_len * r.entry_num}`);
    let handled = 0;
    try {
      for (; handled < r.entry_num; handled++) this.flushNested(h, parseVtdS1Invalidate(r.data, r.entry_len, handled));
    } catch (e) {
      if (!(e instanceof VsvaError)) throw e;
      if (this.env.counters) this.env.counters.invalidations += handled;
      return { entry_num: handled, first_error: -e.errno };
    }
    if (this.env.counters) this.env.counters.invalidations += handled;
    return { entry_num: handled, first_error: 0 };
  }

  // ---- fault queues ------------------------------------------------------------------------------

  faultQueueAlloc(flags: number): number {
    if (flags !== 0) fail('EOPNOTSUPP', `IOMMUFD_FAULT_QUEUE_ALLOC: unknown flags 0x${flags.toString(16)}`);
    const id = this.objects.reserveId();
    const send = this.env.dma?.sendFaultRecords;
    return this.objects.add(new FaultQueue(id, send === undefined ? null : (records) => send(id, records))).id;
  }

  faultRead(faultId: number, max: number): HwptPgfault[] {
    return this.objects.get<FaultQueue>(faultId, 'fault', 'IOMMUFD_FAULT_READ').read(max);
  }

  faultRespond(r: FaultRespondRequest): void {
    this.objects.get<FaultQueue>(r.fault_id, 'fault', 'IOMMUFD_FAULT_RESPOND').respond(r.cookie, r.code, 'IOMMUFD_FAULT_RESPOND');
  }

  // ---- state -------------------------------------------------------------------------------------

  snapshot(): IommufdSnapshot {
    return snapshotOf(this.objects);
  }

  /** True while any IOAS maps guest memory (IOAS_MAP areas point into the VM's memory table). */
  hasIoasMappings(): boolean {
    return this.objects.ofKind<Ioas>('ioas').some((a) => a.areas.length > 0);
  }

  /** Release everything (VM teardown): attachments, devices, HWPTs, fault queues, IOASes. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dma?.close();
    const devices = this.objects.ofKind<IommufdDevice>('device');
    for (const dev of devices) {
      for (const pasid of [...dev.pasids.keys()]) this.quietly(() => detach(this.attachEnv, dev, pasid, 'close'));
      if (dev.rid !== null) this.quietly(() => detach(this.attachEnv, dev, null, 'close'));
    }
    for (const f of this.objects.ofKind<FaultQueue>('fault')) f.close();
    for (const dev of devices) this.quietly(() => this.deviceUnbind(dev.id));
    for (const h of this.objects.ofKind<HwptNested>('hwpt-nested')) this.quietly(() => this.destroy(h.id));
    for (const h of this.objects.ofKind<HwptPaging>('hwpt-paging')) {
      this.quietly(() => {
        this.objects.forget(h);
        this.releaseHwpt(h);
      });
    }
    for (const o of [...this.objects.values()]) this.objects.forget(o);
  }

  // ---- internals ---------------------------------------------------------------------------------

  private ioas(id: number, what: string): Ioas {
    return this.objects.get<Ioas>(id, 'ioas', what);
  }

  private device(id: number, what: string): IommufdDevice {
    return this.objects.get<IommufdDevice>(id, 'device', what);
  }

  private attachArgs(r: DeviceAttachRequest, what: string): { dev: IommufdDevice; pasid: number | null; global: boolean } {
    if ((r.flags & ~ATTACH_FLAGS) !== 0) fail('EOPNOTSUPP', `${what}: unknown flags 0x${(r.flags & ~ATTACH_FLAGS).toString(16)}`);
    const dev = this.device(r.dev_id, what);
    const hasPasid = (r.flags & IOMMUFD_ATTACH.PASID) !== 0;
    if (!hasPasid && r.pasid !== 0) fail('EINVAL', `${what}: pasid ${r.pasid} without the PASID flag`);
    return { dev, pasid: hasPasid ? r.pasid : null, global: (r.flags & IOMMUFD_ATTACH.GLOBAL_PASID) !== 0 };
  }

  /** ATTACH / REPLACE to an IOAS (its automatic paging HWPT) or a HWPT; returns the HWPT ID. */
  private change(r: DeviceAttachRequest, what: string, isReplace: boolean): number | Promise<number> {
    const { dev, pasid, global } = this.attachArgs(r, what);
    const pt = this.objects.any(r.pt_id, what);
    if (pt instanceof Ioas) {
      const pasidCapable = dev.pasidBits > 0;
      const found = this.objects.ofKind<HwptPaging>('hwpt-paging').find((h) => h.auto && h.ioas === pt && h.pasidCapable === pasidCapable);
      if (found !== undefined) return this.changeTo(found, null, dev, pasid, global, what, isReplace);
      const fresh = this.newPaging(pt, false, pasidCapable, true, null, false, what);
      if (fresh instanceof HwptPaging) return this.changeTo(fresh, fresh, dev, pasid, global, what, isReplace);
      return fresh.then((h) => this.changeTo(h, h, dev, pasid, global, what, isReplace));
    }
    if (pt instanceof HwptPaging || pt instanceof HwptNested) return this.changeTo(pt, null, dev, pasid, global, what, isReplace);
    fail('EINVAL', `${what}: pt_id ${r.pt_id} is a ${pt.kind}, not an IOAS or a HWPT`);
  }

  /** Attach or replace `dev` (at `pasid`) to `target`; `fresh` (an automatic HWPT made for it) goes again if that fails. */
  private changeTo(target: Hwpt, fresh: HwptPaging | null, dev: IommufdDevice, pasid: number | null, global: boolean, what: string, isReplace: boolean): number {
    const before = pasid === null ? undefined : dev.pasids.get(pasid)?.hwpt;
    try {
      if (isReplace) replace(this.attachEnv, dev, pasid, target, global, what);
      else attach(this.attachEnv, dev, pasid, target, global, what);
    } catch (e) {
      if (fresh !== null && fresh.users === 0) this.destroyHwpt(fresh);
      throw e;
    }
    if (pasid !== null && before !== target) {
      if (before?.kind === 'hwpt-nested') this.counted('unbinds', what, { dev_id: dev.id, pasid, hwpt_id: before.id });
      if (target.kind === 'hwpt-nested') this.counted('binds', what, { dev_id: dev.id, pasid, hwpt_id: target.id });
    }
    return target.id;
  }

  /**
   * A paging HWPT mirroring `ioas` (iopt_table_add_domain): a new host domain filled with every
   * area. Up to IOAS_SLICE_AREAS areas the fill is synchronous; a larger IOAS is filled in
   * slices that yield to the event loop (SLICE_BUDGET_MS, host/vfio/slice-budget.ts), as a large
   * IOAS_UNMAP is removed, and a Promise is returned: the session holds the VM's later requests
   * until it settles (host/server/handlers.ts), so the IOAS does not change meanwhile. The HWPT
   * joins the object table and the IOAS's mirrors only once filled; if the VM's context closes
   * during the fill (VM teardown), the domain is freed and the request fails with ENOTCONN.
   */
  private newPaging(ioas: Ioas, nestParent: boolean, pasidCapable: boolean, auto: boolean, fault: FaultQueue | null, dirty: boolean, what: string): HwptPaging | Promise<HwptPaging> {
    const id = this.objects.reserveId();
    const iommu = this.env.iommu;
    const domain = iommu.allocDomain({ type: 'paging', levels: 4, dirtyTracking: dirty, name: `${this.env.vmName} hwpt ${id}` });
    const h = new HwptPaging(id, ioas, domain, { map: (did, iova, hpa, size, p) => iommu.map(did, iova, hpa, size, p), unmap: (did, iova, size) => iommu.unmap(did, iova, size) }, nestParent, pasidCapable, auto, fault);
    const areas = ioas.areas;
    const register = (): HwptPaging => {
      ioas.mirrors.add(h);
      ioas.users++;
      if (fault) fault.users++;
      this.objects.add(h);
      return h;
    };
    try {
      if (areas.length <= IOAS_SLICE_AREAS) {
        for (const a of areas) h.map(a.iova, a.hpa, a.length, a.prot);
        return register();
      }
    } catch (e) {
      iommu.freeDomain(domain);
      throw e;
    }
    return (async () => {
      try {
        const slice = sliceTimer();
        for (let i = 0; i < areas.length; ) {
          slice.restart();
          const end = Math.min(areas.length, i + IOAS_SLICE_AREAS);
          do {
            for (const stop = Math.min(end, i + IOAS_CHUNK_AREAS); i < stop; i++) {
              const a = areas[i]!;
              h.map(a.iova, a.hpa, a.length, a.prot);
            }
          } while (i < end && !slice.spent());
          if (i < areas.length) {
            await nextSlice();
            if (this.closed) fail('ENOTCONN', `${what}: the VM's iommufd context closed while HWPT ${id} was filled (VM teardown)`);
          }
        }
      } catch (e) {
        iommu.freeDomain(domain);
        throw e;
      }
      return register();
    })();
  }

  /** Destroy a HWPT with no users (an automatic one after its last detach). */
  private destroyHwpt(h: HwptPaging): void {
    this.objects.remove(h, 'IOMMUFD_DESTROY');
    this.releaseHwpt(h);
  }

  /** Undo what creating `h` took (it is out of the table already). */
  private releaseHwpt(h: Hwpt): void {
    if (h.fault) h.fault.users--;
    if (h instanceof HwptNested) {
      h.parent.users--;
      h.parent.children.delete(h);
      return;
    }
    h.ioas.mirrors.delete(h);
    h.ioas.users--;
    this.env.iommu.freeDomain(h.domain);
  }

  private flushNested(h: HwptNested, inv: { all: boolean; addr: bigint; size: bigint; leaf: boolean }): void {
    if (!inv.all && inv.size === 0n) return; // npages 0: nothing to flush
    const iommu = this.env.iommu;
    const did = h.parent.domain.did;
    // Page-selective blocks; none (everything, or too many blocks) → all of the PASID.
    const blocks = inv.all ? [] : addressBlocks(inv.addr, inv.size);
    for (const dev of this.objects.ofKind<IommufdDevice>('device')) {
      for (const [pasid, att] of dev.pasids) {
        if (att.hwpt !== h) continue;
        if (blocks.length === 0) {
          iommu.invalidatePasidIotlb(did, pasid);
          if (iommu.device(dev.hostRid).atsEnabled) iommu.invalidateDevTlb(dev.hostRid, { pasid });
          continue;
        }
        for (const b of blocks) {
          iommu.invalidatePasidIotlbPages(did, pasid, b.addr, b.am, inv.leaf);
          if (iommu.device(dev.hostRid).atsEnabled) iommu.invalidateDevTlb(dev.hostRid, { pasid, addr: b.addr, size: 4096n << BigInt(b.am) });
        }
      }
    }
  }

  /** A device's page request: queued to the fault queue of the HWPT at its PASID (or RID); else answered INVALID. */
  private onFault(dev: IommufdDevice, ev: IommuFaultEvent): void {
    if (ev.kind !== 'page-request') return;
    const req: PageRequest = ev.request;
    const att = req.pasid === undefined ? dev.rid : dev.pasids.get(req.pasid);
    const iommu = this.env.iommu;
    const respond = (code: number) => {
      try {
        iommu.pageResponse(dev.hostRid, req.pasid ?? null, req.prgi, code === IOMMUFD_PAGE_RESP.SUCCESS ? PageResponseCode.SUCCESS : PageResponseCode.INVALID);
      } catch {
        /* the request is gone (device removed); nothing to answer */
      }
    };
    const q = att?.hwpt.fault ?? null;
    if (q === null) {
      respond(IOMMUFD_PAGE_RESP.INVALID);
      return;
    }
    const perm = (req.read ? IOMMU_PGFAULT_PERM.READ : 0) | (req.write ? IOMMU_PGFAULT_PERM.WRITE : 0) | (req.exec ? IOMMU_PGFAULT_PERM.EXEC : 0) | (req.priv ? IOMMU_PGFAULT_PERM.PRIV : 0);
    const flags = (req.pasid !== undefined ? IOMMU_PGFAULT_FLAGS.PASID_VALID : 0) | (req.lpig ? IOMMU_PGFAULT_FLAGS.LAST_PAGE : 0);
    q.push({ flags, dev_id: dev.id, pasid: req.pasid ?? 0, grpid: req.prgi, perm, addr: req.addr, length: 4096 }, respond);
  }

  private quietly(f: () => void): void {
    try {
      f();
    } catch {
      /* teardown goes on */
    }
  }
}

function prot(flags: number): { read: boolean; write: boolean } {
  return { read: (flags & IOMMU_IOAS_MAP.READABLE) !== 0, write: (flags & IOMMU_IOAS_MAP.WRITEABLE) !== 0 };
}
