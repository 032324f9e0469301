/**
 * HostIommu's domains, devices and routes: second-level domains and their map/unmap, the static
 * identity domain, SVA domains; devices by RID with their PASID tables; RID and RID+PASID attach
 * and nested first-level binds.
 *
 * Attach/detach program the device's PASID entries as Linux intel-iommu does (drivers/iommu/
 * intel/pasid.c: intel_pasid_setup_second_level, _pass_through, _first_level, _nested) and tear
 * them down with Linux's flush sequence (intel_pasid_tear_down_entry: PASID-cache PASID-selective,
 * then PASID-based IOTLB or IOTLB domain-selective, then device-TLB), except that a nested route's
 * IOTLB flush is PASID-selective (see `teardown`). `unmap` flushes like the
 * kernel's iotlb_sync (IOTLB page-selective for the domain + device-TLBs), unless
 * `{ flush: false }`.
 */
import { fail } from '../../src/errors.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { PASID_BITS } from '../../src/vtd/pasid-entry.js';
import { NO_PASID, PGTT_FL, PGTT_NESTED, PGTT_PT, PGTT_SL, RID_PASID } from './constants.js';
import { checkRid, fitWidth, hex, ridName } from './checks.js';
import { IommuDevice, PageResponseCode } from './device.js';
import { IommuDomain, type Attachment, type FirstLevelConfig } from './domain.js';
import { IDENTITY_DID, type DomainRef } from './iommu-base.js';
import { IommuInvalidation } from './invalidation.js';
import { PasidTable, type PasidEntryValues } from './pasid-table.js';
import { SecondLevelTable, type SlProt } from './sl-table.js';

const FIRST_DID = IDENTITY_DID + 1;
const MAX_DID = 0xffff;

export type AllocDomainOptions =
  | { type?: 'paging'; name?: string; levels?: 3 | 4; dirtyTracking?: boolean; executeControl?: boolean }
  | ({ type: 'sva'; name?: string; flptr: bigint } & FirstLevelOptions);

/**
 * First-level options of bindPgtablePasid and SVA domains (the VT-d part of the bind data of
 * Linux's iommu_gpasid_bind_data, later iommufd's iommu_hwpt_vtd_s1).
 */
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
  flptr: bigint;
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

export abstract class IommuAttach extends IommuInvalidation {
  private nextDid = FIRST_DID;

  // ---- domains ---------------------------------------------------------------------------------

  /** A new kernel-managed second-level domain ('paging', default) or an SVA first-level domain. */
  allocDomain(opts: AllocDomainOptions = {}): IommuDomain {
    const did = this.findFreeDid();
    let d: IommuDomain;
    if (opts.type === 'sva') {
      const fl = firstLevelConfig(opts, this.haw, 'SVA domain');
      d = new IommuDomain(did, 'sva', opts.name ?? `sva-${did}`, null, false, false, fl);
    } else {
      if (opts.type !== undefined && opts.type !== 'paging') fail('EINVAL', `unknown domain type '${String(opts.type)}'`);
      const levels = opts.levels ?? 4;
      if (levels !== 3 && levels !== 4) fail('EINVAL', `second-level tables are 3- or 4-level, not ${String(levels)}`);
      const table = new SecondLevelTable(this.pool, this.memory, levels, this.haw);
      d = new IommuDomain(did, 'paging', opts.name ?? `domain-${did}`, table, opts.dirtyTracking === true, opts.executeControl === true, null);
    }
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

  /**
   * Map [iova, iova+size) → [hpa, hpa+size) in a paging domain (largest pages that fit).
   * ERANGE: the IOVA range beyond the table's input width, the HPA range beyond the host address width.
   */
  map(ref: DomainRef, iova: bigint, hpa: bigint, size: bigint, prot: SlProt): void {
    const t = this.pagingDomain(ref, 'map').table!;
    t.map(fitWidth(iova, t.width, 'map: IOVA'), fitWidth(hpa, this.haw, 'map: HPA'), fitWidth(size, t.width, 'map: size'), prot);
  }

  /**
   * Unmap whatever is mapped in [iova, iova+size) of a paging domain; returns the bytes unmapped.
   * Flushes the IOTLB (page-selective, DID) and the device-TLBs of the domain's routes unless
   * `flush` is false (then the caller must invalidate, or stale translations stay cached).
   */
  unmap(ref: DomainRef, iova: bigint, size: bigint, opts: { flush?: boolean } = {}): bigint {
    const d = this.pagingDomain(ref, 'unmap');
    const t = d.table!;
    const start = fitWidth(iova, t.width, 'unmap: IOVA');
    const length = fitWidth(size, t.width, 'unmap: size');
    const bytes = t.unmap(start, length);
    if (bytes > 0 && opts.flush !== false) this.flushDomainRange(d, start, length);
    return BigInt(bytes);
  }

  /**
   * The flush `unmap` does, for [iova, iova+size) of a paging domain unmapped piecewise with
   * `{ flush: false }` in the same turn (no translation can run in between): one IOTLB
   * invalidation (and device-TLB flush) over the whole range instead of one per piece.
   */
  flushUnmapped(ref: DomainRef, iova: bigint, size: bigint): void {
    const d = this.pagingDomain(ref, 'flushUnmapped');
    const t = d.table!;
    this.flushDomainRange(d, fitWidth(iova, t.width, 'flushUnmapped: IOVA'), fitWidth(size, t.width, 'flushUnmapped: size'));
  }

  /** The HPA `iova` maps to in a paging domain, or undefined. */
  iovaToPhys(ref: DomainRef, iova: bigint): bigint | undefined {
    const t = this.pagingDomain(ref, 'iovaToPhys').table!;
    if (iova < 0n || iova >= 1n << BigInt(t.width)) return undefined;
    const r = t.lookup(Number(iova));
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
    this.engine.forgetDevice(dev);
    this.devices.delete(rid);
    this.engine.resetContextCache();
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

  // ---- attach ----------------------------------------------------------------------------------

  /** Attach the RID (requests without PASID) to a paging or identity domain. */
  attachDevice(rid: number, ref: DomainRef): void {
    const dev = this.deviceOf(rid);
    const d = this.domainOf(ref);
    if (d.type === 'sva') fail('EINVAL', `SVA domain ${d.did} is attached per PASID, not to a RID`);
    if (dev.defaultAttachment !== null) fail('EBUSY', `device ${dev.bdf} is already attached to domain ${dev.defaultAttachment.domain.did}`);
    const pgtt = d.type === 'identity' ? PGTT_PT : PGTT_SL;
    dev.pasidTable.write(RID_PASID, entryFor(d, pgtt));
    const att: Attachment = { rid, pasid: null, domain: d, pgtt };
    dev.defaultAttachment = att;
    d.attachments.add(att);
  }

  /** Detach the RID's default domain (tearing down PASID entry RID_PASID with its flushes). */
  detachDevice(rid: number): void {
    const dev = this.deviceOf(rid);
    const att = dev.defaultAttachment;
    if (att === null) fail('ENOENT', `device ${dev.bdf} has no default domain`);
    this.teardown(dev, RID_PASID, att);
    dev.defaultAttachment = null;
    att.domain.attachments.delete(att);
    this.engine.forgetContext(dev, NO_PASID);
  }

  /** Attach RID+PASID to a domain: paging → PGTT 2, identity → PGTT 4, SVA → PGTT 1. */
  attachPasid(rid: number, pasid: number, ref: DomainRef): void {
    const dev = this.deviceOf(rid);
    this.checkPasidRoute(dev, pasid);
    const d = this.domainOf(ref);
    const pgtt = d.type === 'identity' ? PGTT_PT : d.type === 'sva' ? PGTT_FL : PGTT_SL;
    dev.pasidTable.write(pasid, entryFor(d, pgtt));
    const att: Attachment = { rid, pasid, domain: d, pgtt };
    dev.pasidAttachments.set(pasid, att);
    d.attachments.add(att);
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
   * is attached to the parent implicitly (Linux intel_pasid_setup_nested).
   */
  bindPgtablePasid(rid: number, pasid: number, parentRef: DomainRef, opts: BindPgtableOptions): void {
    const dev = this.deviceOf(rid);
    this.checkPasidRoute(dev, pasid);
    const parent = this.pagingDomain(parentRef, 'bindPgtablePasid');
    const fl = firstLevelConfig(opts, parent.table!.width, 'first-level table pointer (GPA)');
    dev.pasidTable.write(pasid, entryFor(parent, PGTT_NESTED, fl));
    const att: Attachment = { rid, pasid, domain: parent, pgtt: PGTT_NESTED, nested: fl };
    dev.pasidAttachments.set(pasid, att);
    parent.attachments.add(att);
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

  // ---- internals -------------------------------------------------------------------------------

  private findFreeDid(): number {
    for (let i = 0; i <= MAX_DID - FIRST_DID; i++) {
      const did = FIRST_DID + ((this.nextDid - FIRST_DID + i) % (MAX_DID - FIRST_DID + 1));
      if (!this.domains.has(did)) return did;
    }
    fail('ENOSPC', 'all 16-bit domain IDs are in use');
  }

  private removePasidRoute(dev: IommuDevice, pasid: number, att: Attachment): void {
    this.teardown(dev, pasid, att);
    dev.pasidAttachments.delete(pasid);
    att.domain.attachments.delete(att);
    this.engine.forgetContext(dev, pasid);
  }

  /**
   * Route teardown, after Linux intel_pasid_tear_down_entry (drivers/iommu/intel/pasid.c): clear
   * the PASID entry, PASID-cache PASID-selective, then the IOTLB, then the device-TLB.
   *
   * The IOTLB step differs from Linux for nested routes. Linux flushes PGTT 1 / 4 routes with a
   * PASID-based IOTLB flush and every other route (second-level only, nested) domain-selectively.
   * Here a nested route (PGTT 3) gets the PASID-based all-within-PASID flush: its IOTLB and
   * paging-structure entries are tagged (DID, PASID) and that flush removes exactly them (VT-d
   * spec §6.5.2.4, PASID-based-IOTLB invalidate, covers first-level and nested translations), so
   * unbinding one guest PASID no longer drops every other PASID's translations of the VM.
   * Second-level-only routes (PGTT 2) keep Linux's domain-selective flush: the PASID-based IOTLB
   * invalidation is not architected to remove second-level-only translations (VT-d spec §6.5.2
   * "Guidance to Software for Invalidations" uses the IOTLB invalidate descriptor for them), and
   * their entries are shared second-level state of the domain anyway.
   */
  private teardown(dev: IommuDevice, pasid: number, att: Attachment): void {
    const did = att.domain.did;
    dev.pasidTable.clear(pasid);
    this.invalidatePasidCache(did, pasid);
    if (att.pgtt === PGTT_PT || att.pgtt === PGTT_FL || att.pgtt === PGTT_NESTED) this.invalidatePasidIotlb(did, pasid);
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
    const whole = am > VTD_MAMV;
    const block = whole ? 0n : BigInt(Math.floor(v0 / 2 ** am) * 2 ** am) * PAGE_SIZE;
    if (whole) this.invalidateIotlbDomain(d.did);
    else this.invalidateIotlbPages(d.did, block, am);
    for (const att of d.attachments.values()) {
      const dev = this.devices.get(att.rid);
      if (dev === undefined || !dev.atsEnabled) continue;
      const pasidOpt = att.pasid === null ? {} : { pasid: att.pasid };
      if (att.pgtt === PGTT_NESTED || whole) this.invalidateDevTlb(att.rid, pasidOpt);
      else this.invalidateDevTlb(att.rid, { ...pasidOpt, addr: block, size: BigInt(2 ** am) * PAGE_SIZE });
    }
  }
}

/** The checked first-level configuration of `o`; the table pointer must fit `width` bits. */
function firstLevelConfig(o: FirstLevelOptions & { flptr: bigint }, width: number, what: string): FirstLevelConfig {
  const flptr = o.flptr;
  if (flptr < 0n || flptr % PAGE_SIZE !== 0n) fail('EINVAL', `${what} ${hex(flptr)} is not a 4 KiB-aligned address`);
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

/** The PASID entry a route programs (VT-d spec §9.6; Linux pasid.c, one setup function per PGTT). */
function entryFor(d: IommuDomain, pgtt: number, nested?: FirstLevelConfig): PasidEntryValues {
  // One object per entry, filled in place (no spread copies: a bind allocates little).
  if (pgtt === PGTT_PT) return { P: 1, PGTT: pgtt, DID: d.did, PWSNP: 1, AW: 2 };
  if (pgtt === PGTT_FL) return withFlFields({ P: 1, PGTT: pgtt, DID: d.did, PWSNP: 1, AW: 2 }, d.firstLevel!);
  const t = d.table!;
  const sl: PasidEntryValues = { P: 1, PGTT: pgtt, DID: d.did, PWSNP: 1, AW: t.levels - 2, SLPTPTR: BigInt(t.root) >> 12n, SLADE: d.slade, SLEE: d.slee };
  return nested === undefined ? sl : withFlFields(sl, nested);
}

/** `e` with the first-level fields of `fl` set. */
function withFlFields(e: { -readonly [K in keyof PasidEntryValues]: PasidEntryValues[K] }, fl: FirstLevelConfig): PasidEntryValues {
  e.FLPTR = fl.flptr >> 12n;
  e.FLPM = fl.levels === 5 ? 1 : 0;
  e.SRE = fl.sre;
  e.WPE = fl.wpe;
  e.EAFE = fl.eafe;
  e.NXE = fl.nxe;
  e.ERE = fl.ere;
  e.SMEP = fl.smep;
  e.PCD = fl.pcd;
  e.PWT = fl.pwt;
  e.PAT = fl.pat;
  e.EMT = fl.emt;
  e.CD = fl.cd;
  e.EMTE = fl.emte;
  return e;
}
