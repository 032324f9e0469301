/**
 * A Linux-like intel-iommu guest driver (docs/design.md §3.3), built only on the GuestHandle's register
 * and memory accesses — it programs the virtual VT-d exactly as a guest kernel does, so it
 * exercises the device model end to end. The sequences follow Linux drivers/iommu/intel
 * (iommu.c, pasid.c, dmar.c, prq.c; VT-d spec rev. 5.10 ch. 6 "Caching Translation Information",
 * ch. 7 "Address Translation Faults", ch. 9 "Translation Structure Formats"):
 *
 * - init: read CAP/ECAP (scalable mode, PASID, QI, FLTS required); root table → RTADDR with
 *   TTM = scalable, GCMD.SRTP, wait GSTS.RTPS; invalidation queue of 256-bit descriptors
 *   (IQA with DW = 1, QS = 1: 8 KiB, 256 descriptors, as `__dmar_enable_qi` with ECAP.SMTS),
 *   GCMD.QIE; page request queue (PQA, PQH = PQT = 0) when ECAP.PRS; global context-cache,
 *   PASID-cache and IOTLB flushes; GCMD.TE.
 * - attachDevice: PASID directory (PDTS), a pass-through RID_PASID entry (PASID 0), the
 *   scalable-mode context entry (PASIDE, DTE, PRE when the device has PRI, PDTS), then a
 *   device-selective context-cache flush and the RID_PASID entry's pasid_flush_caches.
 * - bindProcess (SVA bind): PASID from VCMD ALLOC_PASID (or a given one), a first-level PASID
 *   entry (FLPTR, FLPM, PGTT 1, DID, AW, SRE only when asked), then `pasid_flush_caches`:
 *   PASID-selective PASID-cache flush + all-in-PASID PIOTLB flush + wait with status write.
 * - unbind (`intel_pasid_tear_down_entry`): clear the entry, PASID-selective PASID-cache flush,
 *   all-in-PASID PIOTLB flush, wait (no device-TLB flush in caching mode), then VCMD FREE_PASID.
 * - flushRange: page-selective-within-PASID PIOTLB flush after an unmap (qi_flush_piotlb).
 * - submit: descriptors + one wait (SW, status QI_DONE = 2) per submission, IQT write, poll the
 *   status dword; on IQE, as qi_check_fault: overwrite the bad slot with the wait, clear IQE,
 *   and fail with EINVAL.
 */
import { fail, VsvaError } from '../../src/errors.js';
import { decodeCap, decodeEcap } from '../../src/vtd/cap-ecap.js';
import { encodeDescriptor, InvDescType, PC_G, PIOTLB_G, CC_G, IOTLB_G, PGRP_RESP_CODE, PASID_DEVICE_IOTLB_G } from '../../src/vtd/descriptors.js';
import { decodeFaultRecord, type FaultRecord } from '../../src/vtd/fault.js';
import { encode } from '../../src/vtd/layout.js';
import { decodePageRequest, pageGroupResponseFor, PAGE_REQ_DSC_SIZE, type PageRequestFields, type PageResponseCode } from '../../src/vtd/page-request.js';
import { PASID_DIR_ENTRY, PASID_TABLE_ENTRY, PGTT, pasidDirIndex, pasidTableIndex, PASID_ENTRY_SIZE } from '../../src/vtd/pasid-entry.js';
import { DMAR, FSTS, GCMD, GSTS, PRS } from '../../src/vtd/registers.js';
import { RTADDR_SMT, smContextEntryLayout, pasidDirEntries, SM_CONTEXT_ENTRY_SIZE, smContextIndex } from '../../src/vtd/root-context.js';
import { decodeVcrsp, encodeVcmd, VCMD_CMD, VCMD_LAYOUTS, type VcmdLayoutName } from '../../src/vtd/vcmd.js';
import { parseBdf } from '../../src/pci.js';
import { PAGE_SIZE, readU32, readWords, writeU32, writeU64, writeWords, type GuestMemory, type GuestRegisters } from './guest-memory.js';
import type { FlushRange, GuestProcess } from './guest-process.js';
import type { PageAllocator } from './page-allocator.js';

export type GuestIommuHandle = GuestMemory & GuestRegisters;

/** Linux's QI wait status values. */
const QI_IN_USE = 1;
const QI_DONE = 2;
/** Linux FLPT_DEFAULT_DID: the domain ID of pass-through / RID_PASID entries. */
export const FLPT_DEFAULT_DID = 1;
/** Domain ID the driver gives SVA (first-level) PASID entries by default. */
export const SVA_DID = 2;
/** Descriptors in the queue: 8 KiB of 256-bit descriptors (QS = 1, DW = 1). */
const QI_LENGTH = 256;
const POLL_LIMIT = 100_000;

/** Let I/O run between polls: a spinning vCPU must not starve the host's replies. */
function relax(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export interface VtdDriverOptions {
  /** Virtual command layout the guest kernel speaks (its era): '3.1' (default) or '3.3'. */
  vcmd?: VcmdLayoutName;
  /** PASID directory size field: 2^(PDTS + 7) directory entries. Default 7 (all 20-bit PASIDs). */
  pdts?: number;
  /** Page request queue order: 2^order pages. Default 0 (128 requests). */
  prqOrder?: number;
}

export interface AttachOptions {
  /** Enable page requests (context PRE). Default false. */
  pri?: boolean;
  /** Enable the device-TLB (context DTE). Default false. */
  ats?: boolean;
}

export interface BindOptions {
  /** Use this PASID instead of allocating one through VCMD. */
  pasid?: number;
  /** Domain ID of the entry. Default SVA_DID. */
  did?: number;
  /** Supervisor requests (SRE; with WPE). Default false. */
  supervisor?: boolean;
  /** PASID-entry FPD. Default false. */
  fpd?: boolean;
}

export interface PageRequest {
  readonly rid: number;
  readonly pasid: number | undefined;
  readonly addr: bigint;
  readonly read: boolean;
  readonly write: boolean;
  readonly exec: boolean;
  readonly priv: boolean;
  readonly lastInGroup: boolean;
  readonly prgi: number;
  readonly fields: PageRequestFields;
}

export type PageRequestHandler = (req: PageRequest) => Promise<'success' | 'invalid'> | 'success' | 'invalid';

interface DeviceState {
  rid: number;
  dir: bigint;
  dirPages: number;
  pdts: number;
  tables: Map<number, bigint>;
  pri: boolean;
  ats: boolean;
}

export class VtdDriver {
  readonly cap: bigint;
  readonly ecap: bigint;
  private root = 0n;
  private iq = 0n;
  private iqTail = 0;
  private status = 0n;
  private prq = 0n;
  private prqSize = 0;
  private readonly devices = new Map<number, DeviceState>();
  /** PASIDs bound per device RID (for device-TLB flushes of ATS-enabled devices). */
  private readonly bound = new Map<number, Set<number>>();
  /** PASIDs this driver allocated through VCMD. */
  private readonly vcmdPasids = new Set<number>();
  private readonly contexts = new Map<number, bigint>();

  private constructor(
    readonly h: GuestIommuHandle,
    readonly alloc: PageAllocator,
    cap: bigint,
    ecap: bigint,
    readonly vcmdLayout: VcmdLayoutName,
    private readonly pdts: number,
  ) {
    this.cap = cap;
    this.ecap = ecap;
  }

  /** Bring the IOMMU up as intel-iommu's init_dmars does. */
  static async init(h: GuestIommuHandle, alloc: PageAllocator, opts: VtdDriverOptions = {}): Promise<VtdDriver> {
    const cap = await h.readq(DMAR.CAP);
    const ecap = await h.readq(DMAR.ECAP);
    const e = decodeEcap(ecap).fields;
    if (e.SMTS !== 1n || e.PASID !== 1n || e.QI !== 1n || e.FLTS !== 1n) fail('EOPNOTSUPP', 'the IOMMU lacks scalable mode, PASID, QI or first-level translation');
    const d = new VtdDriver(h, alloc, cap, ecap, opts.vcmd ?? '3.1', opts.pdts ?? 7);
    await d.enable(opts.prqOrder ?? 0);
    return d;
  }

  get hasVcmd(): boolean {
    return decodeEcap(this.ecap).fields.VCS === 1n;
  }

  get hasPrs(): boolean {
    return decodeEcap(this.ecap).fields.PRS === 1n;
  }

  private async enable(prqOrder: number): Promise<void> {
    const h = this.h;
    this.root = await this.alloc.alloc(1);
    await h.writeq(DMAR.RTADDR, this.root | RTADDR_SMT);
    await this.gcmd(GCMD.SRTP, GSTS.RTPS, true);
    // Invalidation queue: 256-bit descriptors, QS = 1.
    this.iq = await this.alloc.alloc(2, { align: 2 });
    this.status = await this.alloc.alloc(1);
    this.iqTail = 0;
    await h.writeq(DMAR.IQT, 0n);
    await h.writeq(DMAR.IQA, this.iq | 0x800n | 1n);
    await this.gcmd(GCMD.QIE, GSTS.QIES, true);
    if (this.hasPrs) {
      this.prqSize = PAGE_SIZE << prqOrder;
      this.prq = await this.alloc.alloc(1 << prqOrder, { align: 1 << prqOrder });
      await h.writeq(DMAR.PQH, 0n);
      await h.writeq(DMAR.PQT, 0n);
      await h.writeq(DMAR.PQA, this.prq | BigInt(prqOrder));
    }
    // Caching mode: global context-cache, PASID-cache and IOTLB flushes before enabling.
    await this.submit([
      encodeDescriptor(InvDescType.CC, { G: CC_G.GLOBAL }, 1),
      encodeDescriptor(InvDescType.PC, { G: PC_G.GLOBAL }, 1),
      encodeDescriptor(InvDescType.IOTLB, { G: IOTLB_G.GLOBAL, DR: 1, DW: 1 }, 1),
    ]);
    await this.gcmd(GCMD.TE, GSTS.TES, true);
  }

  /** Issue a GCMD command as Linux does (status | command) and wait for its GSTS bit. */
  private async gcmd(cmd: number, status: number, on: boolean): Promise<void> {
    const sts = await this.h.readl(DMAR.GSTS);
    const persistent = sts & (GSTS.TES | GSTS.QIES | GSTS.IRES | GSTS.CFIS);
    const value = on ? (persistent | cmd) >>> 0 : (persistent & ~cmd) >>> 0;
    await this.h.writel(DMAR.GCMD, value);
    for (let i = 0; i < POLL_LIMIT; i++) {
      const s = await this.h.readl(DMAR.GSTS);
      if (((s & status) !== 0) === on) return;
      await relax();
    }
    fail('ETIMEDOUT', `GSTS bit 0x${status.toString(16)} did not follow GCMD`);
  }

  async disableTranslation(): Promise<void> {
    await this.gcmd(GCMD.TE, GSTS.TES, false);
  }

  // ---- invalidation queue ---------------------------------------------------------------------

  /**
   * Submit descriptors (256-bit, 4 words each) followed by a wait descriptor with status write,
   * and wait for the status. On an invalidation queue error the bad slot is replaced by the wait
   * (Linux qi_check_fault) and EINVAL is thrown.
   */
  async submit(descs: readonly (readonly bigint[])[]): Promise<void> {
    if (descs.length + 1 >= QI_LENGTH) fail('EINVAL', `${descs.length} descriptors do not fit the queue`);
    const waitIndex = (this.iqTail + descs.length) % QI_LENGTH;
    const first = this.iqTail;
    await writeU32(this.h, this.status, QI_IN_USE);
    const wait = encodeDescriptor(InvDescType.WAIT, { SW: 1, FN: 1, STATUS_DATA: QI_DONE, STATUS_ADDR: this.status >> 2n }, 1);
    for (const d of [...descs, wait]) {
      if (d.length !== 4) fail('EINVAL', 'descriptors in a 256-bit queue have 4 words');
      await writeWords(this.h, this.iq + BigInt(this.iqTail * 32), d);
      this.iqTail = (this.iqTail + 1) % QI_LENGTH;
    }
    await this.h.writel(DMAR.IQT, this.iqTail << 5);
    for (let i = 0; i < POLL_LIMIT; i++) {
      if ((await readU32(this.h, this.status)) === QI_DONE) return;
      const fsts = await this.h.readl(DMAR.FSTS);
      if ((fsts & FSTS.IQE) !== 0) {
        const head = Number((await this.h.readq(DMAR.IQH)) >> 5n) % QI_LENGTH;
        const inOurs = (head - first + QI_LENGTH) % QI_LENGTH <= (waitIndex - first + QI_LENGTH) % QI_LENGTH;
        if (inOurs) await writeWords(this.h, this.iq + BigInt(head * 32), wait);
        await this.h.writel(DMAR.FSTS, FSTS.IQE);
        fail('EINVAL', `invalidation queue error at descriptor ${head}`);
      }
      await relax();
    }
    fail('ETIMEDOUT', 'invalidation wait descriptor did not complete');
  }

  // ---- devices --------------------------------------------------------------------------------

  /** Set up a device's PASID directory and scalable-mode context entry. */
  async attachDevice(bdf: string, opts: AttachOptions = {}): Promise<void> {
    const rid = parseBdf(bdf);
    if (this.devices.has(rid)) fail('EEXIST', `device ${bdf} is already attached`);
    const bus = rid >> 8;
    const devfn = rid & 0xff;
    const dirEntries = pasidDirEntries(this.pdts);
    const dirPages = Math.max(1, (dirEntries * 8) / PAGE_SIZE);
    const dir = await this.alloc.alloc(dirPages);
    const dev: DeviceState = { rid, dir, dirPages, pdts: this.pdts, tables: new Map(), pri: opts.pri === true, ats: opts.ats === true || opts.pri === true };
    this.devices.set(rid, dev);
    // RID_PASID (PASID 0): pass-through, as Linux's identity domain.
    const pt = encode(PASID_TABLE_ENTRY, { P: 1, PGTT: PGTT.PT, AW: 2, DID: FLPT_DEFAULT_DID });
    await this.writePasidEntry(dev, 0, pt);
    // Root entry → context table.
    const upper = (devfn & 0x80) !== 0;
    let ctxTable = this.contexts.get(bus * 2 + (upper ? 1 : 0));
    if (ctxTable === undefined) {
      ctxTable = await this.alloc.alloc(1);
      this.contexts.set(bus * 2 + (upper ? 1 : 0), ctxTable);
      const rootEntry = this.root + BigInt(bus * 16) + (upper ? 8n : 0n);
      await writeU64(this.h, rootEntry, ctxTable | 1n);
    }
    const ctx = encode(smContextEntryLayout(48), {
      P: 1,
      PASIDE: 1,
      DTE: dev.ats,
      PRE: dev.pri,
      PDTS: this.pdts,
      PASIDDIRPTR: dir >> 12n,
      RID_PASID: 0,
    });
    await writeWords(this.h, ctxTable + BigInt(smContextIndex(devfn) * SM_CONTEXT_ENTRY_SIZE), ctx);
    await this.submit([encodeDescriptor(InvDescType.CC, { G: CC_G.DEVICE, SID: rid, DID: FLPT_DEFAULT_DID }, 1)]);
    await this.pasidFlushCaches(FLPT_DEFAULT_DID, 0);
  }

  private device(bdf: string): DeviceState {
    const d = this.devices.get(parseBdf(bdf));
    if (d === undefined) fail('ENODEV', `device ${bdf} is not attached`);
    return d;
  }

  /** GPA of a PASID's 64-byte entry, creating its PASID table when needed. */
  async pasidEntryGpa(bdf: string, pasid: number): Promise<bigint> {
    return this.entryGpa(this.device(bdf), pasid);
  }

  private async entryGpa(dev: DeviceState, pasid: number): Promise<bigint> {
    const di = pasidDirIndex(pasid);
    if (di >= pasidDirEntries(dev.pdts)) fail('EINVAL', `PASID ${pasid} is beyond the PASID directory`);
    let table = dev.tables.get(di);
    if (table === undefined) {
      table = await this.alloc.alloc(1);
      dev.tables.set(di, table);
      await writeU64(this.h, dev.dir + BigInt(di * 8), encode(PASID_DIR_ENTRY, { P: 1, SMPTBLPTR: table >> 12n })[0]!);
    }
    return table + BigInt(pasidTableIndex(pasid) * PASID_ENTRY_SIZE);
  }

  /** Write a PASID entry's 8 words (no flush). */
  async writePasidEntry(devOrBdf: DeviceState | string, pasid: number, words: readonly bigint[]): Promise<void> {
    const dev = typeof devOrBdf === 'string' ? this.device(devOrBdf) : devOrBdf;
    await writeWords(this.h, await this.entryGpa(dev, pasid), words);
  }

  /** Linux pasid_flush_caches in caching mode: PASID-selective PC flush + all-in-PASID PIOTLB + wait. */
  async pasidFlushCaches(did: number, pasid: number): Promise<void> {
    await this.submit([
      encodeDescriptor(InvDescType.PC, { G: PC_G.PASID_SI, DID: did, PASID: pasid }, 1),
      encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.ALL_IN_PASID, DID: did, PASID: pasid }, 1),
    ]);
  }

  // ---- virtual commands -------------------------------------------------------------------------

  private async vcmd(cmd: number, operand: number): Promise<{ sc: number; pasid: number }> {
    if (!this.hasVcmd) fail('EOPNOTSUPP', 'the IOMMU has no virtual command interface (ECAP.VCS)');
    const o = VCMD_LAYOUTS[this.vcmdLayout].offsets;
    await this.h.writeq(o.VCMD, encodeVcmd(this.vcmdLayout, cmd, operand));
    for (let i = 0; i < POLL_LIMIT; i++) {
      const r = decodeVcrsp(this.vcmdLayout, await this.h.readq(o.VCRSP));
      if (!r.ip) return { sc: r.sc, pasid: r.pasid };
      await relax();
    }
    fail('ETIMEDOUT', 'VCRSP.IP did not clear');
  }

  /** VCMD ALLOC_PASID. @throws VsvaError ENOSPC when the IOMMU reports no PASID available. */
  async allocPasid(): Promise<number> {
    const r = await this.vcmd(VCMD_CMD.ALLOC_PASID, 0);
    if (r.sc !== 0) throw new VsvaError('ENOSPC', `VCMD ALLOC_PASID status ${r.sc}`);
    this.vcmdPasids.add(r.pasid);
    return r.pasid;
  }

  /** VCMD FREE_PASID. @throws VsvaError EINVAL on an error status. */
  async freePasid(pasid: number): Promise<void> {
    const r = await this.vcmd(VCMD_CMD.FREE_PASID, pasid);
    this.vcmdPasids.delete(pasid);
    if (r.sc !== 0) throw new VsvaError('EINVAL', `VCMD FREE_PASID ${pasid} status ${r.sc}`);
  }

  /** The raw VCMD status of a command (for tests of the status codes). */
  async vcmdStatus(cmd: number, operand = 0): Promise<{ sc: number; pasid: number }> {
    return this.vcmd(cmd, operand);
  }

  // ---- SVA ------------------------------------------------------------------------------------

  /** The first-level PASID entry words for a process (Linux intel_pasid_setup_first_level). */
  firstLevelEntry(proc: GuestProcess, opts: BindOptions = {}): bigint[] {
    const sre = opts.supervisor === true;
    return encode(PASID_TABLE_ENTRY, {
      P: 1,
      FPD: opts.fpd === true,
      PGTT: PGTT.FLT,
      AW: 2,
      DID: opts.did ?? SVA_DID,
      FLPTR: proc.pgd >> 12n,
      FLPM: proc.levels === 5 ? 1 : 0,
      SRE: sre,
      WPE: sre,
      NXE: 1,
    });
  }

  /** SVA bind of a process to a device: returns the PASID. */
  async bindProcess(bdf: string, proc: GuestProcess, opts: BindOptions = {}): Promise<number> {
    const dev = this.device(bdf);
    const pasid = opts.pasid ?? (await this.allocPasid());
    await this.writePasidEntry(dev, pasid, this.firstLevelEntry(proc, opts));
    await this.pasidFlushCaches(opts.did ?? SVA_DID, pasid);
    let set = this.bound.get(dev.rid);
    if (set === undefined) this.bound.set(dev.rid, (set = new Set()));
    set.add(pasid);
    return pasid;
  }

  /** Tear the PASID down (intel_pasid_tear_down_entry) and free it when VCMD allocated it. */
  async unbind(bdf: string, pasid: number, opts: { did?: number; free?: boolean } = {}): Promise<void> {
    const dev = this.device(bdf);
    await writeWords(this.h, await this.entryGpa(dev, pasid), new Array(8).fill(0n));
    await this.pasidFlushCaches(opts.did ?? SVA_DID, pasid);
    this.bound.get(dev.rid)?.delete(pasid);
    if (opts.free !== false && this.vcmdPasids.has(pasid)) await this.freePasid(pasid);
  }

  /**
   * Flush after an unmap: page-selective-within-PASID IOTLB flush (qi_flush_piotlb), then a
   * PASID-based device-TLB flush for every ATS-enabled device the PASID is bound on
   * (qi_flush_dev_iotlb_pasid: S = 1 with the size encoded in the low address bits).
   */
  async flushRange(pasid: number, range: FlushRange, did = SVA_DID): Promise<void> {
    const descs = [encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.PSI_IN_PASID, DID: did, PASID: pasid, AM: range.am, ADDR: range.addr >> 12n }, 1)];
    for (const dev of this.devices.values()) {
      if (!dev.ats || !this.bound.get(dev.rid)?.has(pasid)) continue;
      descs.push(pasidDevTlbDescriptor(dev.rid, pasid, range));
    }
    await this.submit(descs);
  }

  // ---- page requests and faults -----------------------------------------------------------------

  /**
   * Service the page request queue (Linux prq_event_thread): clear PPR, hand each request to
   * `handler`, answer each last-in-group request with a page group response (success, or
   * invalid), advance PQH, clear PRO if set. Returns the requests seen.
   */
  async servicePageRequests(handler: PageRequestHandler): Promise<PageRequest[]> {
    if (!this.hasPrs || this.prqSize === 0) return [];
    await this.h.writel(DMAR.PRS, PRS.PPR);
    const tail = Number((await this.h.readq(DMAR.PQT)) & 0x7ffe0n);
    let head = Number((await this.h.readq(DMAR.PQH)) & 0x7ffe0n);
    const seen: PageRequest[] = [];
    const responses: bigint[][] = [];
    while (head !== tail) {
      const f = decodePageRequest(await readWords(this.h, this.prq + BigInt(head), 4)).fields;
      const req: PageRequest = {
        rid: Number(f.RID),
        pasid: f.PP === 1n ? Number(f.PASID) : undefined,
        addr: f.ADDR << 12n,
        read: f.RDR === 1n,
        write: f.WRR === 1n,
        exec: f.ER === 1n,
        priv: f.PMR === 1n,
        lastInGroup: f.LPIG === 1n,
        prgi: Number(f.PRGI),
        fields: f,
      };
      seen.push(req);
      const verdict = await handler(req);
      if (req.lastInGroup) {
        const code: PageResponseCode = verdict === 'success' ? PGRP_RESP_CODE.SUCCESS : PGRP_RESP_CODE.INVALID;
        responses.push(pageGroupResponseFor(f, code));
      }
      head = (head + PAGE_REQ_DSC_SIZE) % this.prqSize;
    }
    await this.h.writeq(DMAR.PQH, BigInt(head));
    if (responses.length > 0) await this.submit(responses);
    if (((await this.h.readl(DMAR.PRS)) & PRS.PRO) !== 0) await this.h.writel(DMAR.PRS, PRS.PRO);
    return seen;
  }

  /**
   * Read and clear the fault recording registers (Linux dmar_fault): every record with F set,
   * then FSTS.PFO/PPF cleared.
   */
  async readFaults(): Promise<(FaultRecord & { fault: boolean })[]> {
    const c = decodeCap(this.cap).fields;
    const base = Number(c.FRO) * 16;
    const n = Number(c.NFR) + 1;
    const out: (FaultRecord & { fault: boolean })[] = [];
    for (let i = 0; i < n; i++) {
      const off = base + i * 16;
      const hi = await this.h.readq(off + 8);
      if (hi >> 63n === 0n) continue;
      const lo = await this.h.readq(off);
      out.push(decodeFaultRecord([lo, hi]));
      await this.h.writel(off + 12, 0x8000_0000);
    }
    await this.h.writel(DMAR.FSTS, FSTS.PFO | FSTS.PPF | FSTS.PRO);
    return out;
  }
}

/**
 * PASID-based device-TLB invalidation of `range` (VT-d 6.5.2.6; Linux qi_flush_dev_iotlb_pasid):
 * one page with S = 0; 2^am pages with S = 1 and the size encoded in ADDR's low bits (the
 * address with bits 12 + am - 2 … 12 set).
 */
export function pasidDevTlbDescriptor(sid: number, pasid: number, range: FlushRange): bigint[] {
  let addr = range.addr;
  if (range.am > 0) addr |= (1n << BigInt(12 + range.am - 1)) - 1n;
  return encodeDescriptor(InvDescType.PASID_DEVICE_IOTLB, { G: PASID_DEVICE_IOTLB_G.SELECTED, SID: sid, PASID: pasid, S: range.am > 0 ? 1 : 0, ADDR: addr >> 12n }, 1);
}
