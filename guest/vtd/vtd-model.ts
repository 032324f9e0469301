/**
 * The virtual VT-d device model (docs/design.md §3.1): the register window and what each access
 * sets off. The parts live beside it — register-file.ts (storage and masks), context-cache.ts
 * (root table and cached context entries), invalidation-queue.ts (fetching descriptors),
 * invalidation-handler.ts (what invalidations do), pasid-shadow.ts (guest PASID entries forwarded
 * to the host), virtual-commands.ts (VCMD), host-events.ts (faults, page requests and PASID
 * frees from the host; the PASIDs a device is seen with), fault-recorder.ts and
 * page-request-queue.ts (what the guest reads back).
 *
 * GCMD (QEMU hw/i386/intel_iommu.c `vtd_handle_gcmd_write`; VT-d spec rev. 5.10 §11.4.4.1
 * "Global Command Register"): one-shot commands act when their bit is written as 1 — SRTP
 * latches RTADDR (root table and TTM) and drops the context cache, then sets GSTS.RTPS; WBF
 * completes at once (WBFS reads 0; CAP.RWBF is clear). Enables act on change against GSTS — TE
 * (TES; requests without PASID follow the context entries while set, the GPA domain while
 * clear), QIE (QIES; IQH resets to 0 on enable and on disable, §11.4.9.1 "Invalidation Queue
 * Head Register"). Commands of features the model does not report are ignored and leave their
 * status bit 0 (§11.4.4.1: each is valid only when the feature is supported): SIRTP, IRE and CFI
 * need ECAP.IR; SFL and EAFL need CAP.AFL.
 *
 * Register accesses that trigger work: FSTS/FRCD (W1C, PPF recomputed, IQE clear resumes the
 * queue), FECTL/IECTL/PECTL (unmask sends a pending interrupt), ICS/PRS (servicing clears IP),
 * IQT (runs the queue; a write of the low half or the whole register), CCMD.ICC and
 * IOTLB_REG.IVT (register-based invalidations), VCMD (a write of the whole register or of its
 * high half — a 32-bit guest writes low then high).
 *
 * PASIDs: with VCMD the guest allocates host PASIDs (identity). With `vcmd: false` the guest
 * picks its own PASIDs and the model maps each bound guest PASID to a host PASID of its own
 * (guest-private-pasids.ts, translated for devices in host-events.ts).
 */
import { VsvaError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { vsvaRegisterFile } from '../../src/vtd/cap-ecap.js';
import { hex64, testField } from '../../src/vtd/layout.js';
import { FSTS_REG, GCMD, GSTS, ICS_REG, VCMD_REG_OFFSETS } from '../../src/vtd/registers.js';
import type { VcmdLayoutName } from '../../src/vtd/vcmd.js';
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import { emptyReplayReport, type GuestContext, type HostCalls, type HostResources, type ReplayReport, type ViommuModel } from '../viommu.js';
import type { InvalidationSink } from '../uapi/invalidation-sink.js';
import type { HostUapi } from '../uapi/host-uapi.js';
import { VfioSvaUapi } from '../uapi/vfio-sva.js';
import { ContextCache } from './context-cache.js';
import { FaultRecorder } from './fault-recorder.js';
import { GuestPrivatePasids } from './guest-private-pasids.js';
import { HostEvents } from './host-events.js';
import { EventInterrupts, type InterruptMessage } from './interrupts.js';
import { InvalidationHandler } from './invalidation-handler.js';
import { InvalidationQueue } from './invalidation-queue.js';
import { narrow } from './narrow.js';
import { PageRequestQueue } from './page-request-queue.js';
import { PasidShadow, type PasidShadowEntry } from './pasid-shadow.js';
import { RegisterFile, type RegisterWrite } from './register-file.js';
import type { RegisterDef } from '../../src/vtd/registers.js';
import { VirtualCommands } from './virtual-commands.js';

export interface VtdModelOptions {
  /** Virtual command register layout, or false for no VCMD (ECAP.VCS clear). Default '3.1'. */
  vcmd?: VcmdLayoutName | false;
}

/** Counters a driver or test can observe. */
export interface VtdCounters {
  interrupts: Record<'fault' | 'invalidation' | 'page-request', number>;
  queue: InvalidationQueue['counters'];
  faults: FaultRecorder['counters'];
  pageRequests: PageRequestQueue['counters'];
  invalidations: InvalidationSink['counters'];
  shadow: PasidShadow['counters'];
  vcmd: VirtualCommands['counters'] | null;
  deviceConfigs: number;
}

export class VtdModel implements ViommuModel {
  readonly kind = 'vtd' as const;
  readonly regs: RegisterFile;
  readonly interrupts: EventInterrupts;
  readonly faults: FaultRecorder;
  readonly pageRequests: PageRequestQueue;
  readonly vcmd: VirtualCommands | null;
  private readonly batch: InvalidationSink;
  /** The VM's host uAPI (guest/uapi/): every host request of the model but VCMD's goes through it. */
  readonly uapi: HostUapi;
  private readonly contexts: ContextCache;
  private readonly pasidShadow: PasidShadow;
  /** Guest-private PASIDs (no VCMD), else null (identity). */
  private readonly privatePasids: GuestPrivatePasids | null;
  private readonly invalidations: InvalidationHandler;
  private readonly events: HostEvents;
  /** VCRSP's offset in the VCMD layout in use (-1 without VCMD). */
  private readonly vcrspOffset: number;
  /** VCMD's offset (-1 without VCMD) and definition (null without VCMD). */
  private readonly vcmdOffset: number;
  private readonly vcmdDef: RegisterDef | null;
  private readonly iq: InvalidationQueue;
  private readonly trace: TraceBus;
  private readonly vm: string;
  private readonly devices: GuestContext['devices'];

  constructor(ctx: GuestContext, opts: VtdModelOptions = {}) {
    const vcmd = opts.vcmd ?? '3.1';
    const { ram, client: host, name: vm, devices } = ctx;
    const log: Logger = ctx.log.child({ component: 'vtd' });
    this.trace = ctx.trace;
    this.vm = vm;
    this.devices = devices;
    this.regs = new RegisterFile(vsvaRegisterFile(vcmd, { fl5lp: true }));
    this.interrupts = new EventInterrupts(this.regs, this.trace, vm);
    this.faults = new FaultRecorder(this.regs, this.interrupts, this.trace, vm);
    this.pageRequests = new PageRequestQueue(this.regs, ram, this.interrupts, this.trace, vm);
    this.vcrspOffset = vcmd === false ? -1 : VCMD_REG_OFFSETS[vcmd].VCRSP;
    this.vcmdOffset = vcmd === false ? -1 : VCMD_REG_OFFSETS[vcmd].VCMD;
    this.vcmdDef = vcmd === false ? null : this.regs.def('VCMD');
    this.vcmd = vcmd === false ? null : new VirtualCommands(vcmd, this.regs, host, log, this.trace, vm);
    const uapi = (this.uapi = ctx.uapi ?? new VfioSvaUapi(host));
    this.batch = uapi.invalidations({ log, trace: this.trace, vm });
    const flush = (): Promise<void> => this.batch.flush();
    this.contexts = new ContextCache(ram, devices, host, flush, log, this.trace, vm);
    // Without VCMD the guest picks its PASIDs: on VFIO SVA each stands for a host PASID of the
    // VM's IOASID set (guest-private); on iommufd it is the device's own PASID, attached as is.
    this.privatePasids = vcmd === false && uapi.kind === 'vfio-sva' ? new GuestPrivatePasids(host, flush) : null;
    this.pasidShadow = new PasidShadow(host, ram, log, this.trace, vm, devices.map((d) => d.rid), flush, this.privatePasids, { uapi, globalPasids: vcmd !== false });
    if (this.vcmd !== null) this.vcmd.onFreed = (pasid) => this.pasidShadow.pasidFreed(pasid);
    this.events = new HostEvents(devices, this.privatePasids, this.vcmd, this.pasidShadow, this.contexts, this.faults, this.pageRequests, uapi, ram, log, this.trace, vm);
    this.invalidations = new InvalidationHandler(this.regs, ram, devices, this.contexts, this.pasidShadow, this.batch, this.pageRequests, this.events, uapi, log, this.trace, vm);
    this.iq = new InvalidationQueue(this.regs, ram, this.faults, this.interrupts, this.invalidations, this.trace, vm, log);
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
      deviceConfigs: this.contexts.deviceConfigs,
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
      // A whole read untraced is the value the command settled with (what readRegister would
      // read: nothing writes VCRSP but the command, and the serial queue holds later accesses);
      // otherwise the register is read when it settles.
      if (settled !== null) return size === 8 && !this.trace.active ? settled : settled.then(() => this.readRegister(offset, size));
    }
    return this.readRegister(offset, size);
  }

  private readRegister(offset: number, size: 4 | 8): bigint {
    const v = this.regs.read(offset, size);
    if (this.trace.active) this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: `read 0x${offset.toString(16)}`, args: { offset, size, value: hex64(v) } });
    return v;
  }

  /**
   * A guest register write, then the model's reaction to each register it covered, in order.
   * Synchronous unless a reaction has to wait (GCMD, the invalidation queue, register-based
   * invalidations): a VCMD write returns at once, with no promise (the serial queue then
   * completes the access without a promise hop).
   */
  mmioWrite(offset: number, size: 4 | 8, value: bigint): void | Promise<void> {
    if (offset === this.vcmdOffset && size === 8 && !this.trace.active) {
      // A whole VCMD write (the VCMD hot path): what write() and afterWrite() do for it, without
      // the write record.
      this.vcmd!.onWrite(this.regs.writeWhole64(this.vcmdDef!, value));
      return;
    }
    if (this.trace.active) this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: `write 0x${offset.toString(16)}`, args: { offset, size, value: hex64(value) } });
    const writes = this.regs.write(offset, size, value);
    for (let i = 0; i < writes.length; i++) {
      const pending = this.afterWrite(writes[i]!);
      if (pending !== undefined) return this.afterWritesFrom(pending, writes, i + 1);
    }
  }

  /** The rest of mmioWrite once a reaction waits: `pending`, then the writes from `next` on. */
  private async afterWritesFrom(pending: Promise<void>, writes: readonly RegisterWrite[], next: number): Promise<void> {
    await pending;
    for (let i = next; i < writes.length; i++) await this.afterWrite(writes[i]!);
  }

  /** The model's reaction to one register write; a promise when it has to wait. */
  private afterWrite(w: RegisterWrite): Promise<void> | undefined {
    const name = w.def.name;
    switch (name) {
      case 'GCMD':
        return this.gcmd(narrow(w.written, 32));
      case 'FSTS':
        this.faults.afterStatusWrite();
        if (testField(w.old, FSTS_REG.field.IQE) && !testField(w.value, FSTS_REG.field.IQE)) return this.iq.run();
        return undefined;
      case 'FECTL':
        this.interrupts.onControlWrite('fault');
        return undefined;
      case 'IECTL':
        this.interrupts.onControlWrite('invalidation');
        return undefined;
      case 'PECTL':
        this.interrupts.onControlWrite('page-request');
        return undefined;
      case 'ICS':
        if (!testField(w.value, ICS_REG.field.IWC)) this.interrupts.serviced('invalidation');
        return undefined;
      case 'PRS':
        this.pageRequests.afterStatusWrite();
        return undefined;
      case 'IQT':
        return w.part !== 'high' ? this.iq.run() : undefined;
      case 'CCMD':
        return w.part !== 'low' && (w.written >> 63n) === 1n ? this.invalidations.registerContextInvalidate(w.value) : undefined;
      case 'IOTLB':
        return w.part !== 'low' && (w.written >> 63n) === 1n ? this.invalidations.registerIotlbInvalidate(w.value) : undefined;
      case 'VCMD':
        if (w.part !== 'low' && this.vcmd !== null) this.vcmd.onWrite(w.value);
        return undefined;
      default:
        if (name.startsWith('FRCD') && name.endsWith('_HI')) this.faults.afterStatusWrite();
        return undefined;
    }
  }

  /** A GCMD write (`cmd`: the 32 bits written), acted on by edge against GSTS. */
  private async gcmd(cmd: number): Promise<void> {
    const sts = this.regs.getN('GSTS');
    if (cmd & GCMD.SRTP) {
      this.contexts.latchRoot(this.regs.get('RTADDR'));
      this.regs.update('GSTS', BigInt(GSTS.RTPS));
    }
    // WBF: the write buffer is always flushed; WBFS reads 0. SFL, EAFL (CAP.AFL clear) and
    // SIRTP, IRE, CFI (ECAP.IR clear) are not supported: ignored, their status bits stay 0.
    const qie = (cmd & GCMD.QIE) !== 0;
    if (qie !== ((sts & GSTS.QIES) !== 0)) {
      if (qie) {
        this.iq.enable();
        this.regs.update('GSTS', BigInt(GSTS.QIES));
      } else {
        this.regs.update('GSTS', 0n, BigInt(GSTS.QIES));
        this.iq.disable();
      }
    }
    const te = (cmd & GCMD.TE) !== 0;
    if (te !== ((sts & GSTS.TES) !== 0)) {
      if (te) {
        this.regs.update('GSTS', BigInt(GSTS.TES));
        for (const d of this.devices) await this.invalidations.syncRid(d.rid);
      } else {
        this.regs.update('GSTS', 0n, BigInt(GSTS.TES));
        for (const d of this.devices) await this.pasidShadow.attachRidToGpa(d.rid);
      }
      this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: te ? 'translation enabled' : 'translation disabled' });
    }
  }

  async flush(): Promise<void> {
    await this.batch.flush();
  }

  // ---- host → guest ---------------------------------------------------------------------------

  onBackendMessage(ev: BackendEvent): void {
    this.events.onBackendMessage(ev);
  }

  /** ViommuModel.devicePasid: the PASID a pf device is programmed with (host-events.ts). */
  devicePasid(rid: number, gpasid: number): number {
    return this.events.devicePasid(rid, gpasid);
  }

  /** ViommuModel.dmaFaultReason: the guest's own reason for an entry the model left unbound. */
  dmaFaultReason(rid: number, pasid: number | undefined, hostReason: number, addr?: bigint): number {
    return this.events.dmaFaultReason(rid, pasid, hostReason, addr);
  }

  // ---- reconnect ------------------------------------------------------------------------------

  /**
   * Replay on a fresh host (ViommuModel.replay; docs/reliability.md §2.2), in dependency order:
   * 1. every PASID the guest holds through VCMD, at its old value (PASID_ALLOC with
   *    min = max = the PASID — identity mapping, so guest PASID = host PASID must not change);
   *    a PASID the host cannot give back is lost: the guest's VCMD view drops it (as on a
   *    host-forced free) and its entries are marked refused;
   * 2. the devices' PRI / ATS enables (DEVICE_CONFIG) as last sent;
   * 3. the PASID shadow: SL shadow domains and their mappings, RID attachments, bindings.
   * Guest RAM, registers, queues and the cached context entries are guest-side and unchanged.
   */
  async replay(host: HostCalls): Promise<ReplayReport> {
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
    await this.contexts.replay(host, r);
    const s = await this.pasidShadow.replay(host, lost);
    r.domains += s.domains;
    r.mappings += s.mappings;
    r.bindings += s.bindings;
    r.failures.push(...s.failures);
    this.trace.emit({ kind: 'bind', side: 'guest', vm: this.vm, name: 'replay', args: { pasids: r.pasids, bindings: r.bindings, domains: r.domains, failures: r.failures.length } });
    return r;
  }

  /** Host PASIDs (VCMD, guest-private) and host domains (SL shadows) this model holds. */
  hostResources(): HostResources {
    return { pasids: new Set([...(this.vcmd?.owned ?? []), ...(this.privatePasids?.hostPasids() ?? [])]), domains: new Set(this.pasidShadow.domains().map((d) => d.domain)) };
  }

  async close(): Promise<void> {
    await this.vcmd?.idle();
    await this.batch.flush().catch(() => undefined);
    await this.pasidShadow.releaseAll();
  }
}
