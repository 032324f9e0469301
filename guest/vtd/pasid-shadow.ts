/**
 * The shadow of the guest's PASID entries: what the model last forwarded to the host for each
 * (device, PASID), and for each device's requests without PASID (the RID path through the
 * context entry's RID_PASID). docs/design.md §3.1: on a PASID-cache invalidation the model re-walks the
 * guest entries, diffs them against this shadow and forwards each change per guest PGTT:
 *
 * | guest entry                         | host (VFIO SVA uAPI; iommufd: guest/uapi/iommufd.ts)        |
 * |-------------------------------------|-----------------------------------------------------------|
 * | PGTT 1 (first level)                | BIND_GPASID nested over domain 0 (hpasid: see PASIDs below) |
 * | PGTT 4 (pass-through)               | ATTACH rid+pasid, host PGTT 4, domain 0 (the GPA domain)   |
 * | PGTT 2 (second level)               | DOMAIN_ALLOC + DMA_MAP of the guest SL leaves, ATTACH PGTT 2 |
 * | PGTT 3, reserved bits, bad FLPM/AW  | nothing bound; use faults with 0x5a / 0x5b (guest-visible)  |
 * | entry gone (P clear)                | UNBIND_GPASID / DETACH                                     |
 *
 * The host requests go through the VM's uAPI (guest/uapi/host-uapi.ts). On iommufd a route
 * that changes is replaced in place (DEVICE_REPLACE, as QEMU's intel-iommu does): the new one is
 * set up first and the old one's resources released after; a refused replace leaves the old
 * route, which is then torn down.
 *
 * The bind data follows QEMU's vSVA series (Yi Liu, hw/i386/intel_iommu.c `vtd_bind_guest_pasid`): format VT-d, gpgd = FLPTR,
 * addr_width = 48 + 9·FLPM, GPASID_VAL, vendor flags SRE/EAFE/PCD/PWT/EMTE/CD/WPE, PAT, EMT.
 *
 * PASIDs: with the virtual command interface the guest's PASIDs are host PASIDs (identity,
 * hpasid = gpasid). Without it (`vcmd: false`) they are guest-private: the shadow is given a
 * GuestPrivatePasids and every PASID binding or attachment uses the host PASID allocated for
 * the guest PASID (BIND_GPASID hpasid ≠ gpasid, GPASID_VAL; ATTACH / DETACH with the host
 * PASID), allocated at the first binding of the guest PASID and freed after its last; an entry
 * whose host PASID cannot be allocated is `refused` (ENOSPC).
 *
 * Contract: `apply` first tears down what the old shadow forwarded, then sets up the new one;
 * when the host refuses a setup the entry is shadowed as `refused` (nothing bound) and the
 * error is logged — the guest's view of the hardware never throws.
 */
import { isVsvaError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { hex64 } from '../../src/vtd/layout.js';
import { PGTT, type PasidEntryFields } from '../../src/vtd/pasid-entry.js';
import { formatBdf as ridToBdf } from '../../src/pci.js';
import { AttachPgtt } from '../../vhost/messages/device.js';
import { IOMMU_SVA_VTD_GPASID } from '../../vhost/messages/pasid.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { HostCalls } from '../viommu.js';
import type { HostUapi, PasidRef, PasidRoute } from '../uapi/host-uapi.js';
import { VfioSvaUapi } from '../uapi/vfio-sva.js';
import type { GuestPrivatePasids } from './guest-private-pasids.js';
import { SlDomainShadow } from './sl-shadow.js';
import type { PasidEntryRead } from './tables.js';

/** What the host was given for one shadowed entry. */
export type ShadowBinding =
  | {
      readonly kind: 'nested';
      /** Guest first-level table root (GPA). */
      readonly flptr: bigint;
      /** 48 or 57. */
      readonly addrWidth: number;
      /** vendor.vtd.flags of the bind data. */
      readonly vtdFlags: bigint;
      readonly pat: number;
      readonly emt: number;
    }
  | { readonly kind: 'pt' }
  | { readonly kind: 'sl'; readonly slptptr: bigint; readonly levels: number; readonly domain: number }
  /** Not bound: the guest entry is invalid; `reason` is the fault its use reports to the guest. */
  | { readonly kind: 'invalid'; readonly reason: number; readonly why: string }
  /** Not bound: the host refused the bind/attach. */
  | { readonly kind: 'refused'; readonly errno: string; readonly why: string };

export interface PasidShadowEntry {
  readonly rid: number;
  readonly bdf: string;
  /** The PASID, or null for the RID path (requests without PASID). */
  readonly pasid: number | null;
  /** For the RID path: the context entry's RID_PASID (or null when the path is not through one). */
  readonly ridPasid: number | null;
  /** Guest domain ID of the entry (PASID-cache and IOTLB invalidations select by it). */
  readonly did: number;
  /** FPD of the PASID directory entry or the PASID entry. */
  readonly fpd: boolean;
  readonly binding: ShadowBinding;
  /** The guest entry's words as last read (empty for the RID path with translation disabled). */
  readonly words: readonly bigint[];
}

/** What the guest asks for one entry (before the host is told). */
export interface DesiredEntry {
  readonly did: number;
  readonly fpd: boolean;
  readonly binding: Exclude<ShadowBinding, { kind: 'sl' } | { kind: 'refused' }> | { readonly kind: 'sl'; readonly slptptr: bigint; readonly levels: number };
  readonly words: readonly bigint[];
  readonly ridPasid?: number | null;
}

/** The bind data vendor flags of a first-level PASID entry (QEMU vSVA `vtd_bind_guest_pasid`). */
export function vtdBindFlags(f: PasidEntryFields): bigint {
  let flags = 0n;
  if (f.SRE === 1n) flags |= IOMMU_SVA_VTD_GPASID.SRE;
  if (f.EAFE === 1n) flags |= IOMMU_SVA_VTD_GPASID.EAFE;
  if (f.PCD === 1n) flags |= IOMMU_SVA_VTD_GPASID.PCD;
  if (f.PWT === 1n) flags |= IOMMU_SVA_VTD_GPASID.PWT;
  if (f.EMTE === 1n) flags |= IOMMU_SVA_VTD_GPASID.EMTE;
  if (f.CD === 1n) flags |= IOMMU_SVA_VTD_GPASID.CD;
  if (f.WPE === 1n) flags |= IOMMU_SVA_VTD_GPASID.WPE;
  return flags;
}

/**
 * What a PASID table entry read asks the host for, or null when the entry is not present
 * (P clear: nothing to shadow).
 */
export function desiredFromEntry(read: PasidEntryRead): DesiredEntry | null {
  const c = read.check;
  const f = c.fields;
  const did = Number(f.DID);
  const fpd = read.dirFpd || f.FPD === 1n;
  if (f.P === 0n) return null;
  if (!c.ok) return { did, fpd, binding: { kind: 'invalid', reason: c.fault, why: c.why }, words: read.words };
  switch (c.pgtt) {
    case PGTT.FLT: {
      const flpm = Number(f.FLPM);
      return {
        did,
        fpd,
        words: read.words,
        binding: { kind: 'nested', flptr: f.FLPTR << 12n, addrWidth: 48 + 9 * flpm, vtdFlags: vtdBindFlags(f), pat: Number(f.PAT), emt: Number(f.EMT) },
      };
    }
    case PGTT.PT:
      return { did, fpd, words: read.words, binding: { kind: 'pt' } };
    case PGTT.SLT:
      return { did, fpd, words: read.words, binding: { kind: 'sl', slptptr: f.SLPTPTR << 12n, levels: Number(f.AW) + 2 } };
    default:
      return { did, fpd, binding: { kind: 'invalid', reason: 0x5b, why: `PGTT ${c.pgtt} is not supported` }, words: read.words };
  }
}

function bindingKey(b: DesiredEntry['binding'] | ShadowBinding): string {
  switch (b.kind) {
    case 'nested':
      return `nested:${b.flptr}:${b.addrWidth}:${b.vtdFlags}:${b.pat}:${b.emt}`;
    case 'pt':
      return 'pt';
    case 'sl':
      return `sl:${b.slptptr}:${b.levels}`;
    case 'invalid':
      return `invalid:${b.reason}`;
    case 'refused':
      return 'refused';
  }
}

function key(rid: number, pasid: number | null): string {
  return pasid === null ? `${rid}:rid` : `${rid}:${pasid}`;
}

function errnoOf(e: unknown): string {
  return isVsvaError(e) ? e.code : 'EIO';
}

/** A Map that counts its changes (lookups memoised against `version` stay valid until it moves). */
class VersionedMap<K, V> extends Map<K, V> {
  version = 0;
  override set(k: K, v: V): this {
    this.version++;
    return super.set(k, v);
  }
  override delete(k: K): boolean {
    this.version++;
    return super.delete(k);
  }
  override clear(): void {
    this.version++;
    super.clear();
  }
}

export class PasidShadow {
  private readonly map = new VersionedMap<string, PasidShadowEntry>();
  /** Host domain each device's requests without PASID are attached to (null: detached). */
  private readonly ridDomain = new Map<number, number | null>();
  private readonly slDomains = new Map<string, SlDomainShadow>();
  readonly counters = { binds: 0, unbinds: 0, attaches: 0, detaches: 0, refused: 0, slSyncs: 0 };
  private readonly uapi: HostUapi;
  private readonly globalPasids: boolean;

  constructor(
    /** The VM's host requests (the default uAPI's, below). */
    host: HostCalls,
    private readonly ram: GuestRam,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
    rids: readonly number[],
    /** Called before any host request, so batched invalidations reach the host first. */
    private readonly beforeHostRequest: () => Promise<void>,
    /** Guest-private PASIDs (no VCMD); null: identity, the guest's PASIDs are host PASIDs. */
    readonly privatePasids: GuestPrivatePasids | null = null,
    /**
     * The VM's host uAPI (default: VFIO SVA over `host`), and whether the guest's PASIDs are
     * global PASIDs of the VM's IOASID set (VCMD) rather than device-local ones.
     */
    opts: { uapi?: HostUapi; globalPasids?: boolean } = {},
  ) {
    this.uapi = opts.uapi ?? new VfioSvaUapi(host);
    this.globalPasids = opts.globalPasids ?? false;
    // A VFIO device starts attached to the container's domain (domain 0, the GPA domain).
    for (const rid of rids) this.ridDomain.set(rid, 0);
  }

  get(rid: number, pasid: number | null): PasidShadowEntry | undefined {
    return this.map.get(key(rid, pasid));
  }

  /** Changes when any shadowed entry or PASID mapping changes (for memoised lookups). */
  get version(): number {
    return this.map.version + (this.privatePasids?.version ?? 0);
  }

  /** The host PASID the guest PASID is forwarded as (identity without private PASIDs), or undefined. */
  hostPasid(gpasid: number): number | undefined {
    return this.privatePasids === null ? gpasid : this.privatePasids.hostOf(gpasid);
  }

  /** Every shadowed entry, RID paths included, in insertion order. */
  entries(): PasidShadowEntry[] {
    return [...this.map.values()];
  }

  /** Shadowed entries of one device that carry a PASID. */
  pasidEntriesOf(rid: number): PasidShadowEntry[] {
    return this.entries().filter((e) => e.rid === rid && e.pasid !== null);
  }

  /** The host domain of a device's requests without PASID (null: detached). */
  ridAttachment(rid: number): number | null {
    return this.ridDomain.get(rid) ?? null;
  }

  /** SL shadow domains in use. */
  domains(): SlDomainShadow[] {
    return [...this.slDomains.values()];
  }

  /** The guest's reason for a fault at `iova` under an SL-shadowed entry (sl-shadow.ts), or undefined. */
  slFaultReason(e: PasidShadowEntry, iova: bigint): number | undefined {
    return e.binding.kind === 'sl' ? this.slDomains.get(slKey(e.binding))?.faultReason(iova) : undefined;
  }

  /**
   * Make the host match `want` for (rid, pasid); null removes the entry (unbind / detach; for
   * the RID path: detach, requests without PASID are blocked).
   */
  async apply(rid: number, pasid: number | null, want: DesiredEntry | null): Promise<void> {
    const k = key(rid, pasid);
    const old = this.map.get(k);
    if (old !== undefined && want !== null && bindingKey(old.binding) === bindingKey(want.binding) && old.binding.kind !== 'refused') {
      // Same translation: only bookkeeping fields change.
      if (old.binding.kind === 'sl' && old.did !== want.did) this.slDomains.get(slKey(old.binding))?.dids.add(want.did);
      this.map.set(k, { ...old, did: want.did, fpd: want.fpd, words: want.words, ridPasid: want.ridPasid ?? old.ridPasid });
      return;
    }
    if (old !== undefined && want !== null && this.uapi.replaces && routed(old.binding) && want.binding.kind !== 'invalid') {
      // Replace in place: the new route first, then the old one's resources (its route is gone
      // with the replace); a refused replace left the old route, which is torn down.
      const binding = await this.setup(rid, pasid, want, true);
      await this.teardown(old, binding.kind !== 'refused');
      this.map.set(k, { rid, bdf: ridToBdf(rid), pasid, ridPasid: want.ridPasid ?? null, did: want.did, fpd: want.fpd, binding, words: want.words });
      return;
    }
    // A guest-private PASID re-bound keeps its host PASID across the teardown and the setup.
    const held = pasid !== null && want !== null && this.privatePasids !== null && this.privatePasids.hold(pasid);
    try {
      if (old !== undefined) await this.teardown(old);
      if (want === null) {
        this.map.delete(k);
        if (pasid === null) await this.detachRid(rid);
        return;
      }
      const binding = await this.setup(rid, pasid, want);
      this.map.set(k, { rid, bdf: ridToBdf(rid), pasid, ridPasid: want.ridPasid ?? null, did: want.did, fpd: want.fpd, binding, words: want.words });
    } finally {
      if (held) await this.releaseHostPasid(pasid!);
    }
  }

  /** Re-walk SL shadow domains: all of them, or those of a guest DID, in [start, end). */
  async resyncSl(did: number | null, start?: bigint, end?: bigint): Promise<void> {
    for (const d of this.slDomains.values()) {
      if (did !== null && !d.dids.has(did)) continue;
      await this.beforeHostRequest();
      const r = await d.sync(start, end);
      this.counters.slSyncs++;
      if (r.mapped + r.unmapped > 0) {
        this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: 'SL shadow resync', args: { domain: d.domain, mapped: r.mapped, unmapped: r.unmapped } });
      }
    }
  }

  /**
   * Replay on a fresh host (docs/reliability.md §2): the VM was set up again (its devices' RIDs
   * are on domain 0, nothing is bound); re-create from this shadow the SL shadow domains with
   * their mappings, each device's RID attachment, and every binding / PASID attachment.
   * `lost`: PASIDs the host could not give back — their entries become `refused` (ENOSPC).
   * Requests go to `host` directly. Returns counts and what failed.
   */
  async replay(host: HostCalls, lost: ReadonlySet<number>): Promise<{ domains: number; mappings: number; bindings: number; failures: string[] }> {
    const out = { domains: 0, mappings: 0, bindings: 0, failures: [] as string[] };
    if (this.privatePasids !== null) {
      // Guest-private PASIDs: new host PASIDs (any will do; the guest never sees them).
      const r = await this.privatePasids.replay(host);
      if (r.lost.length > 0) lost = new Set([...lost, ...r.lost]);
    }
    const u = this.uapi.via(host);
    const newDomain = new Map<number, number>([[0, 0]]);
    for (const d of this.slDomains.values()) {
      const old = d.domain;
      try {
        out.mappings += await d.replay(u);
        newDomain.set(old, d.domain);
        out.domains++;
      } catch (e) {
        out.failures.push(`SL shadow domain of 0x${d.slptptr.toString(16)}: ${errnoOf(e)}`);
      }
    }
    for (const [rid, dom] of this.ridDomain) {
      const want = dom === null ? null : (newDomain.get(dom) ?? null);
      try {
        if (want !== null && want !== 0 && u.replaces) await u.attachRid(rid, 0, want);
        else if (want !== 0) {
          await u.detachRid(rid, 0);
          if (want !== null) await u.attachRid(rid, null, want);
        }
        this.ridDomain.set(rid, want);
      } catch (e) {
        out.failures.push(`RID ${ridToBdf(rid)} attachment: ${errnoOf(e)}`);
        this.ridDomain.set(rid, 0);
      }
    }
    for (const [k, e] of this.map) {
      const b = e.binding;
      if (b.kind === 'sl') {
        const domain = newDomain.get(b.domain);
        if (domain === undefined) {
          this.map.set(k, { ...e, binding: { kind: 'refused', errno: 'EIO', why: 'its SL shadow domain could not be replayed' } });
          continue;
        }
        this.map.set(k, { ...e, binding: { ...b, domain } });
      }
      if (e.pasid === null || b.kind === 'invalid' || b.kind === 'refused') continue;
      if (lost.has(e.pasid)) {
        this.map.set(k, { ...e, binding: { kind: 'refused', errno: 'ENOSPC', why: `PASID ${e.pasid} could not be allocated again on the new host` } });
        out.failures.push(`${ridToBdf(e.rid)} PASID ${e.pasid}: the PASID was lost`);
        continue;
      }
      const hpasid = this.hostPasid(e.pasid)!;
      try {
        const route: PasidRoute = b.kind === 'nested' ? { kind: 'nested', table: b } : b.kind === 'pt' ? { kind: 'pt' } : { kind: 'sl', domain: newDomain.get(b.domain)! };
        await u.routePasid(this.ref(e.rid, e.pasid, hpasid), route, false);
        out.bindings++;
      } catch (err) {
        const errno = errnoOf(err);
        this.map.set(k, { ...e, binding: { kind: 'refused', errno, why: err instanceof Error ? err.message : String(err) } });
        out.failures.push(`${ridToBdf(e.rid)} PASID ${e.pasid} (${b.kind}): ${errno}`);
      }
    }
    return out;
  }

  /**
   * The PASID was freed on the host (the guest's VCMD FREE_PASID while its entries were still
   * present, or a host-forced free): the host tore its routes down (docs/protocol.md §10.13 PASID_FREED), so the
   * shadow records them as refused — a later PASID-cache invalidation tries them again — and
   * SL shadow domains they held are released.
   */
  async pasidFreed(pasid: number): Promise<void> {
    for (const [k, e] of this.map) {
      if (e.pasid !== pasid) continue;
      const b = e.binding;
      if (b.kind === 'invalid' || b.kind === 'refused') continue;
      this.map.set(k, { ...e, binding: { kind: 'refused', errno: 'ENOENT', why: `PASID ${pasid} was freed while bound` } });
      if (this.uapi.routesHoldPasids) {
        // iommufd: the attachment holds the PASID (its free waits for the detach); the VMM
        // detaches what the guest freed, as the VFIO SVA host unbinds it itself.
        await this.teardown(e);
        continue;
      }
      if (b.kind === 'sl') {
        const dom = this.slDomains.get(slKey(b));
        if (dom !== undefined) {
          try {
            await this.releaseSlDomain(dom);
          } catch (err) {
            this.log.warn({ err, pasid }, 'releasing the SL shadow domain of a freed PASID failed');
          }
        }
      }
    }
  }

  /** Undo everything forwarded (model close). Errors are logged. */
  async releaseAll(): Promise<void> {
    for (const e of [...this.map.values()]) {
      try {
        await this.apply(e.rid, e.pasid, null);
      } catch (err) {
        this.log.warn({ err, rid: e.rid, pasid: e.pasid }, 'release of a shadowed entry failed');
        this.map.delete(key(e.rid, e.pasid));
      }
    }
  }

  // ---- host side ------------------------------------------------------------------------------

  /** Set up the host for `want`; `replacing`: a route of the entry is in place (uapi.replaces). */
  private async setup(rid: number, pasid: number | null, want: DesiredEntry, replacing = false): Promise<ShadowBinding> {
    const b = want.binding;
    if (b.kind === 'invalid') {
      if (pasid === null) await this.detachRid(rid);
      this.trace.emit({ kind: 'bind', side: 'guest', vm: this.vm, name: 'invalid PASID entry (not bound)', args: { rid, pasid, reason: b.reason, why: b.why } });
      return b;
    }
    await this.beforeHostRequest();
    let acquired = false;
    try {
      if (pasid !== null && this.privatePasids !== null) {
        await this.privatePasids.acquire(pasid);
        acquired = true;
      }
      const hpasid = pasid === null ? null : this.hostPasid(pasid)!;
      switch (b.kind) {
        case 'nested': {
          if (pasid === null || hpasid === null) throw Object.assign(new Error('first-level translation of requests without PASID is not supported by the host bind'), { code: 'EOPNOTSUPP' });
          await this.uapi.routePasid(this.ref(rid, pasid, hpasid), { kind: 'nested', table: b }, replacing);
          this.counters.binds++;
          this.trace.emit({ kind: 'bind', side: 'guest', vm: this.vm, name: this.uapi.kind === 'iommufd' ? 'nested HWPT attach' : 'BIND_GPASID', args: { rid, pasid, hpasid, flptr: hex64(b.flptr), addrWidth: b.addrWidth } });
          return b;
        }
        case 'pt':
          await this.attach(rid, pasid, hpasid, { kind: 'pt' }, replacing);
          return b;
        case 'sl': {
          const dom = await this.slDomain(b.slptptr, b.levels);
          dom.users++;
          dom.dids.add(want.did);
          try {
            await this.attach(rid, pasid, hpasid, { kind: 'sl', domain: dom.domain }, replacing);
          } catch (e) {
            await this.releaseSlDomain(dom);
            throw e;
          }
          return { kind: 'sl', slptptr: b.slptptr, levels: b.levels, domain: dom.domain };
        }
      }
    } catch (e) {
      if (acquired) await this.releaseHostPasid(pasid!);
      this.counters.refused++;
      const errno = (e as { code?: string }).code ?? errnoOf(e);
      this.log.warn({ err: e, rid, pasid }, 'host refused a shadowed PASID entry');
      this.trace.emit({ kind: 'bind', side: 'guest', vm: this.vm, name: 'host refused', args: { rid, pasid, errno } });
      if (pasid === null) await this.detachRid(rid);
      return { kind: 'refused', errno, why: e instanceof Error ? e.message : String(e) };
    }
  }

  /** Undo what `old` set up; `routeGone`: a replace removed its route already (only its resources go). */
  private async teardown(old: PasidShadowEntry, routeGone = false): Promise<void> {
    const b = old.binding;
    if (b.kind === 'invalid' || b.kind === 'refused') return;
    await this.beforeHostRequest();
    try {
      const hpasid = old.pasid === null ? undefined : this.hostPasid(old.pasid);
      if (b.kind === 'nested' && old.pasid !== null && hpasid !== undefined) {
        if (!routeGone) await this.uapi.unroutePasid(this.ref(old.rid, old.pasid, hpasid), { kind: 'nested', table: b });
        this.counters.unbinds++;
        this.trace.emit({ kind: 'unbind', side: 'guest', vm: this.vm, name: this.uapi.kind === 'iommufd' ? (routeGone ? 'nested HWPT replaced' : 'nested HWPT detach') : 'UNBIND_GPASID', args: { rid: old.rid, pasid: old.pasid, hpasid } });
      } else if (b.kind === 'pt' || b.kind === 'sl') {
        if (routeGone) {
          /* replaced in place */
        } else if (old.pasid === null) await this.detachRid(old.rid);
        else if (hpasid !== undefined) await this.detach(old.rid, old.pasid, hpasid, b.kind === 'pt' ? { kind: 'pt' } : { kind: 'sl', domain: b.domain });
        if (b.kind === 'sl') {
          const dom = this.slDomains.get(slKey(b));
          if (dom !== undefined) await this.releaseSlDomain(dom);
        }
      }
    } catch (e) {
      this.log.warn({ err: e, rid: old.rid, pasid: old.pasid }, 'host teardown of a shadowed PASID entry failed');
    }
    if (old.pasid !== null) await this.releaseHostPasid(old.pasid);
  }

  /** One binding fewer on a guest-private PASID's host PASID (no-op for identity). Errors are logged. */
  private async releaseHostPasid(gpasid: number): Promise<void> {
    if (this.privatePasids === null) return;
    try {
      await this.privatePasids.release(gpasid);
    } catch (e) {
      this.log.warn({ err: e, pasid: gpasid }, 'freeing the host PASID of a guest-private PASID failed');
    }
  }

  /** The uAPI's name for guest PASID `gpasid` of `rid` forwarded as host PASID `hpasid`. */
  private ref(rid: number, gpasid: number, hpasid: number): PasidRef {
    return { rid, gpasid, hpasid, global: this.globalPasids };
  }

  /**
   * Route a device's requests without PASID (`pasid` null) or its PASID `pasid` (host PASID
   * `hpasid`) pass-through or through a second-level domain. The RID is re-routed in place where
   * the uAPI replaces (iommufd), else detached first.
   */
  private async attach(rid: number, pasid: number | null, hpasid: number | null, route: Exclude<PasidRoute, { kind: 'nested' }>, replacing: boolean): Promise<void> {
    const domain = route.kind === 'sl' ? route.domain : 0;
    if (pasid === null || hpasid === null) {
      const cur = this.ridDomain.get(rid) ?? null;
      if (cur === domain) return;
      if (cur !== null && this.uapi.replaces) {
        await this.uapi.attachRid(rid, cur, domain);
      } else {
        await this.detachRid(rid);
        await this.uapi.attachRid(rid, null, domain);
      }
      this.ridDomain.set(rid, domain);
    } else {
      await this.uapi.routePasid(this.ref(rid, pasid, hpasid), route, replacing);
    }
    this.counters.attaches++;
    // The VFIO SVA ATTACH's PGTT (a RID routed to the GPA domain: NONE).
    const pgtt = route.kind === 'sl' ? AttachPgtt.SECOND_LEVEL : pasid === null ? AttachPgtt.NONE : AttachPgtt.PASS_THROUGH;
    this.trace.emit({ kind: 'bind', side: 'guest', vm: this.vm, name: 'ATTACH', args: { rid, pasid: hpasid, pgtt, domain } });
  }

  private async detach(rid: number, gpasid: number, hpasid: number, route: PasidRoute): Promise<void> {
    const domain = route.kind === 'sl' ? route.domain : 0;
    await this.uapi.unroutePasid(this.ref(rid, gpasid, hpasid), route);
    this.counters.detaches++;
    this.trace.emit({ kind: 'unbind', side: 'guest', vm: this.vm, name: 'DETACH', args: { rid, pasid: hpasid, domain } });
  }

  /** Detach a device's requests without PASID from whatever domain they use. */
  private async detachRid(rid: number): Promise<void> {
    const cur = this.ridDomain.get(rid) ?? null;
    if (cur === null) return;
    await this.beforeHostRequest();
    this.ridDomain.set(rid, null);
    try {
      await this.uapi.detachRid(rid, cur);
      this.counters.detaches++;
      this.trace.emit({ kind: 'unbind', side: 'guest', vm: this.vm, name: 'DETACH', args: { rid, pasid: null, domain: cur } });
    } catch (e) {
      this.log.warn({ err: e, rid, domain: cur }, 'host DETACH of a RID failed');
    }
  }

  /** Reattach a device's requests without PASID to the GPA domain (translation disabled). */
  async attachRidToGpa(rid: number): Promise<void> {
    const old = this.map.get(key(rid, null));
    if (old !== undefined) {
      await this.teardown(old);
      this.map.delete(key(rid, null));
    }
    await this.beforeHostRequest();
    try {
      await this.attach(rid, null, null, { kind: 'pt' }, false);
    } catch (e) {
      this.log.warn({ err: e, rid }, 'host ATTACH of a RID to the GPA domain failed');
    }
  }

  private async slDomain(slptptr: bigint, levels: number): Promise<SlDomainShadow> {
    const k = slKey({ slptptr, levels });
    let d = this.slDomains.get(k);
    if (d === undefined) {
      d = await SlDomainShadow.create(this.uapi, this.ram, this.log, slptptr, levels);
      this.slDomains.set(k, d);
      await d.sync();
      this.counters.slSyncs++;
    }
    return d;
  }

  private async releaseSlDomain(d: SlDomainShadow): Promise<void> {
    d.users--;
    if (d.users > 0) return;
    this.slDomains.delete(slKey(d));
    await d.destroy();
  }
}

/** Whether the host holds a route for a binding. */
function routed(b: ShadowBinding): boolean {
  return b.kind === 'nested' || b.kind === 'pt' || b.kind === 'sl';
}

function slKey(b: { slptptr: bigint; levels: number }): string {
  return `${b.slptptr}:${b.levels}`;
}
