/**
 * The virtual VT-d device model (DESIGN §3.1): the register file, GCMD by edge, the cached
 * context entries, the invalidation queue and what each descriptor does, the shadow of the
 * guest's PASID entries on the host, the virtual command interface, fault recording and the page
 * request queue. Reference: vtd-scalable-mode.md (every section).
 *
 * GCMD (QEMU `vtd_handle_gcmd_write`): one-shot commands act when their bit is written as 1 —
 * SRTP latches RTADDR (root table and TTM) and drops the context cache, then sets GSTS.RTPS;
 * SFL sets FLS; WBF completes at once (WBFS reads 0); SIRTP sets IRTPS. Enables act on change
 * against GSTS — TE (TES; requests without PASID follow the context entries while set, the GPA
 * domain while clear), QIE (QIES; IQH resets to 0), IRE, CFI, EAFL (status only).
 *
 * Register accesses that trigger work: FSTS/FRCD (W1C, PPF recomputed, IQE clear resumes the
 * queue), FECTL/IECTL/PECTL (unmask sends a pending interrupt), ICS/PRS (servicing clears IP),
 * IQT (runs the queue; a write of the low half or the whole register), CCMD.ICC and
 * IOTLB_REG.IVT (register-based invalidations), VCMD (a write of the whole register or of its
 * high half — a 32-bit guest writes low then high).
 *
 * PASIDs: with VCMD the guest allocates host PASIDs (identity). With `vcmd: false` the guest
 * picks its own PASIDs and the model maps each bound guest PASID to a host PASID of its own
 * (guest-private-pasids.ts): bindings, PASID-based invalidations and a pf device's DMA
 * (`devicePasid`) use the host PASID; the PASID of a pf device's faults and page requests is
 * translated back to the guest PASID (and page responses to the host PASID). An adi device is
 * programmed with the guest PASID and reports it (the host VDCM translates with find_by_spid).
 *
 * Context entries are cached as hardware may with CAP.CM = 1: loaded on first use and kept until
 * a context-cache invalidation (descriptor or CCMD) or SRTP. When a cached entry's PRE or DTE
 * differs from what the host was told, the model sends DEVICE_CONFIG (PRI / ATS enables).
 */
import { VsvaError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { vsvaRegisterFile } from '../../src/vtd/cap-ecap.js';
import { CC_G, InvDescType, IOTLB_G, PASID_DEVICE_IOTLB_G, PC_G, PGRP_RESP_CODE, PIOTLB_G } from '../../src/vtd/descriptors.js';
import { FaultReason, FaultRequestType } from '../../src/vtd/fault.js';
import { hex64 } from '../../src/vtd/layout.js';
import { GCMD, GSTS, ICS, DMAR, VCMD_REG_OFFSETS } from '../../src/vtd/registers.js';
import { RTADDR_SMT } from '../../src/vtd/root-context.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import type { VcmdLayoutName } from '../../src/vtd/vcmd.js';
import { FaultFlag, PageRequestFlag, type FaultMessage, type PageRequestMessage } from '../../vhost/messages/backend.js';
import { DeviceCap } from '../../vhost/messages/device.js';
import { DeviceConfigFlag } from '../../vhost/messages/device-config.js';
import { IOMMU_PAGE_RESP, PAGE_RESPONSE_PASID_VALID } from '../../vhost/messages/page.js';
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import type { GuestRam } from '../memory/guest-ram.js';
import { emptyReplayReport, type GuestContext, type GuestDevice, type HostResources, type ReplayReport, type ViommuModel } from '../viommu.js';
import { devIotlb, devTlbRange, iotlbAll, iotlbPasid, iotlbPasidAddr, InvalidationBatch } from './cache-invalidations.js';
import { FaultRecorder } from './fault-recorder.js';
import { GuestPrivatePasids } from './guest-private-pasids.js';
import type { HostPort } from './host-port.js';
import { EventInterrupts, type InterruptMessage } from './interrupts.js';
import { InvalidationQueue, type DescriptorSink, type ValidDescriptor } from './invalidation-queue.js';
import { PageRequestQueue } from './page-request-queue.js';
import { PasidShadow, desiredFromEntry, type DesiredEntry, type PasidShadowEntry } from './pasid-shadow.js';
import { RegisterFile } from './register-file.js';
import { presentPasidEntries, readContext, readPasidEntry, type ContextInfo, type Walk } from './tables.js';
import { VirtualCommands } from './virtual-commands.js';

export interface VtdModelOptions {
  /** Virtual command register layout, or false for no VCMD (ECAP.VCS clear). Default '3.1'. */
  vcmd?: VcmdLayoutName | false;
}

/** What the model needs from its VM: the GuestContext with the client narrowed to its calls. */
export type VtdModelContext = Omit<GuestContext, 'client'> & { readonly client: HostPort };

/** Counters a driver or test can observe. */
export interface VtdCounters {
  interrupts: Record<'fault' | 'invalidation' | 'page-request', number>;
  queue: InvalidationQueue['counters'];
  faults: FaultRecorder['counters'];
  pageRequests: PageRequestQueue['counters'];
  invalidations: InvalidationBatch['counters'];
  shadow: PasidShadow['counters'];
  vcmd: VirtualCommands['counters'] | null;
  deviceConfigs: number;
}

const IQE = 0x10;

export class VtdModel implements ViommuModel, DescriptorSink {
  readonly kind = 'vtd' as const;
  readonly regs: RegisterFile;
  readonly interrupts: EventInterrupts;
  readonly faults: FaultRecorder;
  readonly pageRequests: PageRequestQueue;
  readonly vcmd: VirtualCommands | null;
  private readonly batch: InvalidationBatch;
  private readonly pasidShadow: PasidShadow;
  /** Guest-private PASIDs (no VCMD), else null (identity). */
  private readonly privatePasids: GuestPrivatePasids | null;
  /** VCRSP's offset in the VCMD layout in use (-1 without VCMD). */
  private readonly vcrspOffset: number;
  /** Last PIOTLB target looked up: (PASID, DID) → host PASID or -1, valid while the shadow's version holds. */
  private piotlbMemo = { version: -1, pasid: -1, did: -1, hpasid: -1 };
  private readonly iq: InvalidationQueue;
  private readonly ram: GuestRam;
  private readonly host: HostPort;
  private readonly log: Logger;
  private readonly trace: TraceBus;
  private readonly vm: string;
  private readonly devices: readonly GuestDevice[];
  /** Root table latched by SRTP, and whether RTADDR.TTM selected scalable mode. */
  private rootTable: bigint | null = null;
  private scalable = false;
  private readonly contexts = new Map<number, ContextInfo>();
  /** DEVICE_CONFIG flags last sent per device (sent at the first context load, then on change). */
  private readonly deviceFlags = new Map<number, number>();
  private deviceConfigSupported = true;
  private deviceConfigs = 0;

  constructor(ctx: VtdModelContext, opts: VtdModelOptions = {}) {
    const vcmd = opts.vcmd ?? '3.1';
    this.ram = ctx.ram;
    this.host = ctx.client;
    this.log = ctx.log.child({ component: 'vtd' });
    this.trace = ctx.trace;
    this.vm = ctx.name;
    this.devices = ctx.devices;
    this.regs = new RegisterFile(vsvaRegisterFile(vcmd, { fl5lp: true }));
    this.interrupts = new EventInterrupts(this.regs, this.trace, this.vm);
    this.faults = new FaultRecorder(this.regs, this.interrupts, this.trace, this.vm);
    this.pageRequests = new PageRequestQueue(this.regs, this.ram, this.interrupts, this.trace, this.vm);
    this.vcrspOffset = vcmd === false ? -1 : VCMD_REG_OFFSETS[vcmd].VCRSP;
    this.vcmd = vcmd === false ? null : new VirtualCommands(vcmd, this.regs, this.host, this.log, this.trace, this.vm);
    this.batch = new InvalidationBatch(this.host, this.log, this.trace, this.vm);
    const flush = (): Promise<void> => this.batch.flush();
    this.privatePasids = vcmd === false ? new GuestPrivatePasids(this.host, flush) : null;
    this.pasidShadow = new PasidShadow(this.host, this.ram, this.log, this.trace, this.vm, this.devices.map((d) => d.rid), flush, this.privatePasids);
    if (this.vcmd !== null) this.vcmd.onFreed = (pasid) => this.pasidShadow.pasidFreed(pasid);
    this.iq = new InvalidationQueue(this.regs, this.ram, this.faults, this.interrupts, this, this.trace, this.vm, this.log);
  }

  // ---- inspection ---------------------------------------------------------------------------

  /** The shadow of every guest PASID entry forwarded to the host (RID paths have pasid null). */
  shadow(): PasidShadowEntry[] {
    return this.pasidShadow.entries();
  }

  /**
   * Guest-private PASIDs (no VCMD): each guest PASID the model forwarded and the host PASID it
   * stands for. Empty with VCMD (identity: guest PASID = host PASID).
   */
  pasidMappings(): { gpasid: number; hpasid: number; users: number }[] {
    return this.privatePasids?.mappings() ?? [];
  }

  /** The host domain a device's requests without PASID are attached to (null: blocked). */
  ridAttachment(rid: number): number | null {
    return this.pasidShadow.ridAttachment(rid);
  }

  /** Host domains that shadow guest second-level tables, with their mappings. */
  slDomains(): { domain: number; slptptr: bigint; extents: number }[] {
    return this.pasidShadow.domains().map((d) => ({ domain: d.domain, slptptr: d.slptptr, extents: d.extents.size }));
  }

  counters(): VtdCounters {
    return {
      interrupts: { ...this.interrupts.sent },
      queue: { ...this.iq.counters },
      faults: { ...this.faults.counters },
      pageRequests: { ...this.pageRequests.counters },
      invalidations: { ...this.batch.counters },
      shadow: { ...this.pasidShadow.counters },
      vcmd: this.vcmd === null ? null : { ...this.vcmd.counters },
      deviceConfigs: this.deviceConfigs,
    };
  }

  onInterrupt(listener: (m: InterruptMessage) => void): () => void {
    return this.interrupts.onInterrupt(listener);
  }

  // ---- MMIO ---------------------------------------------------------------------------------

  mmioRead(offset: number, size: 4 | 8): bigint | Promise<bigint> {
    // A VCRSP read while a virtual command is in flight is held until it completes (bounded;
    // virtual-commands.ts): the read then returns the result instead of IP.
    if (this.vcmd !== null && offset === this.vcrspOffset && this.vcmd.busy) {
      const settled = this.vcmd.settledWithin();
      if (settled !== null) return settled.then(() => this.readRegister(offset, size));
    }
    return this.readRegister(offset, size);
  }

  private readRegister(offset: number, size: 4 | 8): bigint {
    const v = this.regs.read(offset, size);
    if (this.trace.active) this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: `read 0x${offset.toString(16)}`, args: { offset, size, value: hex64(v) } });
    return v;
  }

  async mmioWrite(offset: number, size: 4 | 8, value: bigint): Promise<void> {
    if (this.trace.active) this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: `write 0x${offset.toString(16)}`, args: { offset, size, value: hex64(value) } });
    for (const w of this.regs.write(offset, size, value)) {
      const name = w.def.name;
      switch (name) {
        case 'GCMD':
          await this.gcmd(Number(w.written & 0xffff_ffffn));
          break;
        case 'FSTS':
          this.faults.afterStatusWrite();
          if ((Number(w.old) & IQE) !== 0 && (Number(w.value) & IQE) === 0) await this.iq.run();
          break;
        case 'FECTL':
          this.interrupts.onControlWrite('fault');
          break;
        case 'IECTL':
          this.interrupts.onControlWrite('invalidation');
          break;
        case 'PECTL':
          this.interrupts.onControlWrite('page-request');
          break;
        case 'ICS':
          if ((Number(w.value) & ICS.IWC) === 0) this.interrupts.serviced('invalidation');
          break;
        case 'PRS':
          this.pageRequests.afterStatusWrite();
          break;
        case 'IQT':
          if (w.part !== 'high') await this.iq.run();
          break;
        case 'CCMD':
          if (w.part !== 'low' && (w.written >> 63n) === 1n) await this.registerContextInvalidate(w.value);
          break;
        case 'IOTLB':
          if (w.part !== 'low' && (w.written >> 63n) === 1n) await this.registerIotlbInvalidate(w.value);
          break;
        case 'VCMD':
          if (w.part !== 'low' && this.vcmd !== null) this.vcmd.onWrite(w.value);
          break;
        default:
          if (name.startsWith('FRCD') && name.endsWith('_HI')) this.faults.afterStatusWrite();
      }
    }
  }

  private async gcmd(cmd: number): Promise<void> {
    const sts = this.regs.getN('GSTS');
    if (cmd & GCMD.SRTP) {
      const rtaddr = this.regs.get('RTADDR');
      this.rootTable = rtaddr & 0xffff_ffff_ffff_f000n;
      this.scalable = (rtaddr & RTADDR_SMT) !== 0n && ((rtaddr >> 11n) & 1n) === 0n;
      this.contexts.clear();
      this.regs.update('GSTS', BigInt(GSTS.RTPS));
      this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: 'SRTP', args: { root: hex64(this.rootTable), scalable: this.scalable } });
    }
    if (cmd & GCMD.SFL) this.regs.update('GSTS', BigInt(GSTS.FLS));
    if (cmd & GCMD.SIRTP) this.regs.update('GSTS', BigInt(GSTS.IRTPS));
    // WBF: the write buffer is always flushed; WBFS reads 0.
    for (const [bit, st] of [
      [GCMD.IRE, GSTS.IRES],
      [GCMD.CFI, GSTS.CFIS],
      [GCMD.EAFL, GSTS.AFLS],
    ] as const) {
      if ((cmd & bit) !== 0) this.regs.update('GSTS', BigInt(st));
      else this.regs.update('GSTS', 0n, BigInt(st));
    }
    const qie = (cmd & GCMD.QIE) !== 0;
    if (qie !== ((sts & GSTS.QIES) !== 0)) {
      if (qie) {
        this.iq.enable();
        this.regs.update('GSTS', BigInt(GSTS.QIES));
      } else {
        this.regs.update('GSTS', 0n, BigInt(GSTS.QIES));
      }
    }
    const te = (cmd & GCMD.TE) !== 0;
    if (te !== ((sts & GSTS.TES) !== 0)) {
      if (te) {
        this.regs.update('GSTS', BigInt(GSTS.TES));
        for (const d of this.devices) await this.syncRid(d.rid);
      } else {
        this.regs.update('GSTS', 0n, BigInt(GSTS.TES));
        for (const d of this.devices) await this.pasidShadow.attachRidToGpa(d.rid);
      }
      this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: te ? 'translation enabled' : 'translation disabled' });
    }
  }

  private get translationEnabled(): boolean {
    return (this.regs.getN('GSTS') & GSTS.TES) !== 0;
  }

  // ---- context entries ------------------------------------------------------------------------

  /** The cached context entry of a device, loading (and configuring the device) on a miss. */
  private async context(rid: number): Promise<Walk<ContextInfo>> {
    const cached = this.contexts.get(rid);
    if (cached !== undefined) return { ok: true, value: cached };
    const w = this.peekContext(rid);
    if (w.ok) this.contexts.set(rid, w.value);
    await this.configureDevice(rid, w.ok ? w.value : null);
    return w;
  }

  /** The context entry as the cache or memory holds it, without caching it. */
  private peekContext(rid: number): Walk<ContextInfo> {
    const cached = this.contexts.get(rid);
    if (cached !== undefined) return { ok: true, value: cached };
    if (this.rootTable === null || !this.scalable) return { ok: false, reason: FaultReason.RTA_1_INVALID_ROOT_TABLE_ADDRESS, why: 'no scalable-mode root table' };
    return readContext(this.ram, this.rootTable, rid);
  }

  /** Tell the host about PRE/DTE of a device's context entry when they changed (DEVICE_CONFIG). */
  private async configureDevice(rid: number, ctx: ContextInfo | null): Promise<void> {
    const dev = this.devices.find((d) => d.rid === rid);
    if (dev === undefined || !this.deviceConfigSupported) return;
    let flags = 0;
    if (ctx?.pre && (dev.caps & DeviceCap.PRI) !== 0) flags |= DeviceConfigFlag.PRI_ENABLE;
    if (ctx?.dte && (dev.caps & DeviceCap.ATS) !== 0) flags |= DeviceConfigFlag.ATS_ENABLE;
    if (this.deviceFlags.get(rid) === flags) return;
    await this.batch.flush();
    try {
      await this.host.call('DEVICE_CONFIG', { rid, flags });
      this.deviceFlags.set(rid, flags);
      this.deviceConfigs++;
      this.trace.emit({ kind: 'message', side: 'guest', vm: this.vm, name: 'DEVICE_CONFIG', args: { rid, pri: (flags & 1) !== 0, ats: (flags & 2) !== 0 } });
    } catch (e) {
      const code = e instanceof VsvaError ? e.code : '';
      if (code === 'ENOTTY' || code === 'EOPNOTSUPP' || code === 'EPROTO') {
        this.deviceConfigSupported = false;
        this.log.warn({ err: e }, 'host has no DEVICE_CONFIG; PRI/ATS enables are not forwarded');
      } else {
        this.log.warn({ err: e, rid }, 'DEVICE_CONFIG failed');
      }
    }
  }

  private async contextInvalidate(rids: readonly number[]): Promise<void> {
    for (const rid of rids) {
      this.contexts.delete(rid);
      const w = await this.context(rid);
      if (!(w.ok && w.value.pre)) {
        for (const m of this.pageRequests.drop(rid)) this.respondToHost(m, IOMMU_PAGE_RESP.INVALID);
      }
      if (this.translationEnabled) await this.syncRid(rid);
    }
    this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: 'context-cache invalidation', args: { devices: rids.length } });
  }

  /** Devices a context-cache invalidation selects (G = 3: SID with function mask FM). */
  private ccTargets(g: number, sid: number, fm: number): number[] | null {
    if (g === CC_G.GLOBAL || g === CC_G.DOMAIN) return this.devices.map((d) => d.rid);
    if (g === CC_G.DEVICE) {
      const mask = fm === 0 ? 0xffff : 0xffff & ~((1 << fm) - 1);
      return this.devices.filter((d) => (d.rid & mask) === (sid & mask)).map((d) => d.rid);
    }
    return null;
  }

  private async registerContextInvalidate(value: bigint): Promise<void> {
    const cirg = Number((value >> 61n) & 3n);
    const targets = this.ccTargets(cirg, Number((value >> 16n) & 0xffffn), Number((value >> 32n) & 3n));
    // ICC clears when done; CAIG reports the granularity performed (0 = request refused).
    this.regs.set('CCMD', (value & ~(1n << 63n) & ~(3n << 59n)) | (BigInt(targets === null ? 0 : cirg) << 59n));
    if (targets !== null) await this.contextInvalidate(targets);
  }

  private async registerIotlbInvalidate(value: bigint): Promise<void> {
    const iirg = Number((value >> 60n) & 3n);
    const did = Number((value >> 32n) & 0xffffn);
    const iva = this.regs.get('IVA');
    this.regs.set('IOTLB', (value & ~(1n << 63n) & ~(3n << 57n)) | (BigInt(iirg) << 57n));
    await this.iotlbInvalidate(iirg, did, iva & 0xffff_ffff_ffff_f000n, Number(iva & 0x3fn), (iva & 0x40n) !== 0n);
    await this.batch.flush();
  }

  // ---- requests without PASID (RID_PASID) -----------------------------------------------------

  /** Make the host's handling of a device's requests without PASID follow its context entry. */
  private async syncRid(rid: number): Promise<void> {
    const c = await this.context(rid);
    let want: DesiredEntry;
    if (!c.ok) {
      want = { did: -1, fpd: false, words: [], ridPasid: null, binding: { kind: 'invalid', reason: c.reason, why: c.why } };
    } else {
      const ctx = c.value;
      const r = readPasidEntry(this.ram, ctx, ctx.ridPasid, false);
      if (!r.ok) {
        want = { did: -1, fpd: false, words: [], ridPasid: ctx.ridPasid, binding: { kind: 'invalid', reason: r.reason, why: r.why } };
      } else {
        const d = desiredFromEntry(r.value);
        want =
          d === null
            ? { did: -1, fpd: r.value.dirFpd, words: r.value.words, ridPasid: ctx.ridPasid, binding: { kind: 'invalid', reason: FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT, why: 'RID_PASID entry is not present' } }
            : { ...d, ridPasid: ctx.ridPasid };
      }
    }
    await this.pasidShadow.apply(rid, null, want);
  }

  // ---- invalidation queue: descriptor handling --------------------------------------------------

  async handle(d: ValidDescriptor): Promise<number | undefined> {
    switch (d.type) {
      case InvDescType.CC: {
        const f = d.fields;
        const targets = this.ccTargets(Number(f.G), Number(f.SID), Number(f.FM));
        if (targets === null) return 4;
        await this.batch.flush();
        await this.contextInvalidate(targets);
        return undefined;
      }
      case InvDescType.IOTLB: {
        const f = d.fields;
        const g = Number(f.G);
        if (g === 0 || Number(f.AM) > VTD_MAMV) return 4;
        await this.iotlbInvalidate(g, Number(f.DID), f.ADDR << 12n, Number(f.AM), f.IH === 1n);
        return undefined;
      }
      case InvDescType.DEVICE_IOTLB: {
        const f = d.fields;
        const sid = Number(f.SID);
        if (this.devices.some((x) => x.rid === sid)) {
          const r = devTlbRange(f.ADDR << 12n, f.S === 1n);
          this.batch.add(devIotlb(sid, undefined, r.addr, r.size));
        }
        return undefined;
      }
      case InvDescType.IEC:
        return undefined; // interrupt remapping is not modelled
      case InvDescType.PIOTLB: {
        const f = d.fields;
        const addr = f.ADDR << 12n;
        return this.piotlb(Number(f.G), Number(f.DID), Number(f.PASID), Number(f.AM), f.IH === 1n, Number(addr & 0xffff_ffffn), Number(addr >> 32n));
      }
      case InvDescType.PC: {
        const f = d.fields;
        const g = Number(f.G);
        if (g !== PC_G.DSI && g !== PC_G.PASID_SI && g !== PC_G.GLOBAL) return 4;
        await this.pasidCacheInvalidate(g, Number(f.DID), Number(f.PASID));
        return undefined;
      }
      case InvDescType.PASID_DEVICE_IOTLB: {
        const f = d.fields;
        const sid = Number(f.SID);
        const pasid = Number(f.PASID);
        if (!this.devices.some((x) => x.rid === sid)) return undefined;
        const r = devTlbRange(f.ADDR << 12n, f.S === 1n);
        if (Number(f.G) === PASID_DEVICE_IOTLB_G.ALL_PASIDS) {
          this.batch.add(devIotlb(sid, undefined, r.addr, r.size));
        } else {
          const e = this.pasidShadow.get(sid, pasid);
          const hpasid = this.pasidShadow.hostPasid(pasid);
          if (e !== undefined && hpasid !== undefined && (e.binding.kind === 'nested' || e.binding.kind === 'pt')) this.batch.add(devIotlb(sid, hpasid, r.addr, r.size));
        }
        return undefined;
      }
      case InvDescType.PGRP_RESP: {
        const f = d.fields;
        const pp = f.PP === 1n;
        const rid = Number(f.RID);
        const pasid = pp ? Number(f.PASID) : undefined;
        const code = Number(f.RESP_CODE);
        const m = this.pageRequests.take(rid, pasid, Number(f.PRGI));
        if (m === undefined) {
          this.trace.emit({ kind: 'page-response', side: 'guest', vm: this.vm, name: 'page group response without request', args: { rid, pasid: pasid ?? null, prgi: Number(f.PRGI) } });
          return undefined;
        }
        await this.batch.flush();
        const hostCode = code === PGRP_RESP_CODE.SUCCESS ? IOMMU_PAGE_RESP.SUCCESS : code === PGRP_RESP_CODE.INVALID ? IOMMU_PAGE_RESP.INVALID : IOMMU_PAGE_RESP.FAILURE;
        try {
          await this.host.call('PAGE_RESPONSE', { rid, flags: pp ? PAGE_RESPONSE_PASID_VALID : 0, pasid: pp ? this.reportedPasid(m) : 0, grpid: Number(f.PRGI), code: hostCode });
          this.trace.emit({ kind: 'page-response', side: 'guest', vm: this.vm, name: 'PAGE_RESPONSE', args: { rid, pasid: pasid ?? null, prgi: Number(f.PRGI), code } });
        } catch (e) {
          this.log.warn({ err: e, rid, pasid }, 'PAGE_RESPONSE refused by the host');
        }
        return undefined;
      }
      default:
        return undefined;
    }
  }

  /**
   * PASID-based IOTLB invalidation (DescriptorSink.piotlb; also the decoded descriptor's path):
   * G 2 all-in-PASID or 3 page-selective, AM ≤ MAMV (else IQEI 4). Host IOTLB entries exist only
   * for nested bindings, so an entry is forwarded (with the host PASID) only when a device has
   * the PASID bound nested with this DID.
   */
  piotlb(g: number, did: number, pasid: number, am: number, ih: boolean, addrLo: number, addrHi: number): number | undefined {
    if ((g !== PIOTLB_G.ALL_IN_PASID && g !== PIOTLB_G.PSI_IN_PASID) || am > VTD_MAMV) return 4;
    const hpasid = this.nestedHostPasid(pasid, did);
    if (hpasid < 0) return undefined;
    if (g === PIOTLB_G.ALL_IN_PASID) this.batch.addPasid(hpasid);
    else this.batch.addPasidAddr(hpasid, addrLo, addrHi, am, ih);
    return undefined;
  }

  /** The host PASID of a guest PASID some device has bound nested with `did`, or -1 (memoised). */
  private nestedHostPasid(pasid: number, did: number): number {
    const m = this.piotlbMemo;
    const version = this.pasidShadow.version;
    if (m.version === version && m.pasid === pasid && m.did === did) return m.hpasid;
    const bound = this.devices.some((x) => {
      const e = this.pasidShadow.get(x.rid, pasid);
      return e !== undefined && e.binding.kind === 'nested' && e.did === did;
    });
    const hpasid = bound ? (this.pasidShadow.hostPasid(pasid) ?? -1) : -1;
    this.piotlbMemo = { version, pasid, did, hpasid };
    return hpasid;
  }

  async flush(): Promise<void> {
    await this.batch.flush();
  }

  private nestedEntries(did: number | null): PasidShadowEntry[] {
    return this.pasidShadow.entries().filter((e) => e.pasid !== null && e.binding.kind === 'nested' && (did === null || e.did === did));
  }

  /** IOTLB invalidation (descriptor 0x2 or IOTLB_REG): nested bindings → host; SL shadows → re-walk. */
  private async iotlbInvalidate(g: number, did: number, addr: bigint, am: number, ih: boolean): Promise<void> {
    if (g === IOTLB_G.GLOBAL) {
      if (this.nestedEntries(null).length > 0) this.batch.add(iotlbAll());
      await this.pasidShadow.resyncSl(null);
      return;
    }
    const pasids = new Set<number>();
    for (const e of this.nestedEntries(did)) {
      const h = this.pasidShadow.hostPasid(e.pasid!);
      if (h !== undefined) pasids.add(h);
    }
    if (g === IOTLB_G.DSI) {
      for (const p of pasids) this.batch.add(iotlbPasid(p));
      await this.pasidShadow.resyncSl(did);
    } else {
      const span = 4096n << BigInt(am);
      const start = addr & ~(span - 1n);
      for (const p of pasids) this.batch.add(iotlbPasidAddr(p, start, am, ih));
      await this.pasidShadow.resyncSl(did, start, start + span);
    }
  }

  /**
   * PASID-cache invalidation: re-read the selected guest PASID entries and forward what changed.
   * Global: every entry of every device. Domain-selective: entries whose DID (in memory or in
   * the shadow) is `did`. PASID-selective: that PASID's entry when either DID is `did`.
   * PASID 0 with a PASID is never bound (it is RID_PASID; QEMU VTD_HPASID_MIN); requests
   * without PASID follow RID_PASID and are re-synced when it is selected.
   */
  private async pasidCacheInvalidate(g: number, did: number, pasid: number): Promise<void> {
    this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: g === PC_G.GLOBAL ? 'PASID-cache global' : g === PC_G.DSI ? 'PASID-cache DSI' : 'PASID-cache PASID-selective', args: { did, pasid } });
    const selected = (memDid: number | undefined, shadowDid: number | undefined): boolean => g === PC_G.GLOBAL || memDid === did || shadowDid === did;
    for (const dev of this.devices) {
      const rid = dev.rid;
      const c = await this.context(rid);
      if (g === PC_G.PASID_SI) {
        if (pasid !== 0) {
          const old = this.pasidShadow.get(rid, pasid);
          const r = c.ok ? readPasidEntry(this.ram, c.value, pasid, true) : null;
          const want = r !== null && r.ok ? desiredFromEntry(r.value) : null;
          if (selected(want?.did, old?.did)) await this.pasidShadow.apply(rid, pasid, want);
        }
      } else {
        const seen = new Set<number>();
        if (c.ok) {
          for (const r of presentPasidEntries(this.ram, c.value)) {
            if (r.pasid === 0) continue;
            seen.add(r.pasid);
            const want = desiredFromEntry(r);
            const old = this.pasidShadow.get(rid, r.pasid);
            if (selected(want?.did, old?.did)) await this.pasidShadow.apply(rid, r.pasid, want);
          }
        }
        for (const old of this.pasidShadow.pasidEntriesOf(rid)) {
          if (!seen.has(old.pasid!) && selected(undefined, old.did)) await this.pasidShadow.apply(rid, old.pasid, null);
        }
      }
      if (this.translationEnabled && c.ok) {
        const ridPasid = c.value.ridPasid;
        const old = this.pasidShadow.get(rid, null);
        const r = readPasidEntry(this.ram, c.value, ridPasid, false);
        const memDid = r.ok ? Number(r.value.check.fields.DID) : undefined;
        if (g !== PC_G.PASID_SI || pasid === ridPasid) {
          if (selected(memDid, old?.did)) await this.syncRid(rid);
        }
      }
    }
  }

  // ---- host → guest -------------------------------------------------------------------------------

  onBackendMessage(ev: BackendEvent): void {
    switch (ev.name) {
      case 'FAULT':
        this.hostFault(ev.msg);
        break;
      case 'PAGE_REQUEST':
        this.hostPageRequest(ev.msg);
        break;
      case 'PASID_FREED': {
        // Guest-private: the host freed the host PASID of a guest PASID; the shadow knows the latter.
        const g = this.privatePasids === null ? ev.msg.pasid : this.privatePasids.forget(ev.msg.pasid);
        this.vcmd?.hostFreed(ev.msg.pasid);
        if (g !== undefined) void this.pasidShadow.pasidFreed(g);
        this.trace.emit({ kind: 'free', side: 'guest', vm: this.vm, name: 'host freed PASID', args: { pasid: ev.msg.pasid, reason: ev.msg.reason } });
        break;
      }
    }
  }

  // ---- guest-private PASIDs on the device side ---------------------------------------------------

  private isPf(rid: number): boolean {
    return this.devices.some((d) => d.rid === rid && d.kind === 'pf');
  }

  /**
   * The PASID a pf device is programmed with for guest PASID `gpasid` (ViommuModel.devicePasid):
   * identity with VCMD; without VCMD the host PASID the model allocated for it. A guest PASID
   * with no host PASID (not bound) is programmed as is unless that value is one of the VM's host
   * PASIDs — then as the highest PASID that is not, so the DMA cannot reach another guest PASID's
   * tables; either way the host has no PASID entry for it and the DMA faults (reported back as
   * `gpasid`). An adi is programmed with the guest PASID (the VDCM translates it).
   */
  devicePasid(rid: number, gpasid: number): number {
    const pp = this.privatePasids;
    if (pp === null || !this.isPf(rid)) return gpasid;
    const h = pp.hostOf(gpasid);
    if (h !== undefined) return h;
    if (pp.guestOf(gpasid) === undefined) return gpasid;
    let v = PASID_MAX - 1;
    while (pp.guestOf(v) !== undefined) v--;
    this.unboundAlias = { hpasid: v, gpasid };
    return v;
  }

  /** devicePasid's stand-in for an unbound guest PASID whose value is a host PASID. */
  private unboundAlias = { hpasid: -1, gpasid: -1 };

  /** The guest PASID behind a PASID the host reported for device `rid`. */
  private guestPasidOf(rid: number, pasid: number): number {
    const pp = this.privatePasids;
    if (pp === null || !this.isPf(rid)) return pasid;
    const g = pp.guestOf(pasid);
    if (g !== undefined) return g;
    return pasid === this.unboundAlias.hpasid ? this.unboundAlias.gpasid : pasid;
  }

  /** Page requests delivered to the guest with a translated PASID → the PASID the host reported. */
  private readonly hostReportedPasid = new WeakMap<PageRequestMessage, number>();

  /** The PASID to answer a page request with: the one the host reported it with. */
  private reportedPasid(m: PageRequestMessage): number {
    return this.hostReportedPasid.get(m) ?? m.pasid;
  }

  private hostFault(m: FaultMessage): void {
    const hasPasid = (m.flags & FaultFlag.PASID_VALID) !== 0;
    const pasid = hasPasid ? this.guestPasidOf(m.rid, m.pasid) : null;
    const e = this.pasidShadow.get(m.rid, pasid);
    const c = this.peekContext(m.rid);
    const fpd = (e?.fpd ?? false) || (c.ok && c.value.fpd);
    this.faults.record(
      {
        addr: m.addr,
        sid: m.rid,
        reason: this.dmaFaultReason(m.rid, pasid ?? undefined, m.reason),
        type: (m.flags & FaultFlag.WRITE) !== 0 ? FaultRequestType.WRITE : FaultRequestType.READ,
        ...(pasid !== null ? { pasid } : {}),
        priv: (m.flags & FaultFlag.PRIV) !== 0,
        exe: (m.flags & FaultFlag.EXEC) !== 0,
      },
      fpd,
    );
  }

  private hostPageRequest(hm: PageRequestMessage): void {
    let m = hm;
    if ((hm.flags & PageRequestFlag.PASID_VALID) !== 0) {
      const g = this.guestPasidOf(hm.rid, hm.pasid);
      if (g !== hm.pasid) {
        m = { ...hm, pasid: g };
        this.hostReportedPasid.set(m, hm.pasid);
      }
    }
    const c = this.peekContext(m.rid);
    if (!(c.ok && c.value.pre)) {
      // PRE clear: the IOMMU does not accept page requests from this device.
      this.respondToHost(m, IOMMU_PAGE_RESP.INVALID);
      return;
    }
    const out = this.pageRequests.deliver(m);
    if (out === 'overflow' && (m.flags & PageRequestFlag.LPIG) !== 0) this.respondToHost(m, IOMMU_PAGE_RESP.SUCCESS);
    else if (out === 'not-configured') this.respondToHost(m, IOMMU_PAGE_RESP.INVALID);
  }

  /** Answer a page request group without the guest (queue full, no queue, PRE clear). */
  private respondToHost(m: PageRequestMessage, code: number): void {
    const pp = (m.flags & PageRequestFlag.PASID_VALID) !== 0;
    // Not awaited: the host may wait for this backend message's ack before answering.
    this.host
      .call('PAGE_RESPONSE', { rid: m.rid, flags: pp ? PAGE_RESPONSE_PASID_VALID : 0, pasid: pp ? this.reportedPasid(m) : 0, grpid: m.prgi, code })
      .catch((e: unknown) => this.log.warn({ err: e, rid: m.rid }, 'automatic PAGE_RESPONSE refused by the host'));
    this.trace.emit({ kind: 'page-response', side: 'guest', vm: this.vm, name: 'automatic page response', args: { rid: m.rid, prgi: m.prgi, code } });
  }

  /**
   * The fault reason the guest sees for a DMA fault the host reported: the reason of the guest's
   * own invalid entry when the model did not bind it (0x5a / 0x5b, a context or RID_PASID
   * fault), else the host's.
   */
  dmaFaultReason(rid: number, pasid: number | undefined, hostReason: number): number {
    const e = this.pasidShadow.get(rid, pasid ?? null);
    if (e !== undefined && e.binding.kind === 'invalid') return e.binding.reason;
    return hostReason;
  }

  // ---- reconnect ------------------------------------------------------------------------------

  /**
   * Replay on a fresh host (ViommuModel.replay; docs/reliability.md §2), in dependency order:
   * 1. every PASID the guest holds through VCMD, at its old value (PASID_ALLOC with
   *    min = max = the PASID — identity mapping, so guest PASID = host PASID must not change);
   *    a PASID the host cannot give back is lost: the guest's VCMD view drops it (as on a
   *    host-forced free) and its entries are marked refused;
   * 2. the devices' PRI / ATS enables (DEVICE_CONFIG) as last sent;
   * 3. the PASID shadow: SL shadow domains and their mappings, RID attachments, bindings.
   * Guest RAM, registers, queues and the cached context entries are guest-side and unchanged.
   */
  async replay(host: HostPort): Promise<ReplayReport> {
    const r = emptyReplayReport();
    const lost = new Set<number>();
    if (this.vcmd !== null) {
      for (const p of [...this.vcmd.owned].sort((a, b) => a - b)) {
        try {
          const got = await host.call('PASID_ALLOC', { min: p, max: p });
          if (got.pasid !== p) throw new VsvaError('EIO', `host gave PASID ${got.pasid} for [${p}, ${p}]`);
          r.pasids++;
        } catch (e) {
          lost.add(p);
          this.vcmd.hostFreed(p);
          r.failures.push(`VCMD PASID ${p}: ${e instanceof VsvaError ? e.code : 'EIO'}`);
        }
      }
    }
    for (const [rid, flags] of this.deviceFlags) {
      if (flags === 0) continue;
      try {
        await host.call('DEVICE_CONFIG', { rid, flags });
        r.deviceConfigs++;
      } catch (e) {
        r.failures.push(`DEVICE_CONFIG ${rid.toString(16)}: ${e instanceof VsvaError ? e.code : 'EIO'}`);
      }
    }
    const s = await this.pasidShadow.replay(host, lost);
    r.domains += s.domains;
    r.mappings += s.mappings;
    r.bindings += s.bindings;
    r.failures.push(...s.failures);
    this.trace.emit({ kind: 'bind', side: 'guest', vm: this.vm, name: 'replay', args: { pasids: r.pasids, bindings: r.bindings, domains: r.domains, failures: r.failures.length } });
    return r;
  }

  /** Host PASIDs (VCMD) and host domains (SL shadows) this model holds. */
  hostResources(): HostResources {
    return { pasids: new Set([...(this.vcmd?.owned ?? []), ...(this.privatePasids?.hostPasids() ?? [])]), domains: new Set(this.pasidShadow.domains().map((d) => d.domain)) };
  }

  async close(): Promise<void> {
    await this.vcmd?.idle();
    await this.batch.flush().catch(() => undefined);
    await this.pasidShadow.releaseAll();
  }
}

/** VCMD register offsets of a layout (for drivers and tests). */
export function vcmdOffsets(layout: VcmdLayoutName): { VCCAP: number; VCMD: number; VCRSP: number } {
  return VCMD_REG_OFFSETS[layout];
}

export { DMAR };
