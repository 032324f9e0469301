/**
 * The invalidation queue (VT-d spec rev. 5.10 §6.5.2 "Queued Invalidation Interface", §11.4.9
 * "Invalidation Queue Interface"; docs/design.md §3.1):
 * IQA (base, DW, QS), IQT written by software, IQH advanced by the model, descriptors of 128 or
 * 256 bits fetched from guest RAM and checked with decodeDescriptor.
 *
 * Error semantics (QEMU `vtd_handle_inv_queue_error`; §6.5.2.11 "Hardware Handling of Queued
 * Invalidation Interface Errors", IQEI codes of src/vtd/registers.ts):
 * - IQT bit 4 set with DW = 1 → IQE (IQEI 6, tail misaligned); tail ≥ queue size → IQE (IQEI 1);
 * - a descriptor outside guest RAM → IQEI 2; unknown type → IQEI 3; reserved bit set → IQEI 4;
 *   a 256-bit-only type in a 128-bit queue → IQEI 5;
 * - on an error FSTS.IQE is set, IQH is left at the bad descriptor (descriptors before it took
 *   effect), and nothing is fetched while IQE is set. When software clears IQE, fetching
 *   resumes from IQH (as hardware does — Linux's qi_check_fault rewrites the bad slot, then
 *   clears IQE); an IQT write then also resumes.
 *
 * Fetching: the whole range from IQH to IQT is read from guest RAM in one access per contiguous
 * piece (at most two when the ring wraps), clamped to guest RAM; the first descriptor outside RAM
 * is the fetch error. Descriptors are then decoded one at a time in order. A run of valid
 * page-selective PASID-based IOTLB descriptors (0x6) of one DID, PASID and IH naming adjacent
 * blocks goes to the sink's `piotlbPages` as one page range (psiRunLength states when that is
 * exactly equivalent; a trace listener still gets one event per descriptor). Any other PASID-based
 * IOTLB descriptor with its reserved bits clear goes to the sink's allocation-free `piotlb` (when
 * it has one, and no trace listener wants every descriptor); every other descriptor — and any
 * with a reserved bit set — goes through decodeDescriptor. IQH is written
 * when the run ends, stops at an error, or awaits host work (nothing else can read it meanwhile:
 * the VM serialises register accesses, and the run is one of them).
 *
 * Wait descriptors are handled here: first every earlier descriptor's effect reaches the host
 * (sink.flush), then SW writes the 32-bit status data to guest RAM and IF sets ICS.IWC and raises
 * the invalidation completion event when IWC was clear. FN needs nothing more (descriptors are processed in order,
 * each completing before the next); PD is satisfied because page requests are written to the
 * page request queue synchronously when the host reports them.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { decodeDescriptor, descriptorBytes, InvDescType, PIOTLB_DESC, PIOTLB_G, type DecodedDescriptor } from '../../src/vtd/descriptors.js';
import { hex64, wordsFromBytes } from '../../src/vtd/layout.js';
import { FSTS, GSTS, ICS, IQA, IQEI, VTD_IQT_QT_256_RSV_BIT, iqEntries, iqIndexFromReg, iqRegFromIndex, type IqeiCode } from '../../src/vtd/registers.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { FaultRecorder } from './fault-recorder.js';
import type { EventInterrupts } from './interrupts.js';
import { narrow } from './narrow.js';
import type { RegisterFile } from './register-file.js';

export type ValidDescriptor = Extract<DecodedDescriptor, { kind: 'descriptor' }>;

export interface DescriptorSink {
  /**
   * Carry out one valid descriptor other than a wait (host work may be batched). Returns an
   * IQEI code when the descriptor is invalid for reasons beyond its reserved bits (a
   * granularity the type does not define, AM above MAMV); the queue then stops at it.
   */
  handle(d: ValidDescriptor): Promise<IqeiCode | undefined>;
  /**
   * Optional fast path for a PASID-based IOTLB descriptor (0x6) whose reserved bits are clear,
   * given as its fields (ADDR as the 64-bit address in two 32-bit halves, bits 11:0 clear): the
   * same effect and result as `handle` of its decoded form, synchronously.
   */
  piotlb?(g: number, did: number, pasid: number, am: number, ih: boolean, addrLo: number, addrHi: number): IqeiCode | undefined;
  /**
   * Optional fast path for a run of page-selective PASID-based IOTLB descriptors (0x6, G = 3,
   * reserved bits clear, AM ≤ CAP.MAMV) of one DID, PASID and IH whose blocks are adjacent, in
   * order: together they name the 4 KiB pages [firstPage, firstPage + pages). The same effect as
   * `handle` of each of them, synchronously (none of them can be invalid).
   */
  piotlbPages?(did: number, pasid: number, ih: boolean, firstPage: number, pages: number): void;
  /** Make every earlier descriptor's effect reach the host. */
  flush(): Promise<void>;
}

export class InvalidationQueue {
  readonly counters = { runs: 0, descriptors: 0, waits: 0, errors: 0, statusWrites: 0 };
  private running: Promise<void> = Promise.resolve();
  /** Descriptors of the current run as read from guest RAM (reused between runs). */
  private fetched: Buffer = Buffer.alloc(0);
  private fetchedView = new DataView(this.fetched.buffer, this.fetched.byteOffset, 0);

  constructor(
    private readonly regs: RegisterFile,
    private readonly ram: GuestRam,
    private readonly faults: FaultRecorder,
    private readonly interrupts: EventInterrupts,
    private readonly sink: DescriptorSink,
    private readonly trace: TraceBus,
    private readonly vm: string,
    private readonly log: Logger,
  ) {}

  /** GCMD.QIE set: IQH resets to 0 (QEMU `vtd_handle_gcmd_qie`). */
  enable(): void {
    this.regs.set('IQH', 0n);
  }

  /**
   * GCMD.QIE cleared: IQH resets to 0 as well (VT-d spec §11.4.9.1 "Invalidation Queue Head
   * Register": cleared whenever queued invalidation is disabled; QEMU `vtd_handle_gcmd_qie`).
   */
  disable(): void {
    this.regs.set('IQH', 0n);
  }

  /** Process descriptors from IQH to IQT (serialised with any run in progress). */
  run(): Promise<void> {
    const next = this.running.then(() => this.process());
    this.running = next.catch(() => undefined);
    return next;
  }

  private async process(): Promise<void> {
    if ((this.regs.getN('GSTS') & GSTS.QIES) === 0) return;
    if ((this.regs.getN('FSTS') & FSTS.IQE) !== 0) return; // IQE pending: no fetch
    const iqa = this.regs.get('IQA');
    const dw = (iqa & 0x800n) !== 0n;
    const base = iqa & 0xffff_ffff_ffff_f000n;
    const entries = iqEntries(narrow(iqa & IQA.QS_MASK, 3), dw);
    const iqt = this.regs.get('IQT');
    if (dw && (iqt & VTD_IQT_QT_256_RSV_BIT) !== 0n) return this.error(IQEI.QUEUE_TAIL_MISALIGNED, 'IQT bit 4 set with 256-bit descriptors');
    const tail = iqIndexFromReg(iqt, dw);
    if (tail >= entries) return this.error(IQEI.INVALID_TAIL_PTR, `tail ${tail} is beyond a ${entries}-entry queue`);
    let head = iqIndexFromReg(this.regs.get('IQH'), dw) % entries;
    if (head === tail) return;
    this.counters.runs++;
    const bytes = descriptorBytes(dw);
    const words = dw ? 4 : 2;
    const fast = dw && this.sink.piotlb !== undefined;
    const runs = dw && this.sink.piotlbPages !== undefined;
    const ramSize = BigInt(this.ram.size);
    while (head !== tail) {
      // One contiguous piece of the ring, clamped to guest RAM.
      const gpa = base + BigInt(head * bytes);
      const upTo = tail > head ? tail : entries;
      const fit = gpa >= ramSize ? 0 : Math.min(upTo - head, Number((ramSize - gpa) / BigInt(bytes)));
      if (fit === 0) {
        this.regs.set('IQH', iqRegFromIndex(head, dw));
        await this.sink.flush();
        return this.error(IQEI.FETCH_DESCRIPTOR_ERR, `descriptor ${head} at ${hex64(gpa)} is outside guest RAM`, head, dw);
      }
      const len = fit * bytes;
      if (this.fetched.length < len) {
        this.fetched = Buffer.alloc(Math.max(len, 2 * this.fetched.length));
        this.fetchedView = new DataView(this.fetched.buffer, this.fetched.byteOffset, this.fetched.length);
      }
      const buf = this.fetched;
      const v = this.fetchedView;
      this.ram.readInto(Number(gpa), buf.subarray(0, len));
      for (let off = 0; off < len; off += bytes) {
        const dw0 = v.getUint32(off, true);
        const clean = (fast || runs) && ((dw0 & 0xf) | ((dw0 >>> 5) & 0x70)) === InvDescType.PIOTLB && piotlbReservedClear(v, off);
        if (clean && runs) {
          const k = psiRunLength(v, off, len);
          if (k >= 2) {
            // k adjacent page-selective descriptors of one DID, PASID and IH: one range.
            if (this.trace.active) this.traceRun(buf, off, k, head);
            const first = psiBlockBase(v, off);
            const last = off + (k - 1) * bytes;
            this.sink.piotlbPages!(dw0 >>> 16, v.getUint32(off + 4, true) & 0xfffff, (v.getUint32(off + 8, true) & 0x40) !== 0, first, psiBlockBase(v, last) + psiBlockPages(v, last) - first);
            this.counters.descriptors += k;
            head = head + k === entries ? 0 : head + k;
            off = last;
            continue;
          }
        }
        if (clean && fast && !this.trace.active) {
          const dw2 = v.getUint32(off + 8, true);
          const bad = this.sink.piotlb!((dw0 >>> 4) & 3, dw0 >>> 16, v.getUint32(off + 4, true) & 0xfffff, dw2 & 0x3f, (dw2 & 0x40) !== 0, (dw2 & 0xffff_f000) >>> 0, v.getUint32(off + 12, true));
          if (bad !== undefined) {
            this.regs.set('IQH', iqRegFromIndex(head, dw));
            await this.sink.flush();
            return this.error(bad, 'PIOTLB_DESC: invalid granularity or address mask', head, dw, wordsFromBytes(buf, off, words));
          }
        } else {
          this.regs.set('IQH', iqRegFromIndex(head, dw));
          const stop = await this.slow(wordsFromBytes(buf, off, words), dw, head);
          if (stop) return;
        }
        this.counters.descriptors++;
        head = head + 1 === entries ? 0 : head + 1;
      }
    }
    this.regs.set('IQH', iqRegFromIndex(head, dw));
    await this.sink.flush();
  }

  /** One descriptor through decodeDescriptor. Returns true when the queue stopped at it (IQE). */
  private async slow(raw: bigint[], dw: boolean, head: number): Promise<boolean> {
    const d = decodeDescriptor(raw, dw);
    if (d.kind !== 'descriptor' || d.reserved.length > 0) {
      await this.sink.flush();
      const iqei = d.kind === 'invalid-type' ? IQEI.INVALID_DESCRIPTOR_TYPE : d.kind === 'invalid-width' ? IQEI.INVALID_DESCRIPTOR_WIDTH : IQEI.RSVD_FIELD_VIOLATION;
      const why =
        d.kind === 'invalid-type'
          ? `unknown descriptor type 0x${d.type.toString(16)}`
          : d.kind === 'invalid-width'
            ? `type 0x${d.type.toString(16)} needs 256-bit descriptors`
            : `${d.name}: reserved bits ${d.reserved.map((r) => `qw${r.word}:0x${r.bits.toString(16)}`).join(', ')}`;
      this.error(iqei, why, head, dw, raw);
      return true;
    }
    if (this.trace.active) this.trace.emit({ kind: 'descriptor', side: 'guest', vm: this.vm, name: d.name, args: { index: head, qw0: hex64(raw[0]!), qw1: hex64(raw[1]!) } });
    if (d.type === InvDescType.WAIT) {
      await this.wait(d as Extract<ValidDescriptor, { type: 0x5 }>);
    } else {
      const bad = await this.sink.handle(d);
      if (bad !== undefined) {
        await this.sink.flush();
        this.error(bad, `${d.name}: invalid granularity or address mask`, head, dw, raw);
        return true;
      }
    }
    return false;
  }

  /** The trace events of `k` descriptors a run took together, as the decoded path emits them one by one. */
  private traceRun(buf: Buffer, off: number, k: number, head: number): void {
    for (let i = 0; i < k; i++) {
      const raw = wordsFromBytes(buf, off + i * 32, 4);
      this.trace.emit({ kind: 'descriptor', side: 'guest', vm: this.vm, name: PIOTLB_DESC.name, args: { index: head + i, qw0: hex64(raw[0]!), qw1: hex64(raw[1]!) } });
    }
  }

  private async wait(d: Extract<ValidDescriptor, { type: 0x5 }>): Promise<void> {
    this.counters.waits++;
    await this.sink.flush();
    const f = d.fields;
    if (f.SW === 1n) {
      const addr = f.STATUS_ADDR << 2n;
      if (addr + 4n <= BigInt(this.ram.size)) {
        this.ram.writeU32(Number(addr), narrow(f.STATUS_DATA, 32)); // addr: checked against guest RAM above
        this.counters.statusWrites++;
      } else {
        this.log.warn({ addr: hex64(addr) }, 'wait descriptor status address is outside guest RAM; status not written');
      }
    }
    if (f.IF === 1n) {
      // IECTL.IP (VT-d spec §11.4.9.5): setting IWC while it is already set is not a new
      // interrupt condition.
      const wasSet = (this.regs.getN('ICS') & ICS.IWC) !== 0;
      this.regs.update('ICS', BigInt(ICS.IWC));
      if (!wasSet) this.interrupts.raise('invalidation');
    }
  }

  private error(iqei: IqeiCode, why: string, head?: number, dw?: boolean, raw?: readonly bigint[]): void {
    this.counters.errors++;
    if (head !== undefined) this.regs.set('IQH', iqRegFromIndex(head, dw ?? false));
    this.faults.queueError(iqei);
    this.log.debug({ iqei, why }, 'invalidation queue error');
    this.trace.emit({
      kind: 'descriptor',
      side: 'guest',
      vm: this.vm,
      name: 'invalidation queue error (IQE)',
      args: { iqei, why, index: head ?? null, qw0: raw ? hex64(raw[0]!) : null },
    });
  }
}

/** 2^am for the address masks a run accepts (am ≤ CAP.MAMV). */
const BLOCK_PAGES: readonly number[] = Array.from({ length: VTD_MAMV + 1 }, (_, am) => 2 ** am);

/** Pages of the block a 256-bit PASID-based IOTLB descriptor at `off` names (2^AM; AM ≤ MAMV checked by the caller). */
function psiBlockPages(v: DataView, off: number): number {
  return BLOCK_PAGES[v.getUint32(off + 8, true) & 0x3f]!;
}

/** First 4 KiB page of that block: ADDR (bits 63:12, below 2^52 as a number) aligned down to 2^AM pages. */
function psiBlockBase(v: DataView, off: number): number {
  const page = v.getUint32(off + 12, true) * 0x10_0000 + (v.getUint32(off + 8, true) >>> 12);
  return page - (page % psiBlockPages(v, off));
}

/**
 * How many descriptors from the one at `off` (a 256-bit PASID-based IOTLB descriptor with its
 * reserved bits clear; bytes up to `len` fetched) form a run that one address range replaces
 * exactly: each page-selective (G = 3) with AM ≤ CAP.MAMV, reserved bits clear, the same DID,
 * PASID and IH as the first (qw0 identical; IH is qw1 bit 6), and the block it names (2^AM pages
 * aligned — VT-d spec §6.5.2.4 "PASID-based-IOTLB Invalidate Descriptor") starting where the
 * previous one's ends. Invalidations of one tag commute and a page-selective one removes the
 * entries overlapping its pages, so the run removes exactly what the union of its blocks does.
 * Returns 0 when the first descriptor itself does not qualify.
 */
function psiRunLength(v: DataView, off: number, len: number): number {
  const w0 = v.getUint32(off, true);
  const w1 = v.getUint32(off + 4, true);
  const w2 = v.getUint32(off + 8, true);
  if (((w0 >>> 4) & 3) !== PIOTLB_G.PSI_IN_PASID || (w2 & 0x3f) > VTD_MAMV) return 0;
  const ih = w2 & 0x40;
  let end = psiBlockBase(v, off) + psiBlockPages(v, off);
  let k = 1;
  for (let o = off + 32; o < len; o += 32, k++) {
    // qw0 equal to the first one's: same type, G, DID and PASID, and its reserved bits clear too.
    if (v.getUint32(o, true) !== w0 || v.getUint32(o + 4, true) !== w1) break;
    const x2 = v.getUint32(o + 8, true);
    const x3 = v.getUint32(o + 12, true);
    if ((x2 & 0x40) !== ih || (x2 & 0x3f) > VTD_MAMV || !piotlbUpperReservedClear(v, o, x2, x3)) break;
    const am = x2 & 0x3f;
    const page = x3 * 0x10_0000 + (x2 >>> 12);
    const pages = BLOCK_PAGES[am]!;
    if (am === 0 ? page !== end : page - (page % pages) !== end) break;
    end += pages;
  }
  return k;
}

/** PIOTLB_DESC's 256-bit reserved masks as eight 32-bit words (from the declared layout). */
const PIOTLB_RSVD32: readonly number[] = PIOTLB_DESC.d256.reserved.flatMap((m) => [Number(m & 0xffff_ffffn), Number(m >> 32n)]);

/** Reserved masks of 32-bit words 2..7 (qw1 and the upper 128 bits). */
const [, , RSVD_2, RSVD_3, RSVD_4, RSVD_5, RSVD_6, RSVD_7] = PIOTLB_RSVD32 as [number, number, number, number, number, number, number, number];

/** piotlbReservedClear for words 2..7 only (words 2 and 3 given), for a descriptor whose qw0 is known to be clean. */
function piotlbUpperReservedClear(v: DataView, off: number, w2: number, w3: number): boolean {
  return ((w2 & RSVD_2) | (w3 & RSVD_3) | (v.getUint32(off + 16, true) & RSVD_4) | (v.getUint32(off + 20, true) & RSVD_5) | (v.getUint32(off + 24, true) & RSVD_6) | (v.getUint32(off + 28, true) & RSVD_7)) === 0;
}

/** True when no reserved bit of the 256-bit PASID-based IOTLB descriptor at `off` is set. */
function piotlbReservedClear(v: DataView, off: number): boolean {
  for (let i = 0; i < 8; i++) {
    const m = PIOTLB_RSVD32[i]!;
    if (m !== 0 && (v.getUint32(off + 4 * i, true) & m) !== 0) return false;
  }
  return true;
}
