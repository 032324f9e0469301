/**
 * The translation engine: requests (RID, PASID?, address, read/write/execute, privileged) are
 * translated through the device's context (modelled), its PASID entry (PASID cache), and then
 * first level (4/5-level, GVA → GPA), second level (GPA/IOVA → HPA), or both (nested: every FL
 * table pointer and the final GPA are themselves translated by the second level), as the PASID
 * entry's PGTT says. VT-d spec §9.6 (scalable-mode PASID table entry), §3.6–3.8 (first-level,
 * second-level and nested translation), §9.7–9.8 (paging entries), §7.1.3 (fault conditions).
 *
 * Caches: device-TLB (devices with ATS enabled) → IOTLB (DID, PASID; 4K/2M/1G) → first-level
 * paging-structure cache → memory. Nothing is dropped without an invalidation (tlb.ts).
 *
 * Hot path: numbers only; a hit is a probe of an open-addressing table on a Float64Array
 * (page-hash.ts) plus an AND of the entry's permitted access classes. A walk follows tables by
 * page number (small integers while HPAs stay below 2^42) and reads a PTE as two u32 halves of the
 * view PhysPort.spanPage gives of the region holding the table page, cached for the walk; the
 * paging-structure cache holds numbers too (tlb-bucket.ts). A translation returns the HPA (≥ 0)
 * or XLATE_FAULT (−1) with the details kept in number fields (`lastFault()` builds the record;
 * nothing is allocated on a translation).
 *
 * Why this file is longer than the others (the 600-line rule's one exception): the second-level
 * walk (`slTranslate`) and the first-level walk (`walkFirstLevel`) each inline the read of a
 * page-table entry, keeping the u32 view of the region being walked in local variables. Moving
 * that read into a shared helper — a method of PhysPort, or a small reader object per walk — was
 * measured (cold nested walk of the iommu bench, same-run A/B, six alternating runs each) at
 * 7–9% fewer walks per second, above the 5% the project accepts for a cold-walk change; the two
 * copies stay, and with them the walks' length.
 *
 * Fault conditions and the codes this model reports (src/vtd/fault.ts names):
 * - context: unknown RID 0x41 (SCT.2); PASID on a device without PASID 0x45 (SCT.6); PASID
 *   beyond the device's width 0x46 (SCT.7).
 * - PASID directory entry: read error 0x50, P clear 0x51, reserved bits 0x52; PASID entry: read
 *   error 0x58, then src/vtd checkPasidEntry (0x59 / 0x5a / 0x5b; AW must be in SAGAW 39/48-bit).
 * - PASID-entry request checks (PGTT 1 and 3): supervisor request with SRE = 0 → 0x5d; execute
 *   request with ERE = 0 → 0x5c.
 * - first level: non-canonical input 0x80; table read error 0x73 (top level) / 0x70; P clear
 *   0x71; reserved bits 0x72 (QEMU masks for the HAW); user request through U/S = 0 → 0x81;
 *   write through R/W = 0 (user, or supervisor with WPE) → 0x85; execute with XD (NXE) or a
 *   supervisor execute of a user page with SMEP → 0x82; A/D update needed with PWSNP = 0, or an
 *   A/D write that fails → 0x91.
 * - nested only: FL table address (FLPTR or a non-leaf entry) beyond the SL input width → 0x74;
 *   SL translation of an FL table without R → 0x75 (top level) / 0x76; A/D update of an FL entry
 *   whose table page the SL maps without W → 0x77; FL output GPA beyond the SL width → 0x84.
 * - second level: SLPTPTR beyond the HAW or its table unreadable → 0x7b; lower table read error
 *   0x78; entry with R = W = 0 → 0x79; reserved bits 0x7a; SL A/D update needed with PWSNP = 0
 *   (SLADE) → 0x7c; for the request itself: read without R → 0x86, write without W → 0x85,
 *   execute without X when SLEE → 0x82.
 * - input beyond the translation's width (SL-only: the SL width; pass-through: the HAW) → 0x83.
 * - output in the interrupt range 0xFEEx_xxxx → 0x87.
 *
 * A/D bits are written only when the whole translation succeeds (FL entries: A at every level,
 * EA when EAFE, D at the leaf for writes; SL entries with SLADE: A, D at the leaf for writes,
 * including the SL entries of FL tables whose A/D bits are written).
 */
import { fail } from '../../src/errors.js';
import { PasidEntryReader } from './pasid-read.js';
import { PasidCacheIndex } from './pasid-cache-index.js';
import { FaultReason as FR } from '../../src/vtd/fault.js';
import { flReservedMask, PAGE_SIZE, slReservedMask, type PtLevel } from '../../src/vtd/page-table.js';
import {
  ACCESS_EXEC,
  ACCESS_PRIV,
  ACCESS_WRITE,
  CLASS_BIT_OF_FLAGS,
  CLASS_COUNT,
  FL_A,
  FL_D,
  FL_EA,
  FL_P,
  FL_PS,
  FL_RW,
  FL_US,
  FL_XD_HI,
  INTERRUPT_RANGE_BASE,
  INTERRUPT_RANGE_END,
  LEVEL_PAGE_BYTES,
  LEVEL_PAGES,
  NO_PASID,
  PGTT_NESTED,
  PGTT_PT,
  PGTT_SL,
  PTE_ADDR_HI,
  PTE_ADDR_LO,
  PTE_ADDR_LO_1G,
  PTE_ADDR_LO_2M,
  REQ_NO_REPORT,
  SL_A,
  SL_D,
  SL_PS,
  SL_R,
  SL_W,
  SL_X,
  TWO_32,
  XLATE_FAULT,
} from './constants.js';
import type { IommuDevice } from './device.js';
import { faultRecord, type IommuFault } from './fault.js';
import { FL_ALLOW_MEMO, type CachedPasidEntry } from './pasid-cache.js';
import { GEN_MASK } from './pasid-cache-slots.js';
import type { PhysPort } from './phys-port.js';
import { RequestContext } from './request-context.js';
import type { Iotlb } from './tlb.js';
import { ALLOW_SPAN, EPOCHS, PSC_RW, PSC_TBL_W, PSC_US, PSC_XD } from './tlb-bucket.js';

/** Slots of the engine's direct-mapped context cache (a power of two). */
const CTX_CACHE_SLOTS = 1024;
const CTX_CACHE_MASK = CTX_CACHE_SLOTS - 1;
const TWO_27 = 134217728;
const MASK_27 = TWO_27 - 1;
const TWO_31 = 2147483648;
/** An entry's address bits 51:32 (its high half's bits 19:0) in page-number units. */
const TWO_20 = 1048576;
/**
 * The hit path's constants as module-local values: TurboFan folds these into the code, while an
 * imported binding is loaded on every use (and `x / EPOCHS` stays a division).
 */
const EPOCH_MASK = EPOCHS - 1;
const PER_EPOCHS = 1 / EPOCHS;
const ALLOW_MASK = ALLOW_SPAN - 1;
const FRAME_SCALE = 4096 / ALLOW_SPAN;
const PC_GEN_MASK = GEN_MASK;
const CLASS_BIT = CLASS_BIT_OF_FLAGS;
/** The span of no region: every page is outside it. */
const NO_SPAN = new Uint32Array(0);

/** Purposes of a second-level translation (they decide the permission-fault codes). */
const SL_REQUEST = 0;
const SL_FL_TABLE_TOP = 1;
const SL_FL_TABLE = 2;
const SL_FL_TABLE_WRITE = 3;

/** The engine's counters, by name (each a field of TranslationEngine). */
const ENGINE_COUNTER_NAMES = [
  'translations', 'hits', 'devTlbHits', 'misses', 'walks', 'faults', 'faultsReported', 'pasidCacheHits', 'pasidCacheMisses', 'pscHits',
] as const;

/** A snapshot of the engine's counters (HostIommu.stats() returns one). */
export type EngineCounters = Record<(typeof ENGINE_COUNTER_NAMES)[number], number>;

export interface EngineOptions {
  /** Host address width (bits): reserved-bit masks and SLPTPTR / pass-through limits. */
  haw: number;
  /** CAP.SAGAW field value (bit AW set = AW supported). */
  sagaw: number;
}

/** Receives every fault to report (not REQ_NO_REPORT, not FPD); `device` is undefined for an unknown RID. */
export type FaultSink = (device: IommuDevice | undefined, fault: IommuFault) => void;

export class TranslationEngine {
  /** Bytes from the last translated address to the end of the page it was translated with. */
  extent = 0;

  // counters (plain fields: cheap to bump; ENGINE_COUNTER_NAMES lists them)
  translations = 0;
  /** IOTLB or device-TLB hits (also counted per request context; IommuDevice.iotlbHits / iotlbMisses sum them). */
  hits = 0;
  devTlbHits = 0;
  misses = 0;
  walks = 0;
  faults = 0;
  faultsReported = 0;
  pasidCacheHits = 0;
  pasidCacheMisses = 0;
  pscHits = 0;

  // the last fault (numbers only; lastFault() builds its record)
  private faultReason = 0;
  private faultRid = 0;
  /** −1 for a request without PASID. */
  private faultPasid = -1;
  /** Faulting address = faultVpn · 4096 + faultOff (vpn is exact for any 64-bit address). */
  private faultVpn = 0;
  private faultOff = 0;
  /** Request flags (ACCESS_*) of the faulting request. */
  private faultFlags = 0;

  /**
   * Direct-mapped cache of contexts in front of the device and context Maps, by a hash of (RID,
   * PASID): a request finds its context with one array read and two compares of fields of the
   * context it reads anyway (requests that switch PASID on every access cost no Map lookup); a
   * context leaves it when it goes (forgetContext, forgetDevice, resetContextCache).
   */
  private readonly ctxSlot: (RequestContext | null)[] = new Array<RequestContext | null>(CTX_CACHE_SLOTS).fill(null);

  // reserved masks by (level * 2 + ps), as u32 halves
  private readonly flRsvLo = new Int32Array(12);
  private readonly flRsvHi = new Int32Array(12);
  private readonly slRsvLo = new Int32Array(12);
  private readonly slRsvHi = new Int32Array(12);
  private readonly hawLimit: number;
  private readonly pasidReader: PasidEntryReader;
  /** Contexts holding a cached PASID entry, by (DID, PASID): what PASID-cache invalidations visit. */
  readonly pasidCache: PasidCacheIndex;

  // results of the last second-level translation
  private slLevel = 1;
  private slR = true;
  private slW = true;
  private slX = true;
  private slDirty = true;
  private readonly slEntHpa = new Float64Array(6);
  private readonly slEntLo = new Int32Array(6);
  /**
   * The in-process regions the current walk reads its SL and FL tables from (PhysPort.spanPage):
   * u32 view, first page, whole pages. Reset before every walk (`miss`), after PhysPort.begin
   * re-validated the port's regions.
   */
  private slU: Uint32Array = NO_SPAN;
  private slSpanPfn = 0;
  private slSpanPages = 0;
  private flU: Uint32Array = NO_SPAN;
  private flSpanPfn = 0;
  private flSpanPages = 0;

  // first-level entries whose A/EA/D bits the walk must set (written once it succeeds)
  private readonly flEntHpa = new Float64Array(6);
  private readonly flEntBits = new Int32Array(6);
  /** Page number (GPA when nested) of the table holding each such entry. */
  private readonly flTblGfn = new Float64Array(6);
  // paging-structure entries to cache once the walk's A/EA updates are done
  private readonly dPscLevel = new Int32Array(6);
  private readonly dPscTblPfn = new Float64Array(6);
  private readonly dPscTblGfn = new Float64Array(6);
  private readonly dPscFlags = new Uint8Array(6);

  constructor(
    private readonly devices: Map<number, IommuDevice>,
    private readonly iotlb: Iotlb,
    private readonly port: PhysPort,
    opts: EngineOptions,
    private readonly sink: FaultSink,
  ) {
    this.hawLimit = 2 ** opts.haw;
    this.pasidCache = new PasidCacheIndex(iotlb, () => this.allContexts());
    this.pasidReader = new PasidEntryReader(port, opts.haw, opts.sagaw);
    for (let level = 1; level <= 5; level++) {
      for (let ps = 0; ps < 2; ps++) {
        const i = level * 2 + ps;
        const fl = flReservedMask(level as PtLevel, ps === 1, opts.haw);
        const sl = slReservedMask(level as PtLevel, ps === 1, opts.haw);
        this.flRsvLo[i] = Number(fl & 0xffffffffn) | 0;
        this.flRsvHi[i] = Number(fl >> 32n) | 0;
        this.slRsvLo[i] = Number(sl & 0xffffffffn) | 0;
        this.slRsvHi[i] = Number(sl >> 32n) | 0;
      }
    }
  }

  /** Forget the context caches (after devices change). */
  resetContextCache(): void {
    this.ctxSlot.fill(null);
  }

  counters(): EngineCounters {
    const c = {} as EngineCounters;
    for (const name of ENGINE_COUNTER_NAMES) c[name] = this[name];
    return c;
  }

  /**
   * Translate `addr` (a number < 2^53) for `rid` / `pasid` (NO_PASID for none) with `flags`
   * (ACCESS_* | REQ_NO_REPORT). Returns the HPA or XLATE_FAULT. Without PASID, execute and
   * privileged flags are ignored (a request without PASID prefix cannot carry them).
   */
  translate(rid: number, pasid: number, addr: number, flags: number): number {
    const vpn = Math.floor(addr / 4096);
    return this.translateVpn(rid, pasid, vpn, addr - vpn * 4096, flags);
  }

  /** As `translate`, with the address given as page number and offset (any 64-bit address). */
  translateVpn(rid: number, pasid: number, vpn: number, off: number, flags: number): number {
    this.translations++;
    let ctx = this.ctxSlot[ctxSlotOf(rid, pasid)]!;
    if (ctx === null || ctx.rid !== rid || ctx.pasid !== pasid) {
      const c = this.context(rid, pasid);
      if (c === null) return this.contextFault(rid, pasid, vpn, off, flags);
      ctx = c;
    }
    // IOTLB / device-TLB hit on a 4 KiB entry: a probe of the bucket's table (page-hash.ts),
    // nothing allocated.
    const b = ctx.first;
    const t = b.t4k;
    const at = t.find(vpn);
    if (at >= 0) {
      // The value is (frame · ALLOW_SPAN + allow) · EPOCHS + epoch (tlb-bucket.ts): live when the
      // epoch is the bucket's; a stale entry (0) permits nothing.
      // The context's PASID entry must still be cached (a PASID-cache invalidation advances the
      // generation in its tag's slot: pasid-cache-slots.ts).
      const v = t.data[at + 1]!;
      const ep = v & EPOCH_MASK;
      if (ep === b.epoch && (ctx.pcLeaf[ctx.pcAt]! & PC_GEN_MASK) === ctx.peGen) {
        const q = (v - ep) * PER_EPOCHS;
        const allow = q & ALLOW_MASK;
        if ((allow & CLASS_BIT[flags & 7]!) !== 0) {
          this.hits++;
          ctx.hits++;
          if (ctx.dtlb !== null) this.devTlbHits++;
          this.extent = 4096 - off;
          return (q - allow) * FRAME_SCALE + off;
        }
      }
    }
    return this.miss(ctx, vpn, off, flags);
  }

  /** The context of (rid, pasid), or null when the device does not exist or cannot use the PASID. */
  context(rid: number, pasid: number): RequestContext | null {
    const slot = ctxSlotOf(rid, pasid);
    const hit = this.ctxSlot[slot]!;
    if (hit !== null && hit.rid === rid && hit.pasid === pasid) return hit;
    const dev = this.devices.get(rid);
    if (dev === undefined) return null;
    let ctx = dev.contexts.get(pasid);
    if (ctx === undefined) {
      if (pasid !== NO_PASID && (dev.pasidBits === 0 || !(pasid >= 0 && pasid < 2 ** dev.pasidBits))) return null;
      ctx = new RequestContext(dev, pasid);
      dev.contexts.set(pasid, ctx);
    }
    this.ctxSlot[slot] = ctx;
    return ctx;
  }

  /** The record of the last translation fault. */
  lastFault(): IommuFault {
    return faultRecord(this.faultReason, this.faultRid, this.faultPasid, BigInt(this.faultVpn) * PAGE_SIZE + BigInt(this.faultOff), this.faultFlags);
  }

  /** Every context of every device. */
  *allContexts(): IterableIterator<RequestContext> {
    for (const d of this.devices.values()) yield* d.contexts.values();
  }

  /**
   * The route of (dev, pasid) went (its PASID entry cleared and flushed): drop the request context
   * of that PASID, so a device's contexts do not outlive its routes (a later request makes a new
   * one). Its cached PASID entry goes from the index and its buckets are released (an empty
   * bucket leaves its store).
   */
  forgetContext(dev: IommuDevice, pasid: number): void {
    const ctx = dev.contexts.get(pasid);
    if (ctx === undefined) return;
    this.pasidCache.drop(ctx);
    ctx.releaseBuckets();
    dev.retireContext(ctx);
    const slot = ctxSlotOf(dev.rid, pasid);
    if (this.ctxSlot[slot] === ctx) this.ctxSlot[slot] = null;
  }

  /** A device is removed: its contexts drop their cached PASID entries and release their cache buckets. */
  forgetDevice(dev: IommuDevice): void {
    for (const c of dev.contexts.values()) {
      this.pasidCache.drop(c);
      c.releaseBuckets();
    }
    const slots = this.ctxSlot;
    for (let i = 0; i < slots.length; i++) if (slots[i]?.device === dev) slots[i] = null;
  }

  // ---- slow paths ------------------------------------------------------------------------------

  private contextFault(rid: number, pasid: number, vpn: number, off: number, flags: number): number {
    const dev = this.devices.get(rid);
    const reason = dev === undefined ? FR.SCT_2_CONTEXT_ENTRY_NOT_PRESENT : dev.pasidBits === 0 ? FR.SCT_6_PASIDE_CLEAR : FR.SCT_7_PASID_ABOVE_PDTS;
    return this.raise(rid, pasid, vpn, off, flags, reason, false);
  }

  /** Record a fault; report it unless the request says not to or fault processing is disabled (FPD). */
  private raise(rid: number, pasid: number, vpn: number, off: number, flags: number, reason: number, fpd: boolean): number {
    this.faultReason = reason;
    this.faultRid = rid;
    this.faultPasid = pasid;
    this.faultVpn = vpn;
    this.faultOff = off;
    this.faultFlags = flags & (ACCESS_WRITE | ACCESS_EXEC | ACCESS_PRIV);
    this.faults++;
    if ((flags & REQ_NO_REPORT) === 0 && !fpd) {
      this.faultsReported++;
      this.sink(this.devices.get(rid), this.lastFault());
    }
    return XLATE_FAULT;
  }

  private miss(ctx: RequestContext, vpn: number, off: number, flags: number): number {
    this.port.begin();
    this.slU = NO_SPAN;
    this.slSpanPages = 0;
    this.flU = NO_SPAN;
    this.flSpanPages = 0;
    if (ctx.pasid < 0) flags &= ~(ACCESS_EXEC | ACCESS_PRIV);
    const cls = CLASS_BIT_OF_FLAGS[flags & 7]!;
    if (cls === 0) fail('EINVAL', 'a request cannot both write and execute');
    let pe = ctx.pe;
    let reloaded = false;
    if (pe === null) {
      pe = this.loadPasidEntry(ctx, vpn, off, flags);
      if (pe === null) return XLATE_FAULT;
      reloaded = true;
    } else {
      this.pasidCacheHits++;
    }
    const first = ctx.first;
    // translateVpn already probed `first` for a 4 KiB entry permitting the request: unless the
    // PASID entry was just reloaded (a new `first`), only a large-page entry can still hit.
    if ((reloaded || first.nLarge !== 0) && first.probe(vpn) && (first.foundAllow & cls) !== 0) {
      if (ctx.dtlb !== null) this.devTlbHits++;
      ctx.hits++;
      return this.hit(first.foundBase, first.foundLevel, vpn, off);
    }
    const dt = ctx.dtlb;
    if (dt !== null) {
      const b = ctx.iotlb;
      if (b.probe(vpn) && (b.foundAllow & cls) !== 0) {
        ctx.device.devTlb!.insert(dt, vpn, b.foundLevel, b.foundBase, b.foundAllow);
        ctx.hits++;
        return this.hit(b.foundBase, b.foundLevel, vpn, off);
      }
    }
    this.misses++;
    ctx.misses++;
    this.walks++;
    let hpa: number;
    const pgtt = pe.pgtt;
    if (pgtt === PGTT_SL) hpa = this.walkSecondLevelOnly(ctx, pe, vpn, off, flags);
    else if (pgtt === PGTT_PT) hpa = this.passThrough(vpn, off);
    else hpa = this.walkFirstLevel(ctx, pe, vpn, off, flags);
    if (hpa < 0) return this.raise(ctx.device.rid, ctx.pasid, vpn, off, flags, this.faultReason, pe.fpd);
    return hpa;
  }

  private hit(base: number, level: number, vpn: number, off: number): number {
    this.hits++;
    if (level === 1) {
      this.extent = 4096 - off;
      return base + off;
    }
    const inPage = pageOffset(vpn, level) + off;
    this.extent = LEVEL_PAGE_BYTES[level]! - inPage;
    return base + inPage;
  }

  /** Set the pending fault reason; returns XLATE_FAULT for `return this.reason(...)`. */
  private reason(code: number): number {
    this.faultReason = code;
    return XLATE_FAULT;
  }

  /** Read, check and cache the PASID entry of `ctx`; null (fault raised) when it is unusable. */
  private loadPasidEntry(ctx: RequestContext, vpn: number, off: number, flags: number): CachedPasidEntry | null {
    this.pasidCacheMisses++;
    const r = this.pasidReader.read(ctx.device.pasidDirPtr, ctx.peIndex);
    if (typeof r === 'number') {
      this.raise(ctx.device.rid, ctx.pasid, vpn, off, flags, r, this.pasidReader.fpd);
      return null;
    }
    const pe = r;
    const b = this.iotlb.bucket(pe.did, ctx.peIndex);
    if (pe.firstLevel) b.firstLevel = true;
    this.pasidCache.load(ctx, pe, b);
    return pe;
  }

  private passThrough(vpn: number, off: number): number {
    const hpa = vpn * 4096 + off;
    if (hpa >= this.hawLimit) return this.reason(FR.SGN_4_ADDR_BEYOND_DMA_MAX);
    if (hpa >= INTERRUPT_RANGE_BASE && hpa < INTERRUPT_RANGE_END) return this.reason(FR.SGN_8_INTERRUPT_ADDRESS);
    this.extent = 4096 - off;
    return hpa;
  }

  private walkSecondLevelOnly(ctx: RequestContext, pe: CachedPasidEntry, vpn: number, off: number, flags: number): number {
    if (vpn * 4096 >= pe.slLimit) return this.reason(FR.SGN_4_ADDR_BEYOND_DMA_MAX);
    const write = (flags & ACCESS_WRITE) !== 0;
    const exec = (flags & ACCESS_EXEC) !== 0;
    const opfn = this.slTranslate(pe, vpn, SL_REQUEST, write, exec);
    if (opfn < 0) return opfn;
    const hpa = opfn * 4096 + off;
    const level = this.slLevel;
    const inPage = pageOffset(vpn, level) + off;
    const base = hpa - inPage;
    if (hpa >= INTERRUPT_RANGE_BASE && hpa < INTERRUPT_RANGE_END) return this.reason(FR.SGN_8_INTERRUPT_ADDRESS);
    this.extent = LEVEL_PAGE_BYTES[level]! - inPage;
    // Access classes this SL translation permits (privilege plays no role without a first level).
    let allow = 0;
    const r = this.slR;
    const w = this.slW && this.slDirty;
    const x = r && (!pe.slee || this.slX);
    for (let p = 0; p < 2; p++) {
      if (r) allow |= 1 << (p * 3);
      if (w) allow |= 1 << (p * 3 + 1);
      if (x) allow |= 1 << (p * 3 + 2);
    }
    this.fill(ctx, vpn, level, base, allow);
    return hpa;
  }

  private fill(ctx: RequestContext, vpn: number, level: number, base: number, allow: number): void {
    if (base < INTERRUPT_RANGE_END && base + LEVEL_PAGE_BYTES[level]! > INTERRUPT_RANGE_BASE) return;
    this.iotlb.insert(ctx.iotlb, vpn, level, base, allow);
    const dt = ctx.dtlb;
    if (dt !== null) ctx.device.devTlb!.insert(dt, vpn, level, base, allow);
  }

  /**
   * Second-level translation of page `gvpn` for `purpose`. Returns the page number of the output
   * 4 KiB page (the caller adds the offset), or XLATE_FAULT with the reason set. On success sets
   * slLevel, slR/W/X, slDirty and performs SL A/D updates (SLADE).
   *
   * Tables are followed by page number (an entry's address bits 51:12 are its high half's bits
   * 19:0 · 2^20 plus its low half >>> 12), and an entry of a table page in the span cached for the
   * walk is read at u32 index (page − first page of the span) · 1024 + index · 2: small integers
   * throughout, which keeps the walk's dependent chain of loads free of floating-point steps.
   */
  private slTranslate(pe: CachedPasidEntry, gvpn: number, purpose: number, write: boolean, exec: boolean): number {
    let pfn = pe.slRootPfn;
    if (pfn < 0) return this.reason(FR.SSL_4_INVALID_SLPTPTR);
    const levels = pe.slLevels;
    let vlo: number;
    let vhi: number;
    if (gvpn < TWO_31) {
      vlo = gvpn & MASK_27;
      vhi = gvpn >>> 27;
    } else {
      vlo = gvpn % TWO_27;
      vhi = (gvpn - vlo) / TWO_27;
    }
    const rsvLo = this.slRsvLo;
    const rsvHi = this.slRsvHi;
    const slade = pe.slade;
    const port = this.port;
    let r = true;
    let w = true;
    let x = true;
    let level = levels;
    let u = this.slU;
    let sb = this.slSpanPfn;
    let sn = this.slSpanPages;
    let lo = 0;
    let hi = 0;
    let n = 0;
    for (;;) {
      const idx = level <= 3 ? (vlo >>> (9 * (level - 1))) & 511 : (vhi >>> (9 * (level - 4))) & 511;
      const rel = pfn - sb;
      if (rel >= 0 && rel < sn) {
        const i = rel * 1024 + idx * 2;
        lo = u[i]!;
        hi = u[i + 1]!;
      } else {
        const s = port.spanPage(pfn);
        if (s !== null) {
          u = this.slU = s;
          sb = this.slSpanPfn = port.spanPfn;
          sn = this.slSpanPages = port.spanPages;
          const i = (pfn - sb) * 1024 + idx * 2;
          lo = u[i]!;
          hi = u[i + 1]!;
        } else {
          if (!port.load(pfn * 4096 + idx * 8)) return this.reason(level === levels ? FR.SSL_4_INVALID_SLPTPTR : FR.SSL_1_SL_ENTRY_ACCESS);
          lo = port.lo;
          hi = port.hi;
        }
      }
      if ((lo & 3) === 0) return this.reason(FR.SSL_2_SL_ENTRY_PERMISSION);
      const ps = (lo & SL_PS) !== 0 && (level === 2 || level === 3);
      const mi = level * 2 + (ps ? 1 : 0);
      if ((lo & rsvLo[mi]!) !== 0 || (hi & rsvHi[mi]!) !== 0) return this.reason(FR.SSL_3_SL_ENTRY_RESERVED);
      if ((lo & SL_R) === 0) r = false;
      if ((lo & SL_W) === 0) w = false;
      if ((lo & SL_X) === 0) x = false;
      if (slade) {
        this.slEntHpa[n] = pfn * 4096 + idx * 8;
        this.slEntLo[n] = lo;
        n++;
      }
      if (level === 1 || ps) break;
      pfn = (hi & PTE_ADDR_HI) * TWO_20 + (lo >>> 12);
      level--;
    }
    switch (purpose) {
      case SL_REQUEST:
        if (write) {
          if (!w) return this.reason(FR.SGN_6_NO_WRITE);
        } else if (!r) return this.reason(FR.SGN_7_NO_READ);
        if (exec && pe.slee && !x) return this.reason(FR.SGN_3_NO_EXECUTE);
        break;
      case SL_FL_TABLE_TOP:
        if (!r) return this.reason(FR.SFL_6_FL_PML4_READ_NESTED);
        break;
      case SL_FL_TABLE:
        if (!r) return this.reason(FR.SFL_7_FL_ENTRY_READ_NESTED);
        break;
      default:
        if (!w) return this.reason(FR.SFL_8_FL_ENTRY_WRITE_NESTED);
    }
    // Output page: the leaf's frame plus the input's page index inside a 2 MiB / 1 GiB page.
    let out: number;
    if (level === 1) out = (hi & PTE_ADDR_HI) * TWO_20 + (lo >>> 12);
    else if (level === 2) out = (hi & PTE_ADDR_HI) * TWO_20 + ((lo & PTE_ADDR_LO_2M) >>> 12) + (vlo & 511);
    else out = (hi & PTE_ADDR_HI) * TWO_20 + ((lo & PTE_ADDR_LO_1G) >>> 12) + (vlo & 262143);
    let dirty = true;
    if (slade) {
      const wantD = write || purpose === SL_FL_TABLE_WRITE;
      dirty = wantD || (lo & SL_D) !== 0;
      for (let i = 0; i < n; i++) {
        const elo = this.slEntLo[i]!;
        const bits = ((elo & SL_A) === 0 ? SL_A : 0) | (i === n - 1 && wantD && (elo & SL_D) === 0 ? SL_D : 0);
        if (bits === 0) continue;
        if (!pe.pwsnp) return this.reason(FR.SSL_5_SL_AD_UPDATE_NO_SNOOP);
        if (!port.orLo(this.slEntHpa[i]!, bits)) return this.reason(FR.SSL_5_SL_AD_UPDATE_NO_SNOOP);
      }
    }
    this.slLevel = level;
    this.slR = r;
    this.slW = w;
    this.slX = x;
    this.slDirty = dirty;
    return out;
  }

  /** First-level (PGTT 1) or nested (PGTT 3) translation. */
  private walkFirstLevel(ctx: RequestContext, pe: CachedPasidEntry, vpn: number, off: number, flags: number): number {
    const write = (flags & ACCESS_WRITE) !== 0;
    const exec = (flags & ACCESS_EXEC) !== 0;
    const priv = (flags & ACCESS_PRIV) !== 0;
    if (priv && !pe.sre) return this.reason(FR.SPT_6_SRE_CLEAR);
    if (exec && !pe.ere) return this.reason(FR.SPT_5_ERE_CLEAR);
    let vlo: number;
    let vhi: number;
    if (vpn < TWO_31) {
      vlo = vpn & MASK_27;
      vhi = vpn >>> 27;
    } else {
      vlo = vpn % TWO_27;
      vhi = (vpn - vlo) / TWO_27;
    }
    const top = pe.flLevels;
    // Canonical: address bits 63..(width−1) all equal, i.e. vhi bits 24..(width−40) all equal.
    const sign = top === 4 ? vhi >>> 8 : vhi >>> 17;
    if (sign !== 0 && sign !== (top === 4 ? 0x1ffff : 0xff)) return this.reason(FR.SGN_1_NON_CANONICAL);
    const nested = pe.pgtt === PGTT_NESTED;
    const bucket = ctx.iotlb;
    const port = this.port;
    const rsvLo = this.flRsvLo;
    const rsvHi = this.flRsvHi;

    // Tables by page number: `tblGfn` the table's page as the FL entry above names it (a GPA page
    // when nested, else an HPA page), `tblPfn` its HPA page (after the SL translation).
    let level = top;
    let tblPfn = -1;
    let tblGfn = pe.flRootPfn;
    let tblW = true;
    let rw = true;
    let us = true;
    let xd = false;
    let known = false;
    if (bucket.pscLive !== 0) {
      for (let l = 2; l <= top; l++) {
        if (bucket.pscProbe(l, vpn)) {
          this.pscHits++;
          level = l - 1;
          tblPfn = bucket.pscFoundPfn;
          tblGfn = bucket.pscFoundGfn;
          const f = bucket.pscFoundFlags;
          tblW = (f & PSC_TBL_W) !== 0;
          rw = (f & PSC_RW) !== 0;
          us = (f & PSC_US) !== 0;
          xd = (f & PSC_XD) !== 0;
          known = true;
          break;
        }
      }
    }
    if (tblGfn < 0) return this.reason(nested ? FR.SFL_5_FL_ADDR_BEYOND_MGAW_NESTED : FR.SFL_4_FL_PML4_ACCESS);
    let n = 0;
    let lo = 0;
    let hi = 0;
    let idx = 0;
    let u = this.flU;
    let sb = this.flSpanPfn;
    let sn = this.flSpanPages;
    // State of the entry above the current table: 0 nothing to cache (top level, or it came from
    // the paging-structure cache), 1 A (and EA) already set: cached as soon as the table's address
    // is known, 2 A/EA being set by this walk: cached once the walk succeeds. Entries are cached as
    // they are used, as x86 paging-structure caches do.
    let parentState = 0;
    let m = 0;
    let leafTblW = true;
    let leafRecorded = false;
    for (;;) {
      if (!known) {
        if (nested) {
          if (tblGfn >= pe.slLimitPages) return this.reason(FR.SFL_5_FL_ADDR_BEYOND_MGAW_NESTED);
          tblPfn = this.slTranslate(pe, tblGfn, level === top ? SL_FL_TABLE_TOP : SL_FL_TABLE, false, false);
          if (tblPfn < 0) return XLATE_FAULT;
          tblW = this.slW;
        } else {
          tblPfn = tblGfn;
          tblW = true;
        }
        if (parentState !== 0) {
          const f = (tblW ? PSC_TBL_W : 0) | (rw ? PSC_RW : 0) | (us ? PSC_US : 0) | (xd ? PSC_XD : 0);
          if (parentState === 1) bucket.pscInsert(level + 1, vpn, tblPfn, tblGfn, f);
          else {
            this.dPscLevel[m] = level + 1;
            this.dPscTblPfn[m] = tblPfn;
            this.dPscTblGfn[m] = tblGfn;
            this.dPscFlags[m] = f;
            m++;
          }
        }
      }
      known = false;
      idx = level <= 3 ? (vlo >>> (9 * (level - 1))) & 511 : (vhi >>> (9 * (level - 4))) & 511;
      const rel = tblPfn - sb;
      if (rel >= 0 && rel < sn) {
        const i = rel * 1024 + idx * 2;
        lo = u[i]!;
        hi = u[i + 1]!;
      } else {
        const s = port.spanPage(tblPfn);
        if (s !== null) {
          u = this.flU = s;
          sb = this.flSpanPfn = port.spanPfn;
          sn = this.flSpanPages = port.spanPages;
          const i = (tblPfn - sb) * 1024 + idx * 2;
          lo = u[i]!;
          hi = u[i + 1]!;
        } else {
          if (!port.load(tblPfn * 4096 + idx * 8)) return this.reason(level === top ? FR.SFL_4_FL_PML4_ACCESS : FR.SFL_1_FL_ENTRY_ACCESS);
          lo = port.lo;
          hi = port.hi;
        }
      }
      if ((lo & FL_P) === 0) return this.reason(FR.SFL_2_FL_ENTRY_NOT_PRESENT);
      const ps = (lo & FL_PS) !== 0 && (level === 2 || level === 3);
      const mi = level * 2 + (ps ? 1 : 0);
      if ((lo & rsvLo[mi]!) !== 0 || (hi & rsvHi[mi]!) !== 0) return this.reason(FR.SFL_3_FL_ENTRY_RESERVED);
      if ((lo & FL_RW) === 0) rw = false;
      if ((lo & FL_US) === 0) us = false;
      if (pe.nxe && (hi & FL_XD_HI) !== 0) xd = true;
      const bits = ((lo & FL_A) === 0 ? FL_A : 0) | (pe.eafe && (lo & FL_EA) === 0 ? FL_EA : 0);
      if (bits !== 0) {
        if (!tblW) return this.reason(FR.SFL_8_FL_ENTRY_WRITE_NESTED);
        if (!pe.pwsnp) return this.reason(FR.SFL_10_FL_AD_UPDATE_NO_SNOOP);
        this.flEntHpa[n] = tblPfn * 4096 + idx * 8;
        this.flEntBits[n] = bits;
        this.flTblGfn[n] = tblGfn;
        n++;
      }
      if (level === 1 || ps) {
        leafTblW = tblW;
        leafRecorded = bits !== 0;
        break;
      }
      parentState = bits === 0 ? 1 : 2;
      tblGfn = (hi & PTE_ADDR_HI) * TWO_20 + (lo >>> 12);
      level--;
    }
    // Leaf: output page and permission checks (VT-d spec §3.6, in the order of QEMU intel_iommu.c's first-stage walk).
    let gfn: number;
    if (level === 1) gfn = (hi & PTE_ADDR_HI) * TWO_20 + (lo >>> 12);
    else if (level === 2) gfn = (hi & PTE_ADDR_HI) * TWO_20 + ((lo & PTE_ADDR_LO_2M) >>> 12) + (vlo & 511);
    else gfn = (hi & PTE_ADDR_HI) * TWO_20 + ((lo & PTE_ADDR_LO_1G) >>> 12) + (vlo & 262143);
    if (!priv && !us) return this.reason(FR.SGN_2_US_SUPERVISOR_ONLY);
    if (write && (!priv || pe.wpe) && !rw) return this.reason(FR.SGN_6_NO_WRITE);
    if (exec && (xd || (priv && pe.smep && us))) return this.reason(FR.SGN_3_NO_EXECUTE);
    // The leaf's D update joins its A/EA update (or is recorded alone).
    if (write && (lo & FL_D) === 0) {
      if (!leafTblW) return this.reason(FR.SFL_8_FL_ENTRY_WRITE_NESTED);
      if (!pe.pwsnp) return this.reason(FR.SFL_10_FL_AD_UPDATE_NO_SNOOP);
      if (leafRecorded) this.flEntBits[n - 1] |= FL_D;
      else {
        this.flEntHpa[n] = tblPfn * 4096 + idx * 8;
        this.flEntBits[n] = FL_D;
        this.flTblGfn[n] = tblGfn;
        n++;
      }
    }
    let opfn = gfn;
    let outLevel = level;
    let slR = true;
    let slW = true;
    let slX = true;
    let slDirty = true;
    if (nested) {
      // gfn · 4096 + off reaches the SL limit exactly when gfn does (the limit is page aligned).
      if (gfn >= pe.slLimitPages) return this.reason(FR.SGN_5_SL_ADDR_BEYOND_MAX);
      opfn = this.slTranslate(pe, gfn, SL_REQUEST, write, exec);
      if (opfn < 0) return XLATE_FAULT;
      if (this.slLevel < outLevel) outLevel = this.slLevel;
      slR = this.slR;
      slW = this.slW;
      slX = this.slX;
      slDirty = this.slDirty;
    }
    const hpa = opfn * 4096 + off;
    if (hpa >= INTERRUPT_RANGE_BASE && hpa < INTERRUPT_RANGE_END) return this.reason(FR.SGN_8_INTERRUPT_ADDRESS);
    // A/D updates, top to leaf.
    for (let i = 0; i < n; i++) {
      if (nested && pe.slade && this.slTranslate(pe, this.flTblGfn[i]!, SL_FL_TABLE_WRITE, true, false) < 0) return XLATE_FAULT;
      if (!port.orLo(this.flEntHpa[i]!, this.flEntBits[i]!)) return this.reason(FR.SFL_10_FL_AD_UPDATE_NO_SNOOP);
    }
    for (let i = 0; i < m; i++) bucket.pscInsert(this.dPscLevel[i]!, vpn, this.dPscTblPfn[i]!, this.dPscTblGfn[i]!, this.dPscFlags[i]!);
    // IOTLB fill: the combined page is the smaller of the FL and SL pages.
    const inPage = pageOffset(vpn, outLevel) + off;
    this.extent = LEVEL_PAGE_BYTES[outLevel]! - inPage;
    const dirty = (write || (lo & FL_D) !== 0) && slDirty;
    const mk = (us ? 1 : 0) | (rw ? 2 : 0) | (xd ? 4 : 0) | (slR ? 8 : 0) | (slW ? 16 : 0) | (slX ? 32 : 0) | (dirty ? 64 : 0);
    const memo = pe.allowKey + mk;
    let allow = FL_ALLOW_MEMO[memo]!;
    if (allow < 0) FL_ALLOW_MEMO[memo] = allow = firstLevelAllow(pe, us, rw, xd, slR, slW, slX, dirty);
    this.fill(ctx, vpn, outLevel, hpa - inPage, allow);
    return hpa;
  }
}

/** Slot of (rid, pasid) in the engine's context cache. */
function ctxSlotOf(rid: number, pasid: number): number {
  return (Math.imul(rid, 0x9e3779b1) + pasid) & CTX_CACHE_MASK;
}

/** Byte offset of page `vpn` inside the level-`level` page holding it (level 1 → 0). */
function pageOffset(vpn: number, level: number): number {
  if (level === 1) return 0;
  const n = LEVEL_PAGES[level]!;
  return (vpn < TWO_31 ? vpn & (n - 1) : vpn % n) * 4096;
}

/**
 * Access classes a first-level / nested translation permits, with the same rules as the walk's
 * checks (so an IOTLB hit never permits what a walk would refuse). A write class needs the leaf
 * already dirty (FL D, and SL D with SLADE); otherwise the write walks again to set D.
 */
export function firstLevelAllow(pe: CachedPasidEntry, us: boolean, rw: boolean, xd: boolean, slR: boolean, slW: boolean, slX: boolean, dirty: boolean): number {
  let allow = 0;
  for (let c = 0; c < CLASS_COUNT; c++) {
    const priv = c >= 3;
    const kind = c % 3; // 0 read, 1 write, 2 exec
    if (priv && !pe.sre) continue;
    if (!priv && !us) continue;
    if (kind === 1) {
      if ((!priv || pe.wpe) && !rw) continue;
      if (!slW || !dirty) continue;
    } else {
      if (!slR) continue;
      if (kind === 2 && (!pe.ere || xd || (priv && pe.smep && us) || (pe.slee && !slX))) continue;
    }
    allow |= 1 << c;
  }
  return allow;
}
