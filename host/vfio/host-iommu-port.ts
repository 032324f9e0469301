/**
 * ContainerIommu over the emulated host IOMMU (host/iommu/host-iommu.ts). Address ranges of
 * cache invalidations are split into the aligned power-of-two blocks the hardware's address
 * mask can express (an invalidation of [addr, addr+size) covers at least that range).
 */
import type { DmaResult } from '../../src/api/types.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import type { HostIommu } from '../iommu/host-iommu.js';
import type { ContainerIommu, DeviceCaps, DmaAccess, NestedFirstLevel, SlProt, AttachPgtt, IommuStatsView } from './iommu-port.js';

/** Aligned power-of-two page blocks [addr, 2^am pages) covering [addr, addr+size). */
export function addressBlocks(addr: bigint, size: bigint): { addr: bigint; am: number }[] {
  const out: { addr: bigint; am: number }[] = [];
  let v = addr >> 12n;
  const end = (addr + size + 0xfffn) >> 12n;
  while (v < end) {
    let am = 0;
    while (am < VTD_MAMV && v % (1n << BigInt(am + 1)) === 0n && v + (1n << BigInt(am + 1)) <= end) am++;
    out.push({ addr: v << 12n, am });
    v += 1n << BigInt(am);
    if (out.length > 4096) {
      // A huge, oddly sized range: one block of the maximal mask per step is still exact but
      // many; the caller falls back to a wider invalidation instead.
      return [];
    }
  }
  return out;
}

export class HostIommuPort implements ContainerIommu {
  readonly pasidBits = 20;
  readonly fl5lp = true;
  readonly capReg: bigint;
  readonly ecapReg: bigint;
  readonly addrWidth: number;

  constructor(readonly iommu: HostIommu) {
    const { cap, ecap } = iommu.capabilities();
    this.capReg = cap;
    this.ecapReg = ecap;
    this.addrWidth = iommu.haw;
  }

  addDevice(rid: number, name: string, caps: DeviceCaps): void {
    // ATS starts disabled: the guest enables it (DEVICE_CONFIG ATS_ENABLE → setAtsEnabled).
    this.iommu.addDevice({ rid, name, pasidBits: caps.pasidBits, ats: caps.ats, atsEnabled: false, pri: caps.pri });
  }
  setAtsEnabled(rid: number, on: boolean): void {
    this.iommu.setAtsEnabled(rid, on);
  }
  removeDevice(rid: number): void {
    this.iommu.removeDevice(rid);
  }
  allocDomain(name: string): number {
    return this.iommu.allocDomain({ name }).did;
  }
  freeDomain(did: number): void {
    this.iommu.freeDomain(did);
  }
  map(did: number, iova: number, hpa: number, size: number, prot: SlProt): void {
    this.iommu.map(did, iova, hpa, size, prot);
  }
  unmap(did: number, iova: number, size: number): number {
    return this.iommu.unmap(did, iova, size);
  }
  attachRid(rid: number, did: number): void {
    this.iommu.attachDevice(rid, did);
  }
  detachRid(rid: number): void {
    this.iommu.detachDevice(rid);
  }
  attachPasid(rid: number, pasid: number, did: number, pgtt: AttachPgtt): void {
    // A guest's pass-through PASID (guest PGTT 4) means "untranslated = GPA": on the host that
    // is second level through the VM's GPA domain, never host pass-through (DESIGN §3.1).
    void pgtt;
    this.iommu.attachPasid(rid, pasid, did);
  }
  detachPasid(rid: number, pasid: number): void {
    this.iommu.detachPasid(rid, pasid);
  }
  bindNested(rid: number, pasid: number, parentDid: number, fl: NestedFirstLevel): void {
    this.iommu.bindPgtablePasid(rid, pasid, parentDid, {
      flptr: fl.flptr,
      levels: fl.levels,
      sre: fl.sre,
      wpe: fl.wpe,
      eafe: fl.eafe,
      pcd: fl.pcd,
      pwt: fl.pwt,
      emte: fl.emte,
      cd: fl.cd,
      pat: fl.pat,
      emt: fl.emt,
      // The guest's first-level table honours XD (x86 EFER.NXE is always on for 64-bit guests).
      nxe: true,
      ere: true,
    });
  }
  unbindNested(rid: number, pasid: number): void {
    this.iommu.unbindPgtablePasid(rid, pasid);
  }

  invalidateIotlb(did: number, pasid: number | null, range: { addr: bigint; size: bigint; leaf: boolean } | null): void {
    const io = this.iommu;
    if (range === null) {
      if (pasid === null) io.invalidateIotlbDomain(did);
      else io.invalidatePasidIotlb(did, pasid);
      return;
    }
    const blocks = addressBlocks(range.addr, range.size);
    if (blocks.length === 0) {
      if (pasid === null) io.invalidateIotlbDomain(did);
      else io.invalidatePasidIotlb(did, pasid);
      return;
    }
    for (const b of blocks) {
      if (pasid === null) io.invalidateIotlbPages(did, b.addr, b.am, range.leaf);
      else io.invalidatePasidIotlbPages(did, pasid, b.addr, b.am, range.leaf);
    }
  }

  invalidatePasidCache(rid: number, pasid: number | null): void {
    const dev = this.iommu.device(rid);
    if (pasid !== null) {
      const att = dev.pasidAttachments.get(pasid);
      if (att !== undefined) this.iommu.invalidatePasidCache(att.domain.did, pasid);
      return;
    }
    const dids = new Set<number>();
    for (const att of dev.pasidAttachments.values()) dids.add(att.domain.did);
    if (dev.defaultAttachment !== null) dids.add(dev.defaultAttachment.domain.did);
    for (const did of dids) this.iommu.invalidatePasidCacheDomain(did);
  }

  invalidateDevTlb(rid: number, pasid: number | null, range: { addr: bigint; size: bigint } | null): void {
    const io = this.iommu;
    const blocks = range === null ? [] : addressBlocks(range.addr, range.size);
    const base = pasid === null ? { allPasids: true } : { pasid };
    if (blocks.length === 0) {
      io.invalidateDevTlb(rid, base);
      return;
    }
    for (const b of blocks) io.invalidateDevTlb(rid, { ...base, addr: b.addr, size: 4096 * 2 ** b.am });
  }

  dmaRead(rid: number, a: DmaAccess, length: number): DmaResult {
    const r = this.iommu.dmaRead(this.access(rid, a), length);
    if (r.ok) return { ok: true, data: r.data };
    return { ok: false, fault: faultOf(r.fault) };
  }

  dmaWrite(rid: number, a: DmaAccess, data: Uint8Array): DmaResult {
    const r = this.iommu.dmaWrite(this.access(rid, a), data);
    if (r.ok) return { ok: true };
    return { ok: false, fault: faultOf(r.fault) };
  }

  stats(): IommuStatsView {
    const s = this.iommu.stats();
    return { iotlbHits: s.hits, iotlbMisses: s.misses, walks: s.walks, faults: s.faults };
  }

  private access(rid: number, a: DmaAccess) {
    return {
      rid,
      ...(a.pasid === null ? {} : { pasid: a.pasid }),
      addr: a.addr,
      priv: a.priv,
      exec: a.exec,
      noReport: a.noReport,
    };
  }
}

function faultOf(f: { reason: number; addr: bigint; pasid?: number }): { reason: number; addr: bigint; pasid?: number } {
  return f.pasid === undefined ? { reason: f.reason, addr: f.addr } : { reason: f.reason, addr: f.addr, pasid: f.pasid };
}
