/**
 * A minimal VT-d guest driver for the benchmarks and experiments: just what they time, built
 * only on the GuestHandle's register window and guest RAM (like the guest driver model, but
 * with direct control of the invalidation queue so one queue run can carry thousands of
 * descriptors). Layouts come from src/vtd (Intel VT-d specification, chapter 9 "Translation Structure Formats").
 *
 * Bring-up (Linux intel-iommu order): root table → RTADDR (SMT) → GCMD.SRTP; 256-bit
 * invalidation queue → IQA → GCMD.QIE; scalable-mode context entry for each device (PASID
 * enabled, PDTS for 20-bit PASIDs) → context-cache global invalidation; GCMD.TE.
 *
 * - allocPasid / freePasid: the virtual command interface (VCMD ALLOC_PASID / FREE_PASID).
 * - bindPasid: a first-level (PGTT = 1) PASID entry over one shared guest process page table,
 *   then PASID-cache PASID-selective invalidation + wait descriptor (status write), returning
 *   when the status lands: the model has forwarded the bind to the host by then (docs/design.md §3.1).
 * - piotlbBatch: `n` page-selective PASID-based IOTLB descriptors and one wait in one queue run
 *   (adjacent pages, or every `step`-th page).
 *
 * Not thread-safe: one caller at a time per driver (the benches are sequential per VM).
 */
import { fail } from '../../errors.js';
import type { GuestHandle } from '../../api/types.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { encode, wordsToBytes } from '../../vtd/layout.js';
import { smContextEntryLayout, smContextIndex, smRootEntryLayout, RTADDR_SMT } from '../../vtd/root-context.js';
import { PASID_DIR_ENTRY, PASID_ENTRY_SIZE, PASID_TABLE_ENTRY, PGTT, pasidDirIndex, pasidTableIndex } from '../../vtd/pasid-entry.js';
import { CC_G, encodeDescriptor, InvDescType, PC_G, PIOTLB_G } from '../../vtd/descriptors.js';
import { DMAR, GCMD, GSTS, IQA, iqEntries, iqRegFromIndex } from '../../vtd/registers.js';
import { decodeVcrsp, encodeVcmd, VCMD_CMD, VCMD_REG_OFFSETS, type VcmdLayoutName } from '../../vtd/vcmd.js';
import { parseBdf } from '../../pci.js';

const HAW = 48;
const PAGE = 4096;
/** PDTS 7: 2^14 directory entries × 64 = 2^20 PASIDs. */
const PDTS = 7;
const DIR_PAGES = (2 ** (PDTS + 7) * 8) / PAGE;
/** 256-bit descriptors, QS 7: 16384 slots (512 KiB). */
const IQ_QS = 7;
const DESC_BYTES = 32;
const DID = 1;
/** The guest virtual address the shared buffer is mapped at in the process's page table. */
export const BENCH_BUFFER_VA = 0x4000_0000n;

const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep0 = (): Promise<void> => new Promise((r) => setTimeout(r, 0));
/** Polls that only yield to the event loop before the poller backs off to timer sleeps. */
const SPIN_POLLS = 32;

/**
 * Wait between polls: spin (yield to the event loop) for the first SPIN_POLLS polls, as a vCPU
 * spinning on a register would, then sleep on a timer so that many concurrent guests in one
 * process do not starve each other with polls (each poll reads guest RAM or a register).
 */
function pollWait(n: number): Promise<void> {
  return n < SPIN_POLLS ? yieldToLoop() : sleep0();
}

export interface VtdBenchDriverOptions {
  /** VCMD layout the guest was started with, or false for guest-chosen PASIDs. */
  vcmd?: VcmdLayoutName | false;
  /** Devices to give context entries (default ['00:03.0']). */
  bdfs?: string[];
  /** Bytes of the shared buffer mapped in the process page table (default 64 KiB). */
  bufferBytes?: number;
  /** Where the driver's page allocator starts (default 1 MiB). */
  allocBase?: bigint;
}

export class VtdBenchDriver {
  private readonly entries: number;
  private tail = 0;
  private seq = 1;
  private readonly tables = new Map<number, bigint>();

  private constructor(
    readonly guest: GuestHandle,
    private readonly alloc: PageAllocator,
    private readonly vcmdLayout: VcmdLayoutName | false,
    private readonly iqBase: bigint,
    private readonly dir: bigint,
    private readonly status: bigint,
    readonly process: GuestProcess,
  ) {
    this.entries = iqEntries(IQ_QS, true);
  }

  static async create(guest: GuestHandle, opts: VtdBenchDriverOptions = {}): Promise<VtdBenchDriver> {
    const mem = guest;
    const base = opts.allocBase ?? 0x10_0000n;
    const ramTop = await ramSize(guest);
    const alloc = new PageAllocator(mem, { base, size: ramTop - base });
    const root = await alloc.alloc(1);
    const ctx = await alloc.alloc(1);
    const dir = await alloc.alloc(DIR_PAGES);
    const iq = await alloc.alloc((iqEntries(IQ_QS, true) * DESC_BYTES) / PAGE);
    const status = await alloc.alloc(1);
    // Root entry for bus 0, lower half (devfn < 128) → one context table.
    await mem.memwrite(root, wordsToBytes(encode(smRootEntryLayout(HAW), { LP: 1, LCTP: ctx >> 12n })));
    for (const bdf of opts.bdfs ?? ['00:03.0']) {
      const rid = parseBdf(bdf);
      if (rid >> 8 !== 0 || (rid & 0xff) >= 128) fail('EINVAL', `bench driver supports bus 0, devfn < 128 only (got ${bdf})`);
      const ce = encode(smContextEntryLayout(HAW), { P: 1, PASIDE: 1, PDTS, PASIDDIRPTR: dir >> 12n, RID_PASID: 0 });
      await mem.memwrite(ctx + BigInt(smContextIndex(rid & 0xff) * 32), wordsToBytes(ce));
    }
    await guest.writeq(DMAR.RTADDR, root | RTADDR_SMT);
    await setGcmd(guest, GCMD.SRTP, GSTS.RTPS);
    await guest.writeq(DMAR.IQA, iq | IQA.DW | BigInt(IQ_QS));
    await guest.writeq(DMAR.IQT, 0n);
    await setGcmd(guest, GCMD.QIE, GSTS.QIES);
    const process = await GuestProcess.create(mem, alloc, { name: 'bench' });
    await process.mapNew(BENCH_BUFFER_VA, opts.bufferBytes ?? 64 * 1024);
    const d = new VtdBenchDriver(guest, alloc, opts.vcmd ?? '3.1', iq, dir, status, process);
    await d.submit([encodeDescriptor(InvDescType.CC, { G: CC_G.GLOBAL }, 1), encodeDescriptor(InvDescType.PC, { G: PC_G.GLOBAL }, 1)]);
    await setGcmd(guest, (GCMD.QIE | GCMD.TE) >>> 0, GSTS.TES);
    return d;
  }

  /** VCMD ALLOC_PASID; throws EIO with the VCRSP status code when the host refused. */
  async allocPasid(): Promise<number> {
    const r = await this.vcmd(VCMD_CMD.ALLOC_PASID, 0);
    if (r.sc !== 0) fail('ENOSPC', `VCRSP.SC=${r.sc}`);
    return r.pasid;
  }

  async freePasid(pasid: number): Promise<void> {
    const r = await this.vcmd(VCMD_CMD.FREE_PASID, pasid);
    if (r.sc !== 0) fail('EINVAL', `VCMD FREE_PASID ${pasid}: VCRSP.SC=${r.sc}`);
  }

  /** Write a first-level PASID entry, flush the PASID cache for it and wait. */
  async bindPasid(pasid: number, flptr: bigint = this.process.pgd): Promise<void> {
    const table = await this.table(pasid);
    const words = encode(PASID_TABLE_ENTRY, { P: 1, PGTT: PGTT.FLT, DID, FLPM: 0, FLPTR: flptr >> 12n });
    await this.guest.memwrite(table + BigInt(pasidTableIndex(pasid) * PASID_ENTRY_SIZE), wordsToBytes(words));
    await this.submit([encodeDescriptor(InvDescType.PC, { G: PC_G.PASID_SI, DID, PASID: pasid }, 1)]);
  }

  /** Clear the PASID entry, flush PASID cache and IOTLB for it, and wait. */
  async unbindPasid(pasid: number): Promise<void> {
    const table = await this.table(pasid);
    await this.guest.memwrite(table + BigInt(pasidTableIndex(pasid) * PASID_ENTRY_SIZE), new Uint8Array(PASID_ENTRY_SIZE));
    await this.submit([
      encodeDescriptor(InvDescType.PC, { G: PC_G.PASID_SI, DID, PASID: pasid }, 1),
      encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.ALL_IN_PASID, DID, PASID: pasid }, 1),
    ]);
  }

  /**
   * Encode `n` page-selective PASID-based IOTLB invalidations of one 4 KiB page each (page
   * numbers `firstPage`, `firstPage + step`, …; default 0 and 1) ahead of time, so that a timed
   * submitBytes measures the queue, not the encoder. With step 1 the pages are adjacent (the
   * model may forward the run as one range); any other step keeps every descriptor apart.
   */
  prepareBatch(pasid: number, n: number, firstPage = 0n, step = 1n): Uint8Array {
    if (!Number.isInteger(n) || n < 1 || n > this.maxBatch) fail('EINVAL', `batch of ${n} does not fit a ${this.entries}-slot queue`);
    const bytes = new Uint8Array(n * DESC_BYTES);
    for (let i = 0; i < n; i++) bytes.set(wordsToBytes(encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.PSI_IN_PASID, DID, PASID: pasid, ADDR: firstPage + BigInt(i) * step, AM: 0 }, 1)), i * DESC_BYTES);
    return bytes;
  }

  /** `n` page-selective PASID-based IOTLB invalidations (pages 0, step, 2·step, …) and one wait, in one queue run. */
  async piotlbBatch(pasid: number, n: number, step = 1n): Promise<void> {
    await this.submitBytes(this.prepareBatch(pasid, n, 0n, step));
  }

  /** Largest batch piotlbBatch accepts (the queue keeps one slot free and needs one for the wait). */
  get maxBatch(): number {
    return this.entries - 2;
  }

  /** Put descriptors + a wait (SW) in the queue, move IQT, and wait for the status write. */
  async submit(descs: bigint[][]): Promise<void> {
    const bytes = new Uint8Array(descs.length * DESC_BYTES);
    descs.forEach((d, k) => bytes.set(wordsToBytes(d), k * DESC_BYTES));
    await this.submitBytes(bytes);
  }

  /** Encoded descriptors (32 bytes each) + a wait, then IQT, then wait for the status write. */
  async submitBytes(descs: Uint8Array): Promise<void> {
    const token = this.seq++ >>> 0;
    const wait = wordsToBytes(encodeDescriptor(InvDescType.WAIT, { SW: 1, FN: 1, STATUS_DATA: token, STATUS_ADDR: this.status >> 2n }, 1));
    const count = descs.length / DESC_BYTES + 1;
    if (count > this.entries - 1) fail('EINVAL', `${count} descriptors do not fit the queue`);
    // Straight into the ring, as a driver writes each slot: in at most two contiguous pieces (the
    // ring may wrap), then the wait descriptor.
    for (let i = 0; i < count - 1; ) {
      const room = Math.min(count - 1 - i, this.entries - this.tail);
      await this.guest.memwrite(this.iqBase + BigInt(this.tail * DESC_BYTES), descs.subarray(i * DESC_BYTES, (i + room) * DESC_BYTES));
      this.tail = (this.tail + room) % this.entries;
      i += room;
    }
    await this.guest.memwrite(this.iqBase + BigInt(this.tail * DESC_BYTES), wait);
    this.tail = (this.tail + 1) % this.entries;
    await this.guest.writeq(DMAR.IQT, iqRegFromIndex(this.tail, true));
    for (let n = 0; ; n++) {
      const s = await this.guest.memread(this.status, 4);
      if (new DataView(s.buffer, s.byteOffset, 4).getUint32(0, true) === token) break;
      const fsts = await this.guest.readl(DMAR.FSTS);
      if (fsts & 0x10) fail('EIO', `invalidation queue error (FSTS 0x${fsts.toString(16)}, IQERCD 0x${(await this.guest.readq(DMAR.IQERCD)).toString(16)})`);
      await pollWait(n);
    }
  }

  private async vcmd(cmd: number, operand: number): Promise<{ sc: number; pasid: number }> {
    if (this.vcmdLayout === false) fail('EOPNOTSUPP', 'this guest has no virtual command interface');
    const off = VCMD_REG_OFFSETS[this.vcmdLayout];
    await this.guest.writeq(off.VCMD, encodeVcmd(this.vcmdLayout, cmd, operand));
    for (let n = 0; ; n++) {
      const r = decodeVcrsp(this.vcmdLayout, await this.guest.readq(off.VCRSP));
      if (!r.ip) return { sc: r.sc, pasid: r.pasid };
      await pollWait(n);
    }
  }

  /** The PASID table page for `pasid`, created (and its directory entry written) on first use. */
  private async table(pasid: number): Promise<bigint> {
    const di = pasidDirIndex(pasid);
    let t = this.tables.get(di);
    if (t === undefined) {
      t = await this.alloc.alloc(1);
      await this.guest.memwrite(this.dir + BigInt(di * 8), wordsToBytes(encode(PASID_DIR_ENTRY, { P: 1, SMPTBLPTR: t >> 12n })));
      this.tables.set(di, t);
    }
    return t;
  }
}

async function setGcmd(guest: GuestHandle, cmd: number, status: number): Promise<void> {
  await guest.writel(DMAR.GCMD, cmd >>> 0);
  for (let i = 0; i < 10_000; i++) {
    if (((await guest.readl(DMAR.GSTS)) & status) !== 0) return;
    await yieldToLoop();
  }
  fail('ETIMEDOUT', `GSTS did not show 0x${status.toString(16)} after GCMD 0x${cmd.toString(16)}`);
}

/** Guest RAM size: the GuestVm knows it; fall back to 16 MiB. */
async function ramSize(guest: GuestHandle): Promise<bigint> {
  const ram = (guest as { ram?: { size: number } }).ram;
  return BigInt(ram?.size ?? 16 * 1024 * 1024);
}
