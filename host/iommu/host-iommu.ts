/**
 * The emulated host IOMMU (DESIGN §4 "IOMMU core", "Translation engine"; seed 001): domains,
 * devices, RID and RID+PASID attach, nested first-level binding, cache invalidation, fault
 * handlers and page responses, translation and DMA.
 *
 * Conventions:
 * - Every method checks all of its input before it changes anything; errors are VsvaError with
 *   Linux errno codes: ENODEV unknown RID, ENOENT unknown domain / route / pending request,
 *   EBUSY route already present or object still in use, EINVAL bad argument, ERANGE address or
 *   PASID beyond a width, EOPNOTSUPP missing device capability, ENOSPC out of domain IDs.
 * - Attach/detach program the device's PASID entries exactly as Linux intel-iommu does
 *   (reference §2 "How Linux programs each PGTT") and tear them down with Linux's flush sequence
 *   (PASID-cache PASID-selective, then PASID-based IOTLB or IOTLB domain-selective, then
 *   device-TLB). `unmap` flushes like the kernel's iotlb_sync (IOTLB page-selective for the
 *   domain + device-TLBs), unless `{ flush: false }`.
 * - Changes made by others to tables the IOMMU does not own (guest first-level tables) become
 *   visible only after the matching invalidation call, as on hardware.
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { encodeCap, encodeEcap, SAGAW, SLLPS, VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { PASID_BITS } from '../../src/vtd/pasid-entry.js';
import type { HostMemory } from '../memory/host-memory.js';
import {
  ACCESS_EXEC,
  ACCESS_PRIV,
  ACCESS_WRITE,
  NO_PASID,
  PGTT_FL,
  PGTT_NESTED,
  PGTT_PT,
  PGTT_SL,
  REQ_NO_REPORT,
  RID_PASID,
  XLATE_FAULT,
} from './constants.js';
import { IommuDevice, PageResponseCode, type PageResponseCodeValue } from './device.js';
import { attachmentKey, IommuDomain, type Attachment, type FirstLevelConfig } from './domain.js';
import { DmaMover } from './dma.js';
import { TranslationEngine, type EngineCounters } from './engine.js';
import { DMA_UNBACKED_HPA, type FaultHandler, type FaultState, type IommuFault, type PageRequest } from './fault.js';
import { PasidTable, type PasidEntryValues } from './pasid-table.js';
import { PhysPort } from './phys-port.js';
import { PageTablePool, type PageTablePoolOptions } from './pt-pool.js';
import { SecondLevelTable, type SlProt } from './sl-table.js';
import { Iotlb } from './tlb.js';
import { buildTopology, type IommuTopology } from './topology.js';

const log = childLogger('iommu');

/** DID 0 is reserved; DID 1 is the pass-through domain's (Linux FLPT_DEFAULT_DID). */
export const IDENTITY_DID = 1;
const FIRST_DID = 2;
const MAX_DID = 0xffff;
const SAGAW_HOST = SAGAW.AW_39BIT | SAGAW.AW_48BIT;

export type Addr = bigint | number;

export interface HostIommuOptions {
  /** The host physical address space: page tables are allocated in it, DMA goes into it. */
  memory: HostMemory;
  /** Host address width in bits (CAP.MGAW + 1). Default 48. */
  haw?: number;
  pool?: PageTablePoolOptions;
  /** IOTLB entries before the whole IOTLB is flushed to make room. Default 2^20. */
  iotlbCapacity?: number;
  /** Device-TLB entries per ATS device. Default 4096. */
  devTlbCapacity?: number;
  /** Trace events (bind, unbind, invalidate, fault, page-request, page-response). */
  trace?: TraceBus;
}

export type AllocDomainOptions =
  | { type?: 'paging'; name?: string; levels?: 3 | 4; dirtyTracking?: boolean; executeControl?: boolean }
  | ({ type: 'sva'; name?: string; flptr: Addr } & FirstLevelOptions);

/** First-level options of bindPgtablePasid and SVA domains (bind data of seed 004 / iommufd vtd_s1). */
export interface FirstLevelOptions {
  /** 4-level (48-bit, FLPM 0) or 5-level (57-bit, FLPM 1). Default 4. */
  levels?: 4 | 5;
  sre?: boolean;
  /** Effective only with SRE (Linux sets WPE only together with SRE). */
  wpe?: boolean;
  eafe?: boolean;
  nxe?: boolean;
  ere?: boolean;
  smep?: boolean;
  pcd?: boolean;
  pwt?: boolean;
  /** 32-bit PAT. */
  pat?: number;
  /** 3-bit EMT. */
  emt?: number;
  cd?: boolean;
  emte?: boolean;
}

export interface BindPgtableOptions extends FirstLevelOptions {
  /** Guest-physical address of the first-level root table. */
  flptr: Addr;
}

export interface AddDeviceOptions {
  /** bus << 8 | devfn. */
  rid: number;
  /** PASID width in bits, 0..20 (0 = no PASID capability). Default 20. */
  pasidBits?: number;
  ats?: boolean;
  /** ATS Enable at start (only with `ats`). Default: as `ats` (the host driver enabled it at probe). */
  atsEnabled?: boolean;
  pri?: boolean;
  name?: string;
}

export interface TranslationRequest {
  rid: number;
  /** Omit for a request without PASID. */
  pasid?: number;
  addr: Addr;
  write?: boolean;
  exec?: boolean;
  priv?: boolean;
  /** Do not report a fault to the handler (ATS translation request semantics). */
  noReport?: boolean;
}

/** One side of a DMA job. */
export interface DmaAccess {
  rid: number;
  pasid?: number;
  addr: Addr;
  priv?: boolean;
  /** Reads only: instruction fetch. */
  exec?: boolean;
  noReport?: boolean;
}

export type DmaResult = { ok: true; done: number } | { ok: false; done: number; fault: IommuFault };
export type DmaReadResult = DmaResult & { data: Uint8Array };

export type CacheInvalidation =
  | { cache: 'iotlb'; granularity: 'global' }
  | { cache: 'iotlb'; granularity: 'domain'; did: number }
  | { cache: 'iotlb'; granularity: 'page'; did: number; addr: Addr; am: number; ih?: boolean }
  | { cache: 'piotlb'; granularity: 'pasid'; did: number; pasid: number }
  | { cache: 'piotlb'; granularity: 'page'; did: number; pasid: number; addr: Addr; am: number; ih?: boolean }
  | { cache: 'pasid'; granularity: 'global' }
  | { cache: 'pasid'; granularity: 'domain'; did: number }
  | { cache: 'pasid'; granularity: 'pasid'; did: number; pasid: number }
  | { cache: 'devtlb'; rid: number; pasid?: number; allPasids?: boolean; addr?: Addr; size?: number };

export interface InvalidationCounters {
  iotlbGlobal: number;
  iotlbDomain: number;
  iotlbPage: number;
  piotlbPasid: number;
  piotlbPage: number;
  pasidCacheGlobal: number;
  pasidCacheDomain: number;
  pasidCachePasid: number;
  devTlb: number;
}

export interface IommuStats extends EngineCounters {
  iotlbEntries: number;
  invalidations: InvalidationCounters;
  domains: number;
  devices: number;
  pageTablePages: number;
  pageRequests: number;
  pageResponses: number;
}

export interface PageRequestOptions {
  pasid?: number;
  addr: Addr;
  write?: boolean;
  exec?: boolean;
  priv?: boolean;
  /** Page request group index 0..511; the lowest free one when omitted. */
  prgi?: number;
  /** Last page in group. Default true. */
  lpig?: boolean;
}

export type DomainRef = IommuDomain | number;

export class HostIommu {
  readonly memory: HostMemory;
  readonly haw: number;
  readonly pool: PageTablePool;
  readonly engine: TranslationEngine;
  /** Recent faults (newest last, at most 64), for inspection. */
  readonly recentFaults: IommuFault[] = [];

  private readonly port: PhysPort;
  private readonly iotlb: Iotlb;
  private readonly dma: DmaMover;
  private readonly devices = new Map<number, IommuDevice>();
  private readonly domains = new Map<number, IommuDomain>();
  private readonly devTlbCapacity: number;
  private readonly trace: TraceBus | undefined;
  private readonly identity: IommuDomain;
  private nextDid = FIRST_DID;
  private readonly inv: InvalidationCounters = {
    iotlbGlobal: 0,
    iotlbDomain: 0,
    iotlbPage: 0,
    piotlbPasid: 0,
    piotlbPage: 0,
    pasidCacheGlobal: 0,
    pasidCacheDomain: 0,
    pasidCachePasid: 0,
    devTlb: 0,
  };
  private pageRequests = 0;
  private pageResponses = 0;

  constructor(opts: HostIommuOptions) {
    const haw = opts.haw ?? 48;
    if (!Number.isInteger(haw) || haw < 32 || haw > 52) fail('EINVAL', `host address width ${haw} is not in 32..52`);
    const iotlbCapacity = opts.iotlbCapacity ?? 1 << 20;
    const devTlbCapacity = opts.devTlbCapacity ?? 4096;
    if (!Number.isSafeInteger(iotlbCapacity) || iotlbCapacity < 1) fail('EINVAL', `IOTLB capacity ${iotlbCapacity} must be a positive integer`);
    if (!Number.isSafeInteger(devTlbCapacity) || devTlbCapacity < 1) fail('EINVAL', `device-TLB capacity ${devTlbCapacity} must be a positive integer`);
    this.memory = opts.memory;
    this.haw = haw;
    this.devTlbCapacity = devTlbCapacity;
    this.trace = opts.trace;
    this.pool = new PageTablePool(opts.memory, opts.pool);
    this.port = new PhysPort(opts.memory);
    this.iotlb = new Iotlb(iotlbCapacity);
    this.engine = new TranslationEngine(this.devices, this.iotlb, this.port, { haw, sagaw: SAGAW_HOST }, (dev, f) => this.onFault(dev, f));
    this.dma = new DmaMover(this.engine, this.port);
    this.identity = new IommuDomain(IDENTITY_DID, 'identity', 'identity', null, false, false, null);
    this.domains.set(IDENTITY_DID, this.identity);
  }

  // ---- capabilities ----------------------------------------------------------------------------

  /** CAP/ECAP of this host IOMMU (for nesting info): SM, nested, FL 4/5-level, SL 39/48-bit, PRI. */
  capabilities(): { cap: bigint; ecap: bigint } {
    const cap = encodeCap({
      ND: 6,
      SAGAW: SAGAW_HOST,
      MGAW: this.haw - 1,
      SLLPS: SLLPS.SIZE_2M | SLLPS.SIZE_1G,
      PSI: 1,
      MAMV: VTD_MAMV,
      FL1GP: 1,
      FL5LP: 1,
    });
    const ecap = encodeEcap({
      QI: 1,
      DT: 1,
      PT: 1,
      NEST: 1,
      PRS: 1,
      ERS: 1,
      SRS: 1,
      EAFS: 1,
      PSS: PASID_BITS - 1,
      PASID: 1,
      PDS: 1,
      SMTS: 1,
      SLADS: 1,
      SLTS: 1,
      FLTS: 1,
      SMPWCS: 1,
    });
    return { cap, ecap };
  }

  // ---- domains ---------------------------------------------------------------------------------

  /** The static pass-through domain (PGTT = 4, DID 1). */
  get identityDomain(): IommuDomain {
    return this.identity;
  }

  /** A new kernel-managed second-level domain ('paging', default) or an SVA first-level domain. */
  allocDomain(opts: AllocDomainOptions = {}): IommuDomain {
    const did = this.findFreeDid();
    if (opts.type === 'sva') {
      const fl = this.firstLevelConfig(opts, this.haw, 'SVA domain');
      const d = new IommuDomain(did, 'sva', opts.name ?? `sva-${did}`, null, false, false, fl);
      this.domains.set(did, d);
      this.nextDid = did + 1;
      return d;
    }
    if (opts.type !== undefined && opts.type !== 'paging') fail('EINVAL', `unknown domain type '${String(opts.type)}'`);
    const levels = opts.levels ?? 4;
    if (levels !== 3 && levels !== 4) fail('EINVAL', `second-level tables are 3- or 4-level, not ${String(levels)}`);
    const table = new SecondLevelTable(this.pool, this.memory, levels, this.haw);
    const d = new IommuDomain(did, 'paging', opts.name ?? `domain-${did}`, table, opts.dirtyTracking === true, opts.executeControl === true, null);
    this.domains.set(did, d);
    this.nextDid = did + 1;
    return d;
  }

  /** Free a domain that has no routes left. Its DID is flushed from the IOTLB. */
  freeDomain(ref: DomainRef): void {
    const d = this.domainOf(ref);
    if (d === this.identity) fail('EINVAL', 'the identity domain is static and cannot be freed');
    if (d.attachments.size > 0) fail('EBUSY', `domain ${d.did} still has ${d.attachments.size} attached route(s)`);
    d.table?.destroy();
    d.freed = true;
    this.domains.delete(d.did);
    this.iotlb.invalidateDomain(d.did);
  }

  /** The live domain with DID `did`. */
  domain(did: number): IommuDomain {
    const d = this.domains.get(did);
    if (d === undefined) fail('ENOENT', `no domain with DID ${did}`);
    return d;
  }

  /** Map [iova, iova+size) → [hpa, hpa+size) in a paging domain (largest pages that fit). */
  map(ref: DomainRef, iova: Addr, hpa: Addr, size: number, prot: SlProt): void {
    const d = this.pagingDomain(ref, 'map');
    d.table!.map(toNum(iova, 'IOVA'), toNum(hpa, 'HPA'), size, prot);
  }

  /**
   * Unmap whatever is mapped in [iova, iova+size) of a paging domain; returns the bytes unmapped.
   * Flushes the IOTLB (page-selective, DID) and the device-TLBs of the domain's routes unless
   * `flush` is false (then the caller must invalidate, or stale translations stay cached).
   */
  unmap(ref: DomainRef, iova: Addr, size: number, opts: { flush?: boolean } = {}): number {
    const d = this.pagingDomain(ref, 'unmap');
    const start = toNum(iova, 'IOVA');
    const bytes = d.table!.unmap(start, size);
    if (bytes > 0 && opts.flush !== false) this.flushDomainRange(d, start, size);
    return bytes;
  }

  /** The HPA `iova` maps to in a paging domain, or undefined. */
  iovaToPhys(ref: DomainRef, iova: Addr): bigint | undefined {
    const d = this.pagingDomain(ref, 'iovaToPhys');
    const r = d.table!.lookup(toNum(iova, 'IOVA'));
    return r === undefined ? undefined : BigInt(r.hpa);
  }

  // ---- devices ---------------------------------------------------------------------------------

  addDevice(opts: AddDeviceOptions): IommuDevice {
    const { rid } = opts;
    checkRid(rid);
    const pasidBits = opts.pasidBits ?? PASID_BITS;
    if (!Number.isInteger(pasidBits) || pasidBits < 0 || pasidBits > PASID_BITS) fail('EINVAL', `PASID width ${pasidBits} is not in 0..${PASID_BITS}`);
    if (this.devices.has(rid)) fail('EEXIST', `device ${ridName(rid)} already exists`);
    if (opts.pri === true && pasidBits === 0) fail('EINVAL', `device ${ridName(rid)}: PRI without PASID is not modelled`);
    if (opts.atsEnabled === true && opts.ats !== true) fail('EINVAL', `device ${ridName(rid)}: ATS enabled without the ATS capability`);
    const table = new PasidTable(this.pool, this.memory, pasidBits);
    const ats = opts.ats === true;
    const dev = new IommuDevice(rid, opts.name ?? ridName(rid), pasidBits, ats, opts.pri === true, table, this.devTlbCapacity, opts.atsEnabled ?? ats);
    this.devices.set(rid, dev);
    this.engine.resetContextCache();
    return dev;
  }

  /** Remove a device that has no routes. Outstanding page requests complete with FAILURE. */
  removeDevice(rid: number): void {
    const dev = this.deviceOf(rid);
    if (dev.attachmentCount > 0) fail('EBUSY', `device ${dev.bdf} still has ${dev.attachmentCount} attached route(s)`);
    for (const p of dev.pendingPageRequests.values()) p.resolve(PageResponseCode.FAILURE);
    dev.pendingPageRequests.clear();
    dev.pasidTable.dispose();
    this.devices.delete(rid);
    this.engine.resetContextCache();
  }

  device(rid: number): IommuDevice {
    return this.deviceOf(rid);
  }

  /**
   * ATS Enable of device `rid` (PCIe ATS control register; what the guest's DEVICE_CONFIG
   * ATS_ENABLE drives). On: requests fill and hit the device-TLB, which then needs device-TLB
   * invalidations (stale until flushed, as on hardware). Off: no device-TLB fill or lookup, and
   * whatever the device-TLB held is dropped (a device drops its ATC when ATS is disabled).
   * ENODEV: unknown RID; EOPNOTSUPP: enabling on a device without the ATS capability.
   */
  setAtsEnabled(rid: number, on: boolean): void {
    const dev = this.deviceOf(rid);
    if (on && !dev.ats) fail('EOPNOTSUPP', `device ${dev.bdf} has no ATS capability`);
    if (dev.atsEnabled === on) return;
    dev.atsEnabled = on;
    if (!on) dev.devTlb?.invalidateAll();
    for (const c of dev.contexts.values()) c.setAts(on);
  }

  listDevices(): IommuDevice[] {
    return [...this.devices.values()];
  }

  listDomains(): IommuDomain[] {
    return [...this.domains.values()];
  }

  // ---- attach ----------------------------------------------------------------------------------

  /** Attach the RID (requests without PASID) to a paging or identity domain. */
  attachDevice(rid: number, ref: DomainRef): void {
    const dev = this.deviceOf(rid);
    const d = this.domainOf(ref);
    if (d.type === 'sva') fail('EINVAL', `SVA domain ${d.did} is attached per PASID, not to a RID`);
    if (dev.defaultAttachment !== null) fail('EBUSY', `device ${dev.bdf} is already attached to domain ${dev.defaultAttachment.domain.did}`);
    const pgtt = d.type === 'identity' ? PGTT_PT : PGTT_SL;
    dev.pasidTable.write(RID_PASID, this.entryFor(d, pgtt));
    const att: Attachment = { rid, pasid: null, domain: d, pgtt };
    dev.defaultAttachment = att;
    d.attachments.set(attachmentKey(rid, null), att);
  }

  /** Detach the RID's default domain (tearing down PASID entry RID_PASID with its flushes). */
  detachDevice(rid: number): void {
    const dev = this.deviceOf(rid);
    const att = dev.defaultAttachment;
    if (att === null) fail('ENOENT', `device ${dev.bdf} has no default domain`);
    this.teardown(dev, RID_PASID, att);
    dev.defaultAttachment = null;
    att.domain.attachments.delete(attachmentKey(rid, null));
  }

  /** Attach RID+PASID to a domain: paging → PGTT 2, identity → PGTT 4, SVA → PGTT 1. */
  attachPasid(rid: number, pasid: number, ref: DomainRef): void {
    const dev = this.deviceOf(rid);
    this.checkPasidRoute(dev, pasid);
    const d = this.domainOf(ref);
    const pgtt = d.type === 'identity' ? PGTT_PT : d.type === 'sva' ? PGTT_FL : PGTT_SL;
    dev.pasidTable.write(pasid, this.entryFor(d, pgtt));
    const att: Attachment = { rid, pasid, domain: d, pgtt };
    dev.pasidAttachments.set(pasid, att);
    d.attachments.set(attachmentKey(rid, pasid), att);
  }

  /** Detach RID+PASID (not for nested bindings: use unbindPgtablePasid). */
  detachPasid(rid: number, pasid: number): void {
    const dev = this.deviceOf(rid);
    const att = dev.pasidAttachments.get(pasid);
    if (att === undefined) fail('ENOENT', `device ${dev.bdf} has nothing attached at PASID ${pasid}`);
    if (att.pgtt === PGTT_NESTED) fail('EINVAL', `PASID ${pasid} of ${dev.bdf} is a nested binding; unbind it with unbindPgtablePasid`);
    this.removePasidRoute(dev, pasid, att);
  }

  /**
   * Bind a user-managed first-level table (GVA → GPA, root at `opts.flptr`, a GPA) to RID+PASID,
   * nested on the paging domain `parent` (PGTT = 3, the parent's DID and second level). The PASID
   * is attached to the parent implicitly (seed 001).
   */
  bindPgtablePasid(rid: number, pasid: number, parentRef: DomainRef, opts: BindPgtableOptions): void {
    const dev = this.deviceOf(rid);
    this.checkPasidRoute(dev, pasid);
    const parent = this.pagingDomain(parentRef, 'bindPgtablePasid');
    const fl = this.firstLevelConfig(opts, parent.table!.width, 'first-level table pointer (GPA)');
    dev.pasidTable.write(pasid, this.entryFor(parent, PGTT_NESTED, fl));
    const att: Attachment = { rid, pasid, domain: parent, pgtt: PGTT_NESTED, nested: fl };
    dev.pasidAttachments.set(pasid, att);
    parent.attachments.set(attachmentKey(rid, pasid), att);
    this.trace?.emit({ kind: 'bind', side: 'host', name: 'bind_pgtable_pasid', args: { rid, pasid, did: parent.did, flptr: hex(fl.flptr) } });
  }

  /** Undo bindPgtablePasid. */
  unbindPgtablePasid(rid: number, pasid: number): void {
    const dev = this.deviceOf(rid);
    const att = dev.pasidAttachments.get(pasid);
    if (att === undefined) fail('ENOENT', `device ${dev.bdf} has nothing bound at PASID ${pasid}`);
    if (att.pgtt !== PGTT_NESTED) fail('EINVAL', `PASID ${pasid} of ${dev.bdf} is attached, not bound; use detachPasid`);
    this.removePasidRoute(dev, pasid, att);
    this.trace?.emit({ kind: 'unbind', side: 'host', name: 'unbind_pgtable_pasid', args: { rid, pasid, did: att.domain.did } });
  }

  // ---- invalidation (reference §3) ---------------------------------------------------------------

  /** IOTLB global invalidation. */
  invalidateIotlbGlobal(): void {
    this.inv.iotlbGlobal++;
    this.iotlb.invalidateAll();
  }

  /** IOTLB domain-selective invalidation. */
  invalidateIotlbDomain(did: number): void {
    checkDid(did);
    this.inv.iotlbDomain++;
    this.iotlb.invalidateDomain(did);
  }

  /**
   * IOTLB page-selective-within-domain: 2^am pages at `addr` (low bits below the mask ignored).
   * `ih` (leaf-only hint) has no effect here: the second level has no paging-structure cache in
   * this model, and first-level / nested entries of the DID are dropped whatever the address.
   */
  invalidateIotlbPages(did: number, addr: Addr, am: number, ih = false): void {
    checkDid(did);
    const [v0, v1] = pageRange(addr, am);
    void ih;
    this.inv.iotlbPage++;
    this.iotlb.invalidatePages(did, v0, v1);
  }

  /** PASID-based IOTLB, all-within-PASID (non-global mappings; global pages are not modelled). */
  invalidatePasidIotlb(did: number, pasid: number): void {
    checkDid(did);
    checkPasid(pasid);
    this.inv.piotlbPasid++;
    this.iotlb.invalidatePasid(did, pasid);
  }

  /** PASID-based IOTLB, page-selective-within-PASID: 2^am pages at `addr`; `ih` keeps the paging-structure caches. */
  invalidatePasidIotlbPages(did: number, pasid: number, addr: Addr, am: number, ih = false): void {
    checkDid(did);
    checkPasid(pasid);
    const [v0, v1] = pageRange(addr, am);
    this.inv.piotlbPage++;
    this.iotlb.invalidatePasidPages(did, pasid, v0, v1, ih);
  }

  /** PASID-cache global invalidation. */
  invalidatePasidCacheGlobal(): void {
    this.inv.pasidCacheGlobal++;
    for (const c of this.engine.allContexts()) c.dropPasidEntry();
  }

  /** PASID-cache domain-selective invalidation: cached entries whose DID is `did`. */
  invalidatePasidCacheDomain(did: number): void {
    checkDid(did);
    this.inv.pasidCacheDomain++;
    for (const c of this.engine.allContexts()) if (c.pe !== null && c.pe.did === did) c.dropPasidEntry();
  }

  /** PASID-cache PASID-selective invalidation: the cached entry of (did, pasid) on every device. */
  invalidatePasidCache(did: number, pasid: number): void {
    checkDid(did);
    checkPasid(pasid);
    this.inv.pasidCachePasid++;
    for (const dev of this.devices.values()) {
      for (const c of dev.contexts.values()) if (c.peIndex === pasid && c.pe !== null && c.pe.did === did) c.dropPasidEntry();
    }
  }

  /**
   * Device-TLB invalidation of device `rid`: requests without PASID (no `pasid`), one PASID, or
   * all PASIDs and non-PASID entries (`allPasids`); an address range `addr` + `size` (a power of
   * two ≥ 4096, the range aligned to it) or, without `addr`, everything.
   */
  invalidateDevTlb(rid: number, opts: { pasid?: number; allPasids?: boolean; addr?: Addr; size?: number } = {}): void {
    const dev = this.deviceOf(rid);
    if (opts.pasid !== undefined) checkPasid(opts.pasid);
    let v0: number | undefined;
    let v1: number | undefined;
    if (opts.addr !== undefined) {
      const size = opts.size ?? 4096;
      if (!Number.isSafeInteger(size) || size < 4096 || (size & (size - 1)) !== 0 || size > 2 ** 52) {
        fail('EINVAL', `device-TLB invalidation size ${size} is not a power of two ≥ 4096`);
      }
      [v0, v1] = pageRange(opts.addr, Math.log2(size / 4096));
    }
    this.inv.devTlb++;
    const tlb = dev.devTlb;
    if (tlb === null) return;
    if (opts.allPasids === true) {
      if (v0 === undefined) tlb.invalidateAll();
      else for (const c of dev.contexts.values()) tlb.invalidate(c.pasid, v0, v1);
      return;
    }
    tlb.invalidate(opts.pasid ?? NO_PASID, v0, v1);
  }

  /** One invalidation request in the generic form (what CACHE_INVALIDATE forwards). */
  invalidate(inv: CacheInvalidation): void {
    switch (inv.cache) {
      case 'iotlb':
        if (inv.granularity === 'global') return this.invalidateIotlbGlobal();
        if (inv.granularity === 'domain') return this.invalidateIotlbDomain(inv.did);
        if (inv.granularity === 'page') return this.invalidateIotlbPages(inv.did, inv.addr, inv.am, inv.ih);
        break;
      case 'piotlb':
        if (inv.granularity === 'pasid') return this.invalidatePasidIotlb(inv.did, inv.pasid);
        if (inv.granularity === 'page') return this.invalidatePasidIotlbPages(inv.did, inv.pasid, inv.addr, inv.am, inv.ih);
        break;
      case 'pasid':
        if (inv.granularity === 'global') return this.invalidatePasidCacheGlobal();
        if (inv.granularity === 'domain') return this.invalidatePasidCacheDomain(inv.did);
        if (inv.granularity === 'pasid') return this.invalidatePasidCache(inv.did, inv.pasid);
        break;
      case 'devtlb':
        return this.invalidateDevTlb(inv.rid, inv);
    }
    fail('EINVAL', `invalid cache invalidation ${JSON.stringify(inv, (_k, v: unknown) => (typeof v === 'bigint' ? hex(v) : v))}`);
  }

  // ---- translation -----------------------------------------------------------------------------

  /**
   * Translate one request: the HPA (a number), or XLATE_FAULT with details in `lastFault()`.
   * @throws EINVAL for a malformed request (not for translation faults).
   */
  translate(req: TranslationRequest): number {
    const [rid, pasid, flags] = requestFlags(req, req.write === true);
    const [vpn, off] = splitAddr(req.addr);
    return this.engine.translateVpn(rid, pasid, vpn, off, flags);
  }

  /** The hot-path form: addr < 2^53, pasid = NO_PASID (−1) for none, flags = ACCESS_* | REQ_NO_REPORT. */
  translateRaw(rid: number, pasid: number, addr: number, flags: number): number {
    return this.engine.translate(rid, pasid, addr, flags);
  }

  /** The last translation fault, as a record. */
  lastFault(): IommuFault {
    return this.engine.fault.toRecord();
  }

  // ---- DMA -------------------------------------------------------------------------------------

  /** Read `length` bytes through the IOMMU. On a fault, `data` holds the `done` bytes read before it. */
  dmaRead(req: DmaAccess, length: number): DmaReadResult {
    checkLength(length);
    const [rid, pasid, flags] = requestFlags(req, false);
    const [vpn, off] = splitAddr(req.addr, length);
    const data = new Uint8Array(length);
    const done = this.dma.read(rid, pasid, vpn, off, flags, data);
    const r = this.dmaResult(req.addr, done);
    return { ...r, data: done === length ? data : data.subarray(0, done) };
  }

  /** Write `data` through the IOMMU. On a fault, the `done` bytes before it were written. */
  dmaWrite(req: DmaAccess, data: Uint8Array): DmaResult {
    if (req.exec === true) fail('EINVAL', 'a write cannot be an execute request');
    const [rid, pasid, flags] = requestFlags(req, true);
    const [vpn, off] = splitAddr(req.addr, data.length);
    const done = this.dma.write(rid, pasid, vpn, off, flags, data);
    return this.dmaResult(req.addr, done);
  }

  /** Copy `length` bytes: read through `src`'s requester, write through `dst`'s. */
  dmaCopy(src: DmaAccess, dst: DmaAccess, length: number): DmaResult {
    checkLength(length);
    if (dst.exec === true) fail('EINVAL', 'a write cannot be an execute request');
    const [srid, spasid, sflags] = requestFlags(src, false);
    const [drid, dpasid, dflags] = requestFlags(dst, true);
    const [svpn, soff] = splitAddr(src.addr, length);
    const [dvpn, doff] = splitAddr(dst.addr, length);
    const done = this.dma.copy(srid, spasid, svpn, soff, sflags, drid, dpasid, dvpn, doff, dflags, length);
    const st = this.dma.stop;
    return this.dmaResult(st.side === 'src' ? src.addr : dst.addr, done);
  }

  private dmaResult(base: Addr, done: number): DmaResult {
    const st = this.dma.stop;
    if (st.kind === 'none') return { ok: true, done };
    if (st.kind === 'translation') return { ok: false, done, fault: this.engine.fault.toRecord() };
    const f = this.engine.fault;
    const addr = BigInt(base) + BigInt(done);
    const fault: IommuFault = {
      reason: DMA_UNBACKED_HPA,
      addr,
      rid: f.rid,
      write: st.side === 'dst',
      exec: false,
      priv: false,
      type: st.side === 'dst' ? 0 : 2,
      text: `host physical address 0x${st.hpa.toString(16)} is not backed by host memory`,
      hpa: BigInt(st.hpa),
    };
    return { ok: false, done, fault };
  }

  // ---- faults and page requests ------------------------------------------------------------------

  /** Register the device's fault handler (one per device; EBUSY when one is registered). */
  registerFaultHandler(rid: number, handler: FaultHandler): void {
    const dev = this.deviceOf(rid);
    if (typeof handler !== 'function') fail('EINVAL', 'fault handler must be a function');
    if (dev.faultHandler !== null) fail('EBUSY', `device ${dev.bdf} already has a fault handler`);
    dev.faultHandler = handler;
  }

  unregisterFaultHandler(rid: number): void {
    const dev = this.deviceOf(rid);
    if (dev.faultHandler === null) fail('ENOENT', `device ${dev.bdf} has no fault handler`);
    dev.faultHandler = null;
  }

  /**
   * A page request from a PRI-capable device (after a failed ATS translation). It is delivered to
   * the device's fault handler; the promise resolves with the response code given to
   * pageResponse(). Without a handler it completes at once with INVALID (Linux answers requests
   * nobody handles with an invalid-request response).
   */
  pageRequest(rid: number, opts: PageRequestOptions): Promise<PageResponseCodeValue> {
    const dev = this.deviceOf(rid);
    if (!dev.pri) fail('EOPNOTSUPP', `device ${dev.bdf} has no PRI capability`);
    if (opts.pasid !== undefined) this.checkPasidOf(dev, opts.pasid);
    if (opts.exec === true && opts.write === true) fail('EINVAL', 'a page request cannot ask for write and execute');
    const [vpn] = splitAddr(opts.addr);
    const pkey = (opts.pasid ?? -1) + 1;
    let prgi = opts.prgi;
    if (prgi === undefined) {
      prgi = 0;
      while (prgi < 512 && dev.pendingPageRequests.has(pkey * 512 + prgi)) prgi++;
      if (prgi === 512) fail('EBUSY', `device ${dev.bdf}: all 512 page request group indexes are outstanding`);
    } else if (!Number.isInteger(prgi) || prgi < 0 || prgi > 511) {
      fail('EINVAL', `page request group index ${prgi} is not in 0..511`);
    } else if (dev.pendingPageRequests.has(pkey * 512 + prgi)) {
      fail('EBUSY', `device ${dev.bdf}: page request group ${prgi} is already outstanding`);
    }
    this.pageRequests++;
    const request: PageRequest = {
      rid,
      addr: BigInt(vpn) * 4096n,
      prgi,
      lpig: opts.lpig ?? true,
      read: opts.write !== true,
      write: opts.write === true,
      exec: opts.exec === true,
      priv: opts.priv === true,
    };
    if (opts.pasid !== undefined) request.pasid = opts.pasid;
    this.trace?.emit({ kind: 'page-request', side: 'host', name: 'page request', args: { rid, pasid: opts.pasid ?? null, prgi, addr: hex(request.addr) } });
    if (dev.faultHandler === null) return Promise.resolve(PageResponseCode.INVALID);
    const key = pkey * 512 + prgi;
    const p = new Promise<PageResponseCodeValue>((resolve) => {
      dev.pendingPageRequests.set(key, { pasid: opts.pasid ?? null, prgi: prgi!, resolve });
    });
    this.deliver(dev, { kind: 'page-request', request });
    return p;
  }

  /** Complete an outstanding page request with a page group response code (0 success, 1 invalid, 0xf failure). */
  pageResponse(rid: number, pasid: number | null | undefined, prgi: number, code: number): void {
    const dev = this.deviceOf(rid);
    if (code !== PageResponseCode.SUCCESS && code !== PageResponseCode.INVALID && code !== PageResponseCode.FAILURE) {
      fail('EINVAL', `page response code 0x${code.toString(16)} is not 0 (success), 1 (invalid) or 0xf (failure)`);
    }
    const key = ((pasid ?? -1) + 1) * 512 + prgi;
    const pending = dev.pendingPageRequests.get(key);
    if (pending === undefined) fail('ENOENT', `device ${dev.bdf} has no outstanding page request ${prgi}${pasid == null ? '' : ` for PASID ${pasid}`}`);
    dev.pendingPageRequests.delete(key);
    this.pageResponses++;
    this.trace?.emit({ kind: 'page-response', side: 'host', name: 'page response', args: { rid, pasid: pasid ?? null, prgi, code } });
    pending.resolve(code as PageResponseCodeValue);
  }

  // ---- state -----------------------------------------------------------------------------------

  stats(): IommuStats {
    return {
      ...this.engine.counters(),
      iotlbEntries: this.iotlb.entries,
      invalidations: { ...this.inv },
      domains: this.domains.size,
      devices: this.devices.size,
      pageTablePages: this.pool.pagesInUse,
      pageRequests: this.pageRequests,
      pageResponses: this.pageResponses,
    };
  }

  /** Domains with their routes and nesting parents, and devices with their routes (seed 001 view). */
  inspect(): IommuTopology {
    return buildTopology([...this.domains.values()], [...this.devices.values()]);
  }

  /** Release every page-table page (the IOMMU is unusable afterwards). */
  dispose(): void {
    this.pool.dispose();
    this.devices.clear();
    this.domains.clear();
    this.engine.resetContextCache();
  }

  // ---- internals -------------------------------------------------------------------------------

  private onFault(dev: IommuDevice | undefined, f: FaultState): void {
    const rec = f.toRecord();
    this.recentFaults.push(rec);
    if (this.recentFaults.length > 64) this.recentFaults.shift();
    log.debug({ rid: rec.rid, pasid: rec.pasid, reason: rec.reason, addr: hex(rec.addr) }, rec.text);
    this.trace?.emit({
      kind: 'fault',
      side: 'host',
      name: `fault 0x${rec.reason.toString(16)}`,
      args: { rid: rec.rid, pasid: rec.pasid ?? null, reason: rec.reason, addr: hex(rec.addr), write: rec.write },
    });
    if (dev !== undefined) this.deliver(dev, { kind: 'fault', fault: rec });
  }

  private deliver(dev: IommuDevice, ev: Parameters<FaultHandler>[0]): void {
    const h = dev.faultHandler;
    if (h === null) return;
    try {
      h(ev);
    } catch (e) {
      log.error({ err: e, rid: dev.rid }, 'fault handler threw');
    }
  }

  private findFreeDid(): number {
    for (let i = 0; i <= MAX_DID - FIRST_DID; i++) {
      const did = FIRST_DID + ((this.nextDid - FIRST_DID + i) % (MAX_DID - FIRST_DID + 1));
      if (!this.domains.has(did)) return did;
    }
    fail('ENOSPC', 'all 16-bit domain IDs are in use');
  }

  private deviceOf(rid: number): IommuDevice {
    checkRid(rid);
    const dev = this.devices.get(rid);
    if (dev === undefined) fail('ENODEV', `no device ${ridName(rid)}`);
    return dev;
  }

  private domainOf(ref: DomainRef): IommuDomain {
    const did = typeof ref === 'number' ? ref : ref.did;
    const d = this.domains.get(did);
    if (d === undefined || (typeof ref !== 'number' && d !== ref)) fail('ENOENT', `domain ${did} does not exist (freed?)`);
    return d;
  }

  private pagingDomain(ref: DomainRef, what: string): IommuDomain {
    const d = this.domainOf(ref);
    if (d.type !== 'paging') fail('EINVAL', `${what}: domain ${d.did} is ${d.type}, not a paging domain`);
    return d;
  }

  private checkPasidOf(dev: IommuDevice, pasid: number): void {
    if (dev.pasidBits === 0) fail('EOPNOTSUPP', `device ${dev.bdf} has no PASID capability`);
    if (!Number.isInteger(pasid) || pasid < 0) fail('EINVAL', `PASID ${pasid} is not a non-negative integer`);
    if (pasid >= 2 ** dev.pasidBits) fail('ERANGE', `PASID ${pasid} is beyond device ${dev.bdf}'s ${dev.pasidBits}-bit PASID width`);
  }

  private checkPasidRoute(dev: IommuDevice, pasid: number): void {
    this.checkPasidOf(dev, pasid);
    if (pasid === RID_PASID) fail('EINVAL', `PASID ${RID_PASID} is RID_PASID (requests without PASID); use attachDevice`);
    const cur = dev.pasidAttachments.get(pasid);
    if (cur !== undefined) fail('EBUSY', `PASID ${pasid} of ${dev.bdf} is already attached to domain ${cur.domain.did}`);
  }

  private firstLevelConfig(o: FirstLevelOptions & { flptr: Addr }, width: number, what: string): FirstLevelConfig {
    const flptr = typeof o.flptr === 'bigint' ? o.flptr : Number.isSafeInteger(o.flptr) ? BigInt(o.flptr) : -1n;
    if (flptr < 0n || flptr % 4096n !== 0n) fail('EINVAL', `${what} ${String(o.flptr)} is not a 4 KiB-aligned address`);
    if (flptr >= 1n << BigInt(width)) fail('EINVAL', `${what} ${hex(flptr)} is beyond the ${width}-bit address width`);
    const levels = o.levels ?? 4;
    if (levels !== 4 && levels !== 5) fail('EINVAL', `first-level paging is 4- or 5-level, not ${String(levels)}`);
    const pat = o.pat ?? 0;
    if (!Number.isInteger(pat) || pat < 0 || pat > 0xffffffff) fail('EINVAL', `PAT ${pat} is not a 32-bit value`);
    const emt = o.emt ?? 0;
    if (!Number.isInteger(emt) || emt < 0 || emt > 7) fail('EINVAL', `EMT ${emt} is not a 3-bit value`);
    const sre = o.sre === true;
    return {
      flptr,
      levels,
      sre,
      wpe: sre && o.wpe === true,
      eafe: o.eafe === true,
      nxe: o.nxe === true,
      ere: o.ere === true,
      smep: o.smep === true,
      pcd: o.pcd === true,
      pwt: o.pwt === true,
      pat,
      emt,
      cd: o.cd === true,
      emte: o.emte === true,
    };
  }

  /** The PASID entry a route programs (reference §2, Linux pasid.c per PGTT). */
  private entryFor(d: IommuDomain, pgtt: number, nested?: FirstLevelConfig): PasidEntryValues {
    const base: PasidEntryValues = { P: 1, PGTT: pgtt, DID: d.did, PWSNP: 1 };
    if (pgtt === PGTT_PT) return { ...base, AW: 2 };
    if (pgtt === PGTT_FL) return { ...base, AW: 2, ...flFields(d.firstLevel!) };
    const t = d.table!;
    const sl: PasidEntryValues = { ...base, AW: t.levels - 2, SLPTPTR: BigInt(t.root) >> 12n, SLADE: d.slade, SLEE: d.slee };
    return nested === undefined ? sl : { ...sl, ...flFields(nested) };
  }

  private removePasidRoute(dev: IommuDevice, pasid: number, att: Attachment): void {
    this.teardown(dev, pasid, att);
    dev.pasidAttachments.delete(pasid);
    att.domain.attachments.delete(attachmentKey(dev.rid, pasid));
  }

  /** Linux intel_pasid_tear_down_entry: clear, PASID-cache PSI, PIOTLB or IOTLB DSI, devTLB. */
  private teardown(dev: IommuDevice, pasid: number, att: Attachment): void {
    const did = att.domain.did;
    dev.pasidTable.clear(pasid);
    this.invalidatePasidCache(did, pasid);
    if (att.pgtt === PGTT_PT || att.pgtt === PGTT_FL) this.invalidatePasidIotlb(did, pasid);
    else this.invalidateIotlbDomain(did);
    if (dev.atsEnabled) {
      if (att.pasid === null) this.invalidateDevTlb(dev.rid);
      else this.invalidateDevTlb(dev.rid, { pasid });
    }
  }

  /** What the kernel's iotlb_sync does after unmapping [iova, iova+size) of a paging domain. */
  private flushDomainRange(d: IommuDomain, iova: number, size: number): void {
    const pages = size / 4096;
    let am = Math.ceil(Math.log2(pages));
    const v0 = iova / 4096;
    // Grow the mask until the aligned block covers the whole range.
    while (am <= VTD_MAMV && Math.floor(v0 / 2 ** am) !== Math.floor((v0 + pages - 1) / 2 ** am)) am++;
    if (am > VTD_MAMV) this.invalidateIotlbDomain(d.did);
    else this.invalidateIotlbPages(d.did, Math.floor(v0 / 2 ** am) * 2 ** am * 4096, am);
    for (const att of d.attachments.values()) {
      const dev = this.devices.get(att.rid);
      if (dev === undefined || !dev.atsEnabled) continue;
      const pasidOpt = att.pasid === null ? {} : { pasid: att.pasid };
      if (att.pgtt === PGTT_NESTED) this.invalidateDevTlb(att.rid, pasidOpt);
      else if (am > VTD_MAMV) this.invalidateDevTlb(att.rid, pasidOpt);
      else this.invalidateDevTlb(att.rid, { ...pasidOpt, addr: Math.floor(v0 / 2 ** am) * 2 ** am * 4096, size: 2 ** am * 4096 });
    }
  }
}

function flFields(fl: FirstLevelConfig): PasidEntryValues {
  return {
    FLPTR: fl.flptr >> 12n,
    FLPM: fl.levels === 5 ? 1 : 0,
    SRE: fl.sre,
    WPE: fl.wpe,
    EAFE: fl.eafe,
    NXE: fl.nxe,
    ERE: fl.ere,
    SMEP: fl.smep,
    PCD: fl.pcd,
    PWT: fl.pwt,
    PAT: fl.pat,
    EMT: fl.emt,
    CD: fl.cd,
    EMTE: fl.emte,
  };
}

function hex(v: bigint | number): string {
  return '0x' + v.toString(16);
}

function ridName(rid: number): string {
  return `RID 0x${rid.toString(16).padStart(4, '0')}`;
}

function checkRid(rid: number): void {
  if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) fail('EINVAL', `RID ${rid} is not a 16-bit requester ID`);
}

function checkDid(did: number): void {
  if (!Number.isInteger(did) || did < 0 || did > MAX_DID) fail('EINVAL', `DID ${did} is not a 16-bit domain ID`);
}

function checkPasid(pasid: number): void {
  if (!Number.isInteger(pasid) || pasid < 0 || pasid >= 2 ** PASID_BITS) fail('EINVAL', `PASID ${pasid} is not a ${PASID_BITS}-bit value`);
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0) fail('EINVAL', `DMA length ${length} is not a non-negative integer`);
}

function toNum(a: Addr, what: string): number {
  if (typeof a === 'bigint') {
    if (a < 0n || a > BigInt(Number.MAX_SAFE_INTEGER)) fail('ERANGE', `${what} 0x${a.toString(16)} is out of range`);
    return Number(a);
  }
  if (!Number.isSafeInteger(a) || a < 0) fail('EINVAL', `${what} ${a} is not a valid address`);
  return a;
}

/** [page number, offset] of a 64-bit address; with `length`, the range must not wrap past 2^64. */
function splitAddr(a: Addr, length = 0): [number, number] {
  let vpn: number;
  let off: number;
  if (typeof a === 'bigint') {
    if (a < 0n || a >= 1n << 64n) fail('EINVAL', `address 0x${a.toString(16)} is not a 64-bit value`);
    vpn = Number(a >> 12n);
    off = Number(a & 0xfffn);
  } else {
    if (!Number.isSafeInteger(a) || a < 0) fail('EINVAL', `address ${a} is not a valid address`);
    vpn = Math.floor(a / 4096);
    off = a - vpn * 4096;
  }
  if (length > 0 && vpn * 4096 + off + length > 2 ** 64) fail('EINVAL', `a ${length}-byte access at ${String(a)} wraps past 2^64`);
  return [vpn, off];
}

/** Address range of an invalidation: 2^am pages at addr, low bits ignored → [v0, v1] page numbers. */
function pageRange(addr: Addr, am: number): [number, number] {
  if (!Number.isInteger(am) || am < 0 || am > VTD_MAMV) fail('EINVAL', `address mask ${am} is not in 0..${VTD_MAMV}`);
  const [vpn] = splitAddr(addr);
  const n = 2 ** am;
  const v0 = Math.floor(vpn / n) * n;
  return [v0, v0 + n - 1];
}

/** [rid, pasid, flags] of a request, validated. */
function requestFlags(req: { rid: number; pasid?: number; priv?: boolean; exec?: boolean; noReport?: boolean }, write: boolean): [number, number, number] {
  checkRid(req.rid);
  let pasid = NO_PASID;
  if (req.pasid !== undefined) {
    checkPasid(req.pasid);
    pasid = req.pasid;
  }
  const exec = req.exec === true;
  const priv = req.priv === true;
  if (exec && write) fail('EINVAL', 'a request cannot both write and execute');
  if (pasid === NO_PASID && (exec || priv)) fail('EINVAL', 'execute and privileged requests need a PASID');
  const flags = (write ? ACCESS_WRITE : 0) | (exec ? ACCESS_EXEC : 0) | (priv ? ACCESS_PRIV : 0) | (req.noReport === true ? REQ_NO_REPORT : 0);
  return [req.rid, pasid, flags];
}

export { XLATE_FAULT };
