/**
 * What the guest's cache invalidations do (VT-d spec rev. 5.10 §6.5 "Invalidation of Translation
 * Caches"): the descriptors of the invalidation queue other than wait (invalidation-queue.ts
 * fetches and checks them, this file carries them out — QEMU hw/i386/intel_iommu.c
 * `vtd_process_inv_desc`) and the register-based interface (CCMD.ICC, IOTLB_REG.IVT — QEMU
 * `vtd_handle_ccmd_write`, `vtd_handle_iotlb_write`).
 *
 * - Context-cache (0x1, CCMD): the selected devices' cached context entries are dropped and
 *   reloaded (context-cache.ts); page requests of a device whose PRE is now clear are answered
 *   INVALID; with translation enabled the device's requests without PASID are re-synced.
 * - IOTLB (0x2, IOTLB_REG): host IOTLB entries exist only for nested bindings, so the host
 *   PASIDs bound nested with the DID are invalidated (cache-invalidations.ts); the second-level
 *   shadows of the DID (or all, global) are re-walked in the range.
 * - Device-TLB (0x3) and PASID-based device-TLB (0x8): forwarded for the VM's devices, with the
 *   host PASID of a bound PASID.
 * - Interrupt entry cache (0x4): nothing (interrupt remapping is not modelled).
 * - PASID-based IOTLB (0x6): forwarded when a device has the PASID bound nested with the DID;
 *   a run of adjacent page-selective ones of one DID, PASID and IH (invalidation-queue.ts) as the
 *   aligned blocks that cover its pages.
 * - PASID-cache (0x7): the selected guest PASID entries are re-read and every change forwarded
 *   (pasid-shadow.ts).
 * - Page group response (0x9): the page response to the host for the request it answers
 *   (PAGE_RESPONSE, or FAULT_RESPOND with the group's cookie on iommufd — guest/uapi/).
 *
 * A descriptor whose granularity the type does not define, or whose AM exceeds CAP.MAMV, stops
 * the queue with IQEI RSVD_FIELD_VIOLATION (§6.5.2.11 "Hardware Handling of Queued Invalidation
 * Interface Errors"). Host work is batched: entries are collected in the uAPI's invalidation
 * batch (guest/uapi/invalidation-sink.ts), and any other host request flushes the batch first.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { CC_G, InvDescType, IOTLB_G, PASID_DEVICE_IOTLB_G, PC_G, PGRP_RESP_CODE, PIOTLB_G } from '../../src/vtd/descriptors.js';
import { FaultReason } from '../../src/vtd/fault.js';
import { getField, setField, testField } from '../../src/vtd/layout.js';
import { PASID_BITS } from '../../src/vtd/pasid-entry.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { CCMD_REG, GSTS, IOTLB_REG, IQEI, IVA_REG, type IqeiCode } from '../../src/vtd/registers.js';
import { IOMMU_PAGE_RESP } from '../../vhost/messages/page.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { GuestDevice } from '../viommu.js';
import type { HostUapi } from '../uapi/host-uapi.js';
import type { InvalidationSink } from '../uapi/invalidation-sink.js';
import { devIotlb, devTlbRange, iotlbAll, iotlbPasid, iotlbPasidAddr, pageAddrHi, pageAddrLo, pageBlocks } from './cache-invalidations.js';
import type { ContextCache } from './context-cache.js';
import type { PageResponder } from './host-events.js';
import type { DescriptorSink, ValidDescriptor } from './invalidation-queue.js';
import { narrow } from './narrow.js';
import type { PageRequestQueue } from './page-request-queue.js';
import { desiredFromEntry, type DesiredEntry, type PasidShadow, type PasidShadowEntry } from './pasid-shadow.js';
import type { RegisterFile } from './register-file.js';
import { presentPasidEntries, readPasidEntry } from './tables.js';

/** Widths (bits) of the descriptor and register fields read as numbers (src/vtd/descriptors.ts layouts). */
const WIDTH = { DID: 16, SID: 16, PASID: PASID_BITS, G: 2, FM: 2, AM: 6, PRGI: 9, RESP_CODE: 4 } as const;

/** A descriptor of one type, as the decoder returns it. */
type Desc<T extends ValidDescriptor['type']> = Extract<ValidDescriptor, { type: T }>;

export class InvalidationHandler implements DescriptorSink {
  /** Last PIOTLB target looked up: (PASID, DID) → host PASID or -1, valid while the shadow's version holds. */
  private piotlbMemo = { version: -1, pasid: -1, did: -1, hpasid: -1 };

  constructor(
    private readonly regs: RegisterFile,
    private readonly ram: GuestRam,
    private readonly devices: readonly GuestDevice[],
    private readonly contexts: ContextCache,
    private readonly shadow: PasidShadow,
    private readonly batch: InvalidationSink,
    private readonly pageRequests: PageRequestQueue,
    private readonly responder: PageResponder,
    private readonly uapi: HostUapi,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  // ---- queued invalidation (DescriptorSink) ---------------------------------------------------

  async handle(d: ValidDescriptor): Promise<IqeiCode | undefined> {
    switch (d.type) {
      case InvDescType.CC: {
        const f = d.fields;
        const targets = this.ccTargets(narrow(f.G, WIDTH.G), narrow(f.SID, WIDTH.SID), narrow(f.FM, WIDTH.FM));
        if (targets === null) return IQEI.RSVD_FIELD_VIOLATION;
        await this.batch.flush();
        await this.contextInvalidate(targets);
        return undefined;
      }
      case InvDescType.IOTLB: {
        const f = d.fields;
        const g = narrow(f.G, WIDTH.G);
        const am = narrow(f.AM, WIDTH.AM);
        if (g === 0 || am > VTD_MAMV) return IQEI.RSVD_FIELD_VIOLATION;
        await this.iotlbInvalidate(g, narrow(f.DID, WIDTH.DID), f.ADDR << 12n, am, f.IH === 1n);
        return undefined;
      }
      case InvDescType.DEVICE_IOTLB: {
        const f = d.fields;
        const sid = narrow(f.SID, WIDTH.SID);
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
        return this.piotlb(narrow(f.G, WIDTH.G), narrow(f.DID, WIDTH.DID), narrow(f.PASID, WIDTH.PASID), narrow(f.AM, WIDTH.AM), f.IH === 1n, narrow(addr & 0xffff_ffffn, 32), narrow(addr >> 32n, 32));
      }
      case InvDescType.PC: {
        const f = d.fields;
        const g = narrow(f.G, WIDTH.G);
        if (g !== PC_G.DSI && g !== PC_G.PASID_SI && g !== PC_G.GLOBAL) return IQEI.RSVD_FIELD_VIOLATION;
        await this.pasidCacheInvalidate(g, narrow(f.DID, WIDTH.DID), narrow(f.PASID, WIDTH.PASID));
        return undefined;
      }
      case InvDescType.PASID_DEVICE_IOTLB:
        this.pasidDeviceIotlb(d);
        return undefined;
      case InvDescType.PGRP_RESP:
        await this.pageGroupResponse(d);
        return undefined;
      default:
        return undefined;
    }
  }

  /**
   * PASID-based IOTLB invalidation (DescriptorSink.piotlb; also the decoded descriptor's path):
   * G 2 all-in-PASID or 3 page-selective, AM ≤ MAMV (else IQEI RSVD_FIELD_VIOLATION). Host IOTLB
   * entries exist only for nested bindings, so an entry is forwarded (with the host PASID) only
   * when a device has the PASID bound nested with this DID.
   */
  piotlb(g: number, did: number, pasid: number, am: number, ih: boolean, addrLo: number, addrHi: number): IqeiCode | undefined {
    if ((g !== PIOTLB_G.ALL_IN_PASID && g !== PIOTLB_G.PSI_IN_PASID) || am > VTD_MAMV) return IQEI.RSVD_FIELD_VIOLATION;
    const hpasid = this.nestedHostPasid(pasid, did);
    if (hpasid < 0) return undefined;
    if (g === PIOTLB_G.ALL_IN_PASID) this.batch.addPasid(hpasid);
    else this.batch.addPasidAddr(hpasid, addrLo, addrHi, am, ih);
    return undefined;
  }

  /**
   * A run of adjacent page-selective PASID-based IOTLB descriptors of one DID, PASID and IH
   * (DescriptorSink.piotlbPages): pages [firstPage, firstPage + pages) as the fewest aligned
   * blocks of at most 2^MAMV pages (pageBlocks) — each exactly what one page-selective descriptor
   * with that AM sends — forwarded when a device has the PASID bound nested with this DID.
   */
  piotlbPages(did: number, pasid: number, ih: boolean, firstPage: number, pages: number): void {
    const hpasid = this.nestedHostPasid(pasid, did);
    if (hpasid < 0) return;
    const batch = this.batch;
    pageBlocks(firstPage, pages, VTD_MAMV, (page, am) => batch.addPasidAddr(hpasid, pageAddrLo(page), pageAddrHi(page), am, ih));
  }

  async flush(): Promise<void> {
    await this.batch.flush();
  }

  // ---- register-based invalidation (§6.5.1) -------------------------------------------------------

  /** A CCMD write with ICC set: CAIG reports the granularity performed (0 = refused), ICC clears. */
  async registerContextInvalidate(value: bigint): Promise<void> {
    const cirg = narrow(getField(value, CCMD_REG.field.CIRG), CCMD_REG.field.CIRG.width);
    const targets = this.ccTargets(cirg, narrow(getField(value, CCMD_REG.field.SID), WIDTH.SID), narrow(getField(value, CCMD_REG.field.FM), WIDTH.FM));
    this.regs.set('CCMD', setField(setField(value, CCMD_REG.field.ICC, 0), CCMD_REG.field.CAIG, targets === null ? 0 : cirg));
    if (targets !== null) await this.contextInvalidate(targets);
  }

  /** An IOTLB_REG write with IVT set, with the address in IVA: IAIG reports the granularity, IVT clears. */
  async registerIotlbInvalidate(value: bigint): Promise<void> {
    const iirg = narrow(getField(value, IOTLB_REG.field.IIRG), IOTLB_REG.field.IIRG.width);
    const did = narrow(getField(value, IOTLB_REG.field.DID), WIDTH.DID);
    const iva = this.regs.get('IVA');
    this.regs.set('IOTLB', setField(setField(value, IOTLB_REG.field.IVT, 0), IOTLB_REG.field.IAIG, iirg));
    const addr = getField(iva, IVA_REG.field.ADDR) << 12n;
    await this.iotlbInvalidate(iirg, did, addr, narrow(getField(iva, IVA_REG.field.AM), WIDTH.AM), testField(iva, IVA_REG.field.IH));
    await this.batch.flush();
  }

  // ---- requests without PASID (RID_PASID) -----------------------------------------------------

  /** Make the host's handling of a device's requests without PASID follow its context entry. */
  async syncRid(rid: number): Promise<void> {
    const c = await this.contexts.get(rid);
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
    await this.shadow.apply(rid, null, want);
  }

  private get translationEnabled(): boolean {
    return (this.regs.getN('GSTS') & GSTS.TES) !== 0;
  }

  // ---- context cache ---------------------------------------------------------------------------

  /** Devices a context-cache invalidation selects (G = 3: SID with function mask FM), or null for an undefined G. */
  private ccTargets(g: number, sid: number, fm: number): number[] | null {
    if (g === CC_G.GLOBAL || g === CC_G.DOMAIN) return this.devices.map((d) => d.rid);
    if (g === CC_G.DEVICE) {
      const mask = fm === 0 ? 0xffff : 0xffff & ~((1 << fm) - 1);
      return this.devices.filter((d) => (d.rid & mask) === (sid & mask)).map((d) => d.rid);
    }
    return null;
  }

  private async contextInvalidate(rids: readonly number[]): Promise<void> {
    for (const rid of rids) {
      this.contexts.drop(rid);
      const w = await this.contexts.get(rid);
      if (!(w.ok && w.value.pre)) {
        for (const m of this.pageRequests.drop(rid)) this.responder.respondToHost(m, IOMMU_PAGE_RESP.INVALID);
      }
      if (this.translationEnabled) await this.syncRid(rid);
    }
    this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: 'context-cache invalidation', args: { devices: rids.length } });
  }

  // ---- IOTLBs --------------------------------------------------------------------------------------

  /** The host PASID of a guest PASID some device has bound nested with `did`, or -1 (memoised). */
  private nestedHostPasid(pasid: number, did: number): number {
    const m = this.piotlbMemo;
    const version = this.shadow.version;
    if (m.version === version && m.pasid === pasid && m.did === did) return m.hpasid;
    const bound = this.devices.some((x) => {
      const e = this.shadow.get(x.rid, pasid);
      return e !== undefined && e.binding.kind === 'nested' && e.did === did;
    });
    const hpasid = bound ? (this.shadow.hostPasid(pasid) ?? -1) : -1;
    this.piotlbMemo = { version, pasid, did, hpasid };
    return hpasid;
  }

  private nestedEntries(did: number | null): PasidShadowEntry[] {
    return this.shadow.entries().filter((e) => e.pasid !== null && e.binding.kind === 'nested' && (did === null || e.did === did));
  }

  /** IOTLB invalidation (descriptor 0x2 or IOTLB_REG): nested bindings → host; SL shadows → re-walk. */
  private async iotlbInvalidate(g: number, did: number, addr: bigint, am: number, ih: boolean): Promise<void> {
    if (g === IOTLB_G.GLOBAL) {
      if (this.nestedEntries(null).length > 0) this.batch.add(iotlbAll());
      await this.shadow.resyncSl(null);
      return;
    }
    const pasids = new Set<number>();
    for (const e of this.nestedEntries(did)) {
      const h = this.shadow.hostPasid(e.pasid!);
      if (h !== undefined) pasids.add(h);
    }
    if (g === IOTLB_G.DSI) {
      for (const p of pasids) this.batch.add(iotlbPasid(p));
      await this.shadow.resyncSl(did);
    } else {
      const span = PAGE_SIZE << BigInt(am);
      const start = addr & ~(span - 1n);
      for (const p of pasids) this.batch.add(iotlbPasidAddr(p, start, am, ih));
      await this.shadow.resyncSl(did, start, start + span);
    }
  }

  /** PASID-based device-TLB invalidation (0x8): all PASIDs of the SID, or one bound PASID's host PASID. */
  private pasidDeviceIotlb(d: Desc<typeof InvDescType.PASID_DEVICE_IOTLB>): void {
    const f = d.fields;
    const sid = narrow(f.SID, WIDTH.SID);
    const pasid = narrow(f.PASID, WIDTH.PASID);
    if (!this.devices.some((x) => x.rid === sid)) return;
    const r = devTlbRange(f.ADDR << 12n, f.S === 1n);
    if (narrow(f.G, 1) === PASID_DEVICE_IOTLB_G.ALL_PASIDS) {
      this.batch.add(devIotlb(sid, undefined, r.addr, r.size));
      return;
    }
    const e = this.shadow.get(sid, pasid);
    const hpasid = this.shadow.hostPasid(pasid);
    if (e !== undefined && hpasid !== undefined && (e.binding.kind === 'nested' || e.binding.kind === 'pt')) this.batch.add(devIotlb(sid, hpasid, r.addr, r.size));
  }

  // ---- PASID cache ---------------------------------------------------------------------------------

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
      const c = await this.contexts.get(rid);
      if (g === PC_G.PASID_SI) {
        if (pasid !== 0) {
          const old = this.shadow.get(rid, pasid);
          const r = c.ok ? readPasidEntry(this.ram, c.value, pasid, true) : null;
          const want = r !== null && r.ok ? desiredFromEntry(r.value) : null;
          if (selected(want?.did, old?.did)) await this.shadow.apply(rid, pasid, want);
        }
      } else {
        const seen = new Set<number>();
        if (c.ok) {
          for (const r of presentPasidEntries(this.ram, c.value)) {
            if (r.pasid === 0) continue;
            seen.add(r.pasid);
            const want = desiredFromEntry(r);
            const old = this.shadow.get(rid, r.pasid);
            if (selected(want?.did, old?.did)) await this.shadow.apply(rid, r.pasid, want);
          }
        }
        for (const old of this.shadow.pasidEntriesOf(rid)) {
          if (!seen.has(old.pasid!) && selected(undefined, old.did)) await this.shadow.apply(rid, old.pasid, null);
        }
      }
      if (this.translationEnabled && c.ok) {
        const ridPasid = c.value.ridPasid;
        const old = this.shadow.get(rid, null);
        const r = readPasidEntry(this.ram, c.value, ridPasid, false);
        const memDid = r.ok ? narrow(r.value.check.fields.DID, WIDTH.DID) : undefined;
        if (g !== PC_G.PASID_SI || pasid === ridPasid) {
          if (selected(memDid, old?.did)) await this.syncRid(rid);
        }
      }
    }
  }

  // ---- page group response ---------------------------------------------------------------------

  /** Page group response (0x9): PAGE_RESPONSE for the request it answers, with the PASID the host reported. */
  private async pageGroupResponse(d: Desc<typeof InvDescType.PGRP_RESP>): Promise<void> {
    const f = d.fields;
    const pp = f.PP === 1n;
    const rid = narrow(f.RID, WIDTH.SID);
    const pasid = pp ? narrow(f.PASID, WIDTH.PASID) : undefined;
    const code = narrow(f.RESP_CODE, WIDTH.RESP_CODE);
    const prgi = narrow(f.PRGI, WIDTH.PRGI);
    const m = this.pageRequests.take(rid, pasid, prgi);
    if (m === undefined) {
      this.trace.emit({ kind: 'page-response', side: 'guest', vm: this.vm, name: 'page group response without request', args: { rid, pasid: pasid ?? null, prgi } });
      return;
    }
    await this.batch.flush();
    const hostCode = code === PGRP_RESP_CODE.SUCCESS ? IOMMU_PAGE_RESP.SUCCESS : code === PGRP_RESP_CODE.INVALID ? IOMMU_PAGE_RESP.INVALID : IOMMU_PAGE_RESP.FAILURE;
    try {
      await this.uapi.pageResponse({ rid, pasid: pp ? this.responder.reportedPasid(m) : null, prgi, code: hostCode });
      this.trace.emit({ kind: 'page-response', side: 'guest', vm: this.vm, name: 'PAGE_RESPONSE', args: { rid, pasid: pasid ?? null, prgi, code } });
    } catch (e) {
      this.log.warn({ err: e, rid, pasid }, 'PAGE_RESPONSE refused by the host');
    }
  }
}
