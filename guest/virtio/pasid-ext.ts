/**
 * The project's PASID extension of virtio-iommu (docs/virtio-iommu.md §5), offered under
 * VIRTIO_IOMMU_F_ATTACH_TABLE and following the Intel-oriented drafts (virtio-comment list,
 * 2023–2024: "virtio-iommu: Add PASID support", Tina Zhang's attach_pgt_vtd; none is in the
 * virtio specification yet):
 *
 * - ATTACH_TABLE binds a guest VT-d first-level table to one PASID of an endpoint. Guest PASIDs
 *   are guest-private: the first bind of a guest PASID allocates a host PASID (PASID_ALLOC),
 *   then BIND_GPASID carries both with IOMMU_SVA_GPASID_VAL, so the host records the guest
 *   PASID as the host PASID's SPID (non-identity mapping, docs/design.md §3.2). The same guest PASID
 *   on another endpoint reuses the host PASID. DETACH_TABLE unbinds, and the host PASID is
 *   freed with its last binding.
 * - INVALIDATE by domain / PASID / address range becomes CACHE_INVALIDATE entries, one per
 *   affected host PASID (and device, for device-TLBs).
 * - Page requests from the host arrive on the eventq; the guest answers each group with a
 *   PAGE_RESP request, which becomes PAGE_RESPONSE with the host PASID. ATTACH_TABLE_F_PRI
 *   turns PRI on for the endpoint (DEVICE_CONFIG) while such a table is attached.
 *
 * The host requests go through the VM's uAPI (guest/uapi/): on iommufd a table binding is a
 * nested HWPT (VT-d stage-1) attached at the host PASID with GLOBAL_PASID (replaced in place
 * when the guest re-attaches a PASID), INVALIDATE becomes HWPT_INVALIDATE of those HWPTs, and
 * page requests arrive as fault-queue records answered by cookie.
 */
import { isVsvaError } from '../../src/errors.js';
import { DeviceCap } from '../../vhost/messages/device.js';
import { DeviceConfigFlag } from '../../vhost/messages/device-config.js';
import {
  IOMMU_CACHE_INV_TYPE, IOMMU_INV_ADDR_FLAGS, IOMMU_INV_GRANU, IOMMU_INV_PASID_FLAGS, cacheInvalidateEntry, type CacheInvalidateEntry,
} from '../../vhost/messages/invalidate.js';
import { IOMMU_PAGE_RESP, PRGI_MAX } from '../../vhost/messages/page.js';
import { PageRequestFlag, type PageRequestMessage, type PasidFreedMessage } from '../../vhost/messages/backend.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import { encodePageRequest } from './events.js';
import {
  ATTACH_TABLE_FL_FLAGS_MASK, ATTACH_TABLE_F_PRI, AttachTableReq, DetachTableReq, FaultFlag, INVAL_FLAG_MASK, INVAL_TYPE_MASK, InvalFlag,
  InvalGran, InvalType, InvalidateReq, PAGE_RESP_F_PASID_VALID, PGTF_VTD, PageRespCode, PageRespReq, ReqStatus,
} from './iommu-spec.js';
import { reject } from './req-status.js';
import type { Domain, Endpoint, ReqReader, TableBinding } from './state.js';
import type { GuestContext, HostCalls, ReplayReport } from '../viommu.js';
import type { HostUapi, PasidRef, PasidRoute } from '../uapi/host-uapi.js';
import type { InvalidationSink } from '../uapi/invalidation-sink.js';

/** What the extension uses of the device it extends (iommu-device.ts implements it). */
export interface PasidExtensionHost {
  readonly ctx: GuestContext;
  readonly client: HostCalls;
  /** The VM's host uAPI: table bindings, invalidations and page responses go through it. */
  readonly uapi: HostUapi;
  readonly log: GuestContext['log'];
  readonly endpoints: ReadonlyMap<number, Endpoint>;
  readonly domains: ReadonlyMap<number, Domain>;
  /** The endpoint with this ID, or the request fails with NOENT. */
  endpoint(id: number): Endpoint;
  /** A domain ID outside config domain_range fails the request with RANGE. */
  checkDomainRange(id: number): void;
  /** Put an event on the eventq (held while no buffer is posted); `onDrop` when it is dropped. */
  deliverEvent(bytes: Uint8Array, onDrop?: () => void): void;
}

/** What the host's GET_NESTING_INFO said (defaults when it cannot say). */
export interface NestingSummary {
  pasidBits: number;
  cap: bigint;
  ecap: bigint;
}

interface HostPasid {
  hpasid: number;
  users: Set<Endpoint>;
}

const FL_ADDR_WIDTHS = new Set([48, 57]);

export class PasidExtension {
  private readonly byGuest = new Map<number, HostPasid>();
  private readonly byHost = new Map<number, number>();
  /** Page-request groups (last page delivered) waiting for a PAGE_RESP. */
  private readonly outstanding = new Set<string>();
  private info: NestingSummary | null = null;
  private sink: InvalidationSink | null = null;

  constructor(private readonly dev: PasidExtensionHost) {}

  /** Host PASID of a guest PASID, when one is bound. */
  hostPasid(gpasid: number): number | undefined {
    return this.byGuest.get(gpasid)?.hpasid;
  }

  /** Guest PASID of a host PASID (the host PASID itself when this VM did not name it). */
  guestPasid(hpasid: number): number {
    return this.byHost.get(hpasid) ?? hpasid;
  }

  /** Guest PASID → host PASID pairs currently bound. */
  pasidMap(): { gpasid: number; hpasid: number; endpoints: number[] }[] {
    return [...this.byGuest].map(([gpasid, h]) => ({ gpasid, hpasid: h.hpasid, endpoints: [...h.users].map((e) => e.id) }));
  }

  async nestingInfo(): Promise<NestingSummary> {
    if (this.info) return this.info;
    try {
      const n = await this.dev.client.call('GET_NESTING_INFO');
      this.info = { pasidBits: n.pasid_bits || 20, cap: n.cap_reg, ecap: n.ecap_reg };
    } catch (e) {
      if (!isVsvaError(e)) throw e;
      this.dev.log.debug({ err: e }, 'virtio-iommu: GET_NESTING_INFO failed; assuming 20 PASID bits');
      this.info = { pasidBits: 20, cap: 0n, ecap: 0n };
    }
    return this.info;
  }

  // --- ATTACH_TABLE / DETACH_TABLE ----------------------------------------------------------------

  /** ATTACH_TABLE: each field is read where it is checked, in the order the checks run. */
  async attachTable(r: ReqReader): Promise<void> {
    if (!r.isZero(AttachTableReq.RSVD, AttachTableReq.RSVD_SIZE) || !r.isZero(AttachTableReq.RSVD2, AttachTableReq.RSVD2_SIZE)) reject(ReqStatus.INVAL, 'ATTACH_TABLE reserved bytes are not zero');
    const flags = r.u32(AttachTableReq.FLAGS);
    if (flags & ~ATTACH_TABLE_F_PRI) reject(ReqStatus.INVAL, `ATTACH_TABLE flags 0x${flags.toString(16)} has unknown bits`);
    const format = r.u16(AttachTableReq.FORMAT);
    if (format !== PGTF_VTD) reject(ReqStatus.UNSUPP, `ATTACH_TABLE format ${format} is not PGTF_VTD (${PGTF_VTD})`);
    const ep = this.dev.endpoint(r.u32(AttachTableReq.ENDPOINT));
    const domainId = r.u32(AttachTableReq.DOMAIN);
    const d = this.domainOf(domainId, 'ATTACH_TABLE');
    if (ep.domain !== d) reject(ReqStatus.INVAL, `endpoint 0x${ep.id.toString(16)} is not attached to domain ${domainId}`);
    if (!(ep.dev.caps & DeviceCap.PASID)) reject(ReqStatus.UNSUPP, `endpoint 0x${ep.id.toString(16)} has no PASID capability`);
    const info = await this.nestingInfo();
    const bits = Math.min(ep.dev.pasidWidth, info.pasidBits);
    const gpasid = r.u32(AttachTableReq.PASID);
    if (gpasid === 0) reject(ReqStatus.INVAL, 'ATTACH_TABLE for PASID 0');
    if (gpasid >= 2 ** bits) reject(ReqStatus.RANGE, `PASID ${gpasid} is wider than ${bits} bits`);
    const addrWidth = r.u32(AttachTableReq.ADDR_WIDTH);
    if (!FL_ADDR_WIDTHS.has(addrWidth)) reject(ReqStatus.INVAL, `ATTACH_TABLE addr_width ${addrWidth} is not 48 or 57`);
    const flFlags = r.u64(AttachTableReq.FL_FLAGS);
    if (flFlags & ~ATTACH_TABLE_FL_FLAGS_MASK) reject(ReqStatus.INVAL, `ATTACH_TABLE fl_flags 0x${flFlags.toString(16)} has unknown bits`);
    const pgd = r.u64(AttachTableReq.PGD);
    if (pgd % 0x1000n !== 0n || pgd + 0x1000n > BigInt(this.dev.ctx.ram.size)) reject(ReqStatus.RANGE, `ATTACH_TABLE pgd 0x${pgd.toString(16)} is not a page of guest RAM`);
    const pri = (flags & ATTACH_TABLE_F_PRI) !== 0;
    if (pri && !(ep.dev.caps & DeviceCap.PRI)) reject(ReqStatus.UNSUPP, `endpoint 0x${ep.id.toString(16)} has no PRI capability`);

    const existing = ep.tables.get(gpasid);
    const priBefore = anyPri(ep);
    const priAfter = pri || [...ep.tables.values()].some((b) => b.gpasid !== gpasid && b.pri);
    let entry = this.byGuest.get(gpasid);
    let allocated = false;
    if (priAfter && !priBefore) await this.setPri(ep, true);
    try {
      if (!entry) {
        const { pasid } = await this.dev.client.call('PASID_ALLOC', { min: 1, max: Math.min(PASID_MAX, 2 ** info.pasidBits - 1) });
        entry = { hpasid: pasid, users: new Set() };
        allocated = true;
      }
      const uapi = this.dev.uapi;
      // A re-attached PASID: replaced in place where the uAPI can (iommufd), else unbound first.
      const inPlace = existing !== undefined && uapi.replaces;
      if (existing && !inPlace) await uapi.unroutePasid(this.ref(ep, existing), tableRoute(existing));
      const b: TableBinding = { gpasid, hpasid: entry.hpasid, domain: d, pgd, flFlags, addrWidth, pri };
      try {
        await uapi.routePasid(this.ref(ep, b), tableRoute(b), inPlace);
      } catch (e) {
        if (existing && !inPlace) {
          await uapi.routePasid(this.ref(ep, existing), tableRoute(existing), false).catch(() => this.forget(ep, existing));
        }
        throw e;
      }
      entry.users.add(ep);
      this.byGuest.set(gpasid, entry);
      this.byHost.set(entry.hpasid, gpasid);
      ep.tables.set(gpasid, b);
      this.dev.ctx.trace.emit({
        kind: 'bind', side: 'guest', vm: this.dev.ctx.name, name: 'virtio ATTACH_TABLE',
        args: { endpoint: ep.id, gpasid, hpasid: entry.hpasid, pgd: `0x${pgd.toString(16)}`, pri },
      });
    } catch (e) {
      if (allocated && entry) await this.dev.client.call('PASID_FREE', { min: entry.hpasid, max: entry.hpasid }).catch(() => undefined);
      if (priAfter && !priBefore) await this.setPri(ep, false).catch(() => undefined);
      throw e;
    }
    if (priBefore && !priAfter) await this.setPri(ep, false);
  }

  async detachTable(r: ReqReader): Promise<void> {
    const domainId = r.u32(DetachTableReq.DOMAIN);
    const gpasid = r.u32(DetachTableReq.PASID);
    if (!r.isZero(DetachTableReq.RESERVED, DetachTableReq.RESERVED_SIZE)) reject(ReqStatus.INVAL, 'DETACH_TABLE reserved bytes are not zero');
    const ep = this.dev.endpoint(r.u32(DetachTableReq.ENDPOINT));
    const d = this.domainOf(domainId, 'DETACH_TABLE');
    const b = ep.tables.get(gpasid);
    if (!b || b.domain !== d) reject(ReqStatus.INVAL, `endpoint 0x${ep.id.toString(16)} has no table for PASID ${gpasid} in domain ${domainId}`);
    await this.unbind(ep, b);
  }

  /** Unbind every table of the endpoint (in domain `d` only, when given). Best effort. */
  async detachAll(ep: Endpoint, d?: Domain): Promise<void> {
    for (const b of [...ep.tables.values()]) {
      if (d && b.domain !== d) continue;
      try {
        await this.unbind(ep, b);
      } catch (e) {
        this.dev.log.warn({ err: e, endpoint: ep.id, gpasid: b.gpasid }, 'virtio-iommu: unbind failed; forgetting the binding');
        this.forget(ep, b);
      }
    }
  }

  /** Forget all PASID state after a reset (host bindings were undone by detachAll). */
  reset(): void {
    this.outstanding.clear();
  }

  private async unbind(ep: Endpoint, b: TableBinding): Promise<void> {
    await this.dev.uapi.unroutePasid(this.ref(ep, b), tableRoute(b));
    const priBefore = anyPri(ep);
    const freed = this.forget(ep, b);
    this.dev.ctx.trace.emit({
      kind: 'unbind', side: 'guest', vm: this.dev.ctx.name, name: 'virtio DETACH_TABLE',
      args: { endpoint: ep.id, gpasid: b.gpasid, hpasid: b.hpasid },
    });
    if (freed) await this.dev.client.call('PASID_FREE', { min: b.hpasid, max: b.hpasid });
    if (priBefore && !anyPri(ep)) await this.setPri(ep, false);
  }

  /** Drop a binding from the model; true when its host PASID lost its last user. */
  private forget(ep: Endpoint, b: TableBinding): boolean {
    ep.tables.delete(b.gpasid);
    const entry = this.byGuest.get(b.gpasid);
    if (!entry) return false;
    entry.users.delete(ep);
    if (entry.users.size > 0) return false;
    this.byGuest.delete(b.gpasid);
    this.byHost.delete(entry.hpasid);
    return true;
  }

  private async setPri(ep: Endpoint, on: boolean): Promise<void> {
    await this.dev.client.call('DEVICE_CONFIG', { rid: ep.id, flags: on ? DeviceConfigFlag.PRI_ENABLE | DeviceConfigFlag.ATS_ENABLE : 0 });
  }

  /** The uAPI's name of a binding's PASID: guest-private, on a host PASID of the VM's IOASID set (global). */
  private ref(ep: Endpoint, b: TableBinding): PasidRef {
    return { rid: ep.id, gpasid: b.gpasid, hpasid: b.hpasid, global: true };
  }

  private domainOf(id: number, what: string): Domain {
    this.dev.checkDomainRange(id);
    return this.dev.domains.get(id) ?? reject(ReqStatus.NOENT, `${what}: domain ${id} does not exist`);
  }

  // --- INVALIDATE ---------------------------------------------------------------------------------

  /** INVALIDATE: each field is read where it is checked, in the order the checks run. */
  async invalidate(r: ReqReader): Promise<void> {
    if (!r.isZero(InvalidateReq.RSVD1, InvalidateReq.RSVD1_SIZE) || !r.isZero(InvalidateReq.RSVD2, InvalidateReq.RSVD2_SIZE) || !r.isZero(InvalidateReq.RSVD3, InvalidateReq.RSVD3_SIZE)) {
      reject(ReqStatus.INVAL, 'INVALIDATE reserved bytes are not zero');
    }
    const gran = r.u16(InvalidateReq.INV_GRAN);
    if (gran !== InvalGran.DOMAIN && gran !== InvalGran.PASID && gran !== InvalGran.VA) reject(ReqStatus.INVAL, `INVALIDATE granularity 0x${gran.toString(16)} is not DOMAIN, PASID or VA`);
    const type = r.u16(InvalidateReq.INV_TYPE);
    if (type === 0 || type & ~INVAL_TYPE_MASK) reject(ReqStatus.INVAL, `INVALIDATE type 0x${type.toString(16)} is empty or has unknown bits`);
    const flags = r.u16(InvalidateReq.FLAGS);
    if (flags & ~INVAL_FLAG_MASK) reject(ReqStatus.INVAL, `INVALIDATE flags 0x${flags.toString(16)} has unknown bits`);
    const domainId = r.u32(InvalidateReq.DOMAIN);
    const d = this.domainOf(domainId, 'INVALIDATE');
    const byPasid = gran !== InvalGran.DOMAIN;
    if (byPasid && !(flags & InvalFlag.PASID)) reject(ReqStatus.INVAL, 'INVALIDATE by PASID or VA without INVAL_F_PASID');
    const gpasid = r.u32(InvalidateReq.PASID);
    const start = r.u64(InvalidateReq.VIRT_START);
    const nrPages = r.u64(InvalidateReq.NR_PAGES);
    const granule = r.u8(InvalidateReq.GRANULE);
    if (gran === InvalGran.VA) {
      if (type & InvalType.PASID) reject(ReqStatus.INVAL, 'INVALIDATE of the PASID cache by VA');
      if (granule < 12 || granule > 52) reject(ReqStatus.INVAL, `INVALIDATE granule 2^${granule} is not a page size`);
      if (nrPages === 0n) reject(ReqStatus.INVAL, 'INVALIDATE of 0 pages');
      if (start % (1n << BigInt(granule)) !== 0n) reject(ReqStatus.INVAL, 'INVALIDATE virt_start is not aligned to the granule');
      if (start + (nrPages << BigInt(granule)) > 1n << 64n) reject(ReqStatus.RANGE, 'INVALIDATE range wraps past 2^64');
    }
    // Which (endpoint, table) pairs the request covers.
    const targets: { ep: Endpoint; b: TableBinding }[] = [];
    for (const ep of d.endpoints) {
      for (const b of ep.tables.values()) if (b.domain === d && (!byPasid || b.gpasid === gpasid)) targets.push({ ep, b });
    }
    const entries: CacheInvalidateEntry[] = [];
    const hostCaches = (type & InvalType.IOTLB ? IOMMU_CACHE_INV_TYPE.IOTLB : 0) | (type & InvalType.PASID ? IOMMU_CACHE_INV_TYPE.PASID : 0);
    const seen = new Set<number>();
    for (const { ep, b } of targets) {
      if (hostCaches && !seen.has(b.hpasid)) {
        seen.add(b.hpasid);
        entries.push(this.invEntry(0, hostCaches, b.hpasid, gran, flags, start, nrPages, granule));
      }
      if (type & InvalType.DEV_IOTLB) entries.push(this.invEntry(ep.id, IOMMU_CACHE_INV_TYPE.DEV_IOTLB, b.hpasid, gran, flags, start, nrPages, granule));
    }
    const sink = (this.sink ??= this.dev.uapi.invalidations({ log: this.dev.log, trace: this.dev.ctx.trace, vm: this.dev.ctx.name }));
    const refused = sink.counters.refused;
    for (const e of entries) sink.add(e);
    await sink.flush();
    if (sink.counters.refused > refused) reject(ReqStatus.DEVERR, `host refused ${sink.counters.refused - refused} of ${entries.length} invalidations`);
    this.dev.ctx.trace.emit({
      kind: 'invalidate', side: 'guest', vm: this.dev.ctx.name, name: `virtio INVALIDATE ${gran === InvalGran.DOMAIN ? 'domain' : gran === InvalGran.PASID ? 'pasid' : 'va'}`,
      args: { domain: domainId, gpasid: byPasid ? gpasid : null, type, entries: entries.length, addr: gran === InvalGran.VA ? `0x${start.toString(16)}` : null, pages: gran === InvalGran.VA ? Number(nrPages) : null },
    });
  }

  /** One host invalidation entry; DOMAIN and PASID granularity both become host PASID granularity. */
  private invEntry(rid: number, cache: number, hpasid: number, gran: number, flags: number, start: bigint, nrPages: bigint, granule: number): CacheInvalidateEntry {
    const va = gran === InvalGran.VA;
    return cacheInvalidateEntry({
      rid,
      cache,
      granularity: va ? IOMMU_INV_GRANU.ADDR : IOMMU_INV_GRANU.PASID,
      flags: va ? IOMMU_INV_ADDR_FLAGS.PASID | (flags & InvalFlag.LEAF ? IOMMU_INV_ADDR_FLAGS.LEAF : 0) : IOMMU_INV_PASID_FLAGS.PASID,
      pasid: BigInt(hpasid),
      ...(va ? { addr: start, granule_size: 1n << BigInt(granule), nb_granules: nrPages } : {}),
    });
  }

  // --- page requests and responses ------------------------------------------------------------------

  private groupKey(rid: number, gpasid: number | undefined, grpid: number): string {
    return `${rid}:${gpasid ?? '-'}:${grpid}`;
  }

  /** Host PAGE_REQUEST → a page-request report on the eventq (with the guest PASID). */
  onPageRequest(msg: PageRequestMessage): void {
    const last = (msg.flags & PageRequestFlag.LPIG) !== 0;
    const pasidValid = (msg.flags & PageRequestFlag.PASID_VALID) !== 0;
    const ep = this.dev.endpoints.get(msg.rid);
    const gpasid = pasidValid ? this.byHost.get(msg.pasid) : undefined;
    if (!ep || (pasidValid && gpasid === undefined)) {
      this.dev.log.warn({ rid: msg.rid, pasid: msg.pasid }, 'virtio-iommu: page request for an unknown endpoint or PASID answered INVALID');
      if (last) this.respondHost(msg.rid, pasidValid ? msg.pasid : undefined, msg.prgi, IOMMU_PAGE_RESP.INVALID);
      return;
    }
    let flags = FaultFlag.ADDRESS;
    if (msg.flags & PageRequestFlag.READ) flags |= FaultFlag.READ;
    if (msg.flags & PageRequestFlag.WRITE) flags |= FaultFlag.WRITE;
    if (msg.flags & PageRequestFlag.EXEC) flags |= FaultFlag.EXEC;
    if (msg.flags & PageRequestFlag.PRIV) flags |= FaultFlag.PRIV;
    if (last) flags |= FaultFlag.LAST;
    if (gpasid !== undefined) flags |= FaultFlag.PASID;
    const key = this.groupKey(ep.id, gpasid, msg.prgi);
    if (last) this.outstanding.add(key);
    this.dev.deliverEvent(encodePageRequest({ flags, endpoint: ep.id, pasid: gpasid, address: msg.addr, grpid: msg.prgi }), () => {
      if (!last) return;
      this.outstanding.delete(key);
      this.respondHost(ep.id, pasidValid ? msg.pasid : undefined, msg.prgi, IOMMU_PAGE_RESP.INVALID);
    });
    this.dev.ctx.trace.emit({
      kind: 'page-request', side: 'guest', vm: this.dev.ctx.name, name: 'virtio page request event',
      args: { endpoint: ep.id, gpasid: gpasid ?? null, hpasid: pasidValid ? msg.pasid : null, grpid: msg.prgi, addr: `0x${msg.addr.toString(16)}`, last },
    });
  }

  private respondHost(rid: number, hpasid: number | undefined, grpid: number, code: number): void {
    this.dev.uapi.pageResponse({ rid, pasid: hpasid ?? null, prgi: grpid, code }).catch((e: unknown) => this.dev.log.warn({ err: e }, 'virtio-iommu: automatic page response failed'));
  }

  async pageResponse(r: ReqReader): Promise<void> {
    const flags = r.u32(PageRespReq.FLAGS);
    const gpasid = r.u32(PageRespReq.PASID);
    const grpid = r.u32(PageRespReq.GRPID);
    const code = r.u16(PageRespReq.CODE);
    if (!r.isZero(PageRespReq.RESERVED, PageRespReq.RESERVED_SIZE)) reject(ReqStatus.INVAL, 'PAGE_RESP reserved bytes are not zero');
    if (flags & ~PAGE_RESP_F_PASID_VALID) reject(ReqStatus.INVAL, `PAGE_RESP flags 0x${flags.toString(16)} has unknown bits`);
    if (code > PageRespCode.FAILURE) reject(ReqStatus.INVAL, `PAGE_RESP code ${code} is not SUCCESS, INVALID or FAILURE`);
    if (grpid > PRGI_MAX) reject(ReqStatus.INVAL, `PAGE_RESP grpid ${grpid} is wider than 9 bits`);
    const ep = this.dev.endpoint(r.u32(PageRespReq.ENDPOINT));
    const pasidValid = (flags & PAGE_RESP_F_PASID_VALID) !== 0;
    const hpasid = pasidValid ? this.hostPasid(gpasid) : undefined;
    if (pasidValid && hpasid === undefined) reject(ReqStatus.INVAL, `PAGE_RESP for PASID ${gpasid}, which has no table`);
    const key = this.groupKey(ep.id, pasidValid ? gpasid : undefined, grpid);
    if (!this.outstanding.has(key)) reject(ReqStatus.INVAL, `no page request group ${grpid} is outstanding for endpoint 0x${ep.id.toString(16)}${pasidValid ? ` PASID ${gpasid}` : ''}`);
    await this.dev.uapi.pageResponse({ rid: ep.id, pasid: hpasid ?? null, prgi: grpid, code });
    this.outstanding.delete(key);
    this.dev.ctx.trace.emit({
      kind: 'page-response', side: 'guest', vm: this.dev.ctx.name, name: 'virtio PAGE_RESP',
      args: { endpoint: ep.id, gpasid: pasidValid ? gpasid : null, hpasid: hpasid ?? null, grpid, code },
    });
  }

  /**
   * Replay on a fresh host: each guest PASID's host PASID again — the same value when the host
   * can give it (PASID_ALLOC min = max), else any (guest PASIDs are guest-private, so only the
   * VMM's map changes) — then every table binding, then PRI for endpoints with a PRI table.
   * Outstanding page-request groups died with the old host and are forgotten.
   */
  async replay(host: HostCalls, r: ReplayReport): Promise<void> {
    this.outstanding.clear();
    const u = this.dev.uapi.via(host);
    const info = await this.nestingInfo();
    for (const [gpasid, entry] of [...this.byGuest]) {
      const old = entry.hpasid;
      let hpasid: number;
      try {
        hpasid = (await host.call('PASID_ALLOC', { min: old, max: old })).pasid;
      } catch {
        try {
          hpasid = (await host.call('PASID_ALLOC', { min: 1, max: Math.min(PASID_MAX, 2 ** info.pasidBits - 1) })).pasid;
        } catch (e) {
          r.failures.push(`guest PASID ${gpasid}: no host PASID (${isVsvaError(e) ? e.code : 'EIO'})`);
          for (const ep of [...entry.users]) {
            const b = ep.tables.get(gpasid);
            if (b) this.forget(ep, b);
          }
          continue;
        }
      }
      r.pasids++;
      if (hpasid !== old) {
        this.byHost.delete(old);
        this.byHost.set(hpasid, gpasid);
        entry.hpasid = hpasid;
      }
      for (const ep of [...entry.users]) {
        const b = ep.tables.get(gpasid);
        if (!b) continue;
        b.hpasid = hpasid;
        try {
          await u.routePasid(this.ref(ep, b), tableRoute(b), false);
          r.bindings++;
        } catch (e) {
          r.failures.push(`endpoint 0x${ep.id.toString(16)} guest PASID ${gpasid}: ${isVsvaError(e) ? e.code : 'EIO'}`);
        }
      }
    }
    for (const ep of this.dev.endpoints.values()) {
      if (!anyPri(ep)) continue;
      try {
        await host.call('DEVICE_CONFIG', { rid: ep.id, flags: DeviceConfigFlag.PRI_ENABLE | DeviceConfigFlag.ATS_ENABLE });
        r.deviceConfigs++;
      } catch (e) {
        r.failures.push(`endpoint 0x${ep.id.toString(16)} PRI: ${isVsvaError(e) ? e.code : 'EIO'}`);
      }
    }
  }

  /** The host freed one of this VM's PASIDs on its own: forget every binding of it. */
  onPasidFreed(msg: PasidFreedMessage): void {
    const gpasid = this.byHost.get(msg.pasid);
    if (gpasid === undefined) return;
    const entry = this.byGuest.get(gpasid)!;
    for (const ep of [...entry.users]) {
      const b = ep.tables.get(gpasid);
      const priBefore = anyPri(ep);
      if (b) this.forget(ep, b);
      if (priBefore && !anyPri(ep)) this.setPri(ep, false).catch((e: unknown) => this.dev.log.warn({ err: e }, 'virtio-iommu: PRI disable failed'));
    }
    this.byGuest.delete(gpasid);
    this.byHost.delete(msg.pasid);
    this.dev.log.warn({ hpasid: msg.pasid, gpasid, reason: msg.reason }, 'virtio-iommu: host freed a PASID; its tables are gone');
    this.dev.ctx.trace.emit({ kind: 'free', side: 'guest', vm: this.dev.ctx.name, name: 'virtio PASID freed by host', args: { hpasid: msg.pasid, gpasid, reason: msg.reason } });
  }
}

/** A table binding as a nested route: the guest's VT-d first-level table (PAT / EMT not carried by ATTACH_TABLE). */
function tableRoute(b: TableBinding): PasidRoute {
  return { kind: 'nested', table: { flptr: b.pgd, addrWidth: b.addrWidth, vtdFlags: b.flFlags, pat: 0, emt: 0 } };
}

function anyPri(ep: Endpoint): boolean {
  for (const b of ep.tables.values()) if (b.pri) return true;
  return false;
}
