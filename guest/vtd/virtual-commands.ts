/**
 * The virtual command interface (VCCAP / VCMD / VCRSP) in the spec 3.1 or 3.3 layout
 * (VT-d spec rev. 3.1 / 3.3 Virtual Command Capability, Command and Response registers; Linux
 * drivers/iommu/intel/pasid.c `vcmd_alloc_pasid`, up to 6.7; docs/design.md §3.1): ALLOC_PASID
 * and FREE_PASID become the host's PASID_ALLOC / PASID_FREE, the way QEMU's vSVA series forwards
 * them to VFIO_IOMMU_PASID_REQUEST.
 *
 * - A VCMD write while VCRSP.IP is set is ignored (QEMU `vtd_handle_vcmd_write`).
 * - Otherwise VCRSP = IP at once; the host request runs asynchronously and VCRSP then holds the
 *   status code and result with IP clear. A guest polling VCRSP sees IP while it is in flight.
 * - Status codes are the layout's: undefined command, no PASID available (the host refused an
 *   allocation, e.g. quota exhausted), invalid PASID (freeing a PASID this VM did not allocate
 *   through VCMD, or one the host does not hold for it).
 * - Allocated PASIDs are guest PASIDs and host PASIDs at once (identity, hpasid = gpasid).
 * - A VCRSP read that arrives while a command is in flight is held until the command completes,
 *   for at most VCRSP_READ_STALL_MS (`settledWithin`): an MMIO read may take as long as the
 *   device model needs (the vCPU waits in the exit; QEMU even performs the whole command inside
 *   the VCMD write). A guest that polls VCRSP therefore sees the result on its first read after
 *   the host answered instead of one poll interval later; a command slower than the bound still
 *   shows IP, and the guest polls on.
 *
 * Cost (docs/performance.md, VCMD row): ALLOC_PASID, and FREE_PASID of a PASID the VM holds,
 * are the hot commands. Each runs as promise reactions on its host request (no async frames in
 * between), and the reads waiting on a command share one promise. The stall bound is a deadline per command checked by one timer that is
 * armed only when no armed timer fires before the deadline: while commands follow each other
 * faster than the bound, the timer fires about once per bound and is re-armed for the deadline
 * of the command then in flight, so a command costs no timer operation.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { VCMD_CMD, VCMD_LAYOUTS, type VcmdLayoutName } from '../../src/vtd/vcmd.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import type { HostCalls } from '../viommu.js';
import type { RegisterFile } from './register-file.js';
import type { RegisterDef } from '../../src/vtd/registers.js';

/** Lowest PASID handed out: PASID 0 is RID_PASID and never bound (QEMU VTD_HPASID_MIN). */
export const VCMD_PASID_MIN = 1;

/** Longest a VCRSP read waits for a command in flight before it returns IP. */
export const VCRSP_READ_STALL_MS = 1;

const ALLOC_RANGE = { min: VCMD_PASID_MIN, max: PASID_MAX } as const;
/** VCRSP with IP set (bit 0 in both layouts). */
const VCRSP_IP = 1n;

export class VirtualCommands {
  /** PASIDs this VM allocated through VCMD and has not freed. */
  readonly owned = new Set<number>();
  readonly counters = { allocs: 0, frees: 0, errors: 0, ignored: 0 };
  private inFlight: Promise<void> | null = null;
  /**
   * What the reads waiting on the command in flight wait for (settledWithin): one promise per
   * command, created by the first such read, resolved when the command completes or when the
   * stall timer fires, with VCRSP as a whole-register guest read then sees it.
   */
  private settled: Promise<bigint> | null = null;
  private releaseSettled: ((vcrsp: bigint) => void) | null = null;
  /** When the reads waiting on the command in flight go on with IP (performance.now() ms). */
  private stallDeadline = Infinity;
  /**
   * The stall timer and when it fires (Infinity: not armed). It is not cleared when a command
   * completes first: firing with no read waiting does nothing, and firing before the deadline
   * of the command now waited on re-arms it for that deadline.
   */
  private stallTimer: NodeJS.Timeout | null = null;
  private stallTimerAt = Infinity;
  /** VCRSP's definition (written on every command). */
  private readonly vcrsp: RegisterDef;
  /** ALLOC_PASID in flight: when it started, for its trace event (0 when no one listens). */
  private allocStarted = 0;
  /** FREE_PASID in flight (of a PASID this VM holds): the PASID. */
  private freeing = 0;
  /** Called after the host freed a PASID this VM held (VCMD FREE_PASID or a host-forced free). */
  onFreed: ((pasid: number) => Promise<void>) | null = null;
  private readonly layout: (typeof VCMD_LAYOUTS)[VcmdLayoutName];
  private readonly operandShift: bigint;

  constructor(
    readonly layoutName: VcmdLayoutName,
    private readonly regs: RegisterFile,
    private readonly host: HostCalls,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {
    this.layout = VCMD_LAYOUTS[layoutName];
    this.operandShift = BigInt(this.layout.operandShift);
    this.vcrsp = regs.def('VCRSP');
  }

  /** True while a command is in flight (VCRSP.IP). */
  get busy(): boolean {
    return this.inFlight !== null;
  }

  /** Resolves when no command is in flight. */
  async idle(): Promise<void> {
    while (this.inFlight !== null) await this.inFlight;
  }

  /**
   * Null when no command is in flight; else a promise that resolves when it completes or after
   * at most `ms`, whichever is first (never rejects), with the value an 8-byte guest read of
   * VCRSP returns at that moment (the result, or IP after the bound). For a VCRSP read to wait
   * on. Reads waiting on the same command share the promise and the bound armed by the first of
   * them (a later read with a shorter bound shortens it for all).
   */
  settledWithin(ms: number = VCRSP_READ_STALL_MS): Promise<bigint> | null {
    if (this.inFlight === null) return null;
    const deadline = performance.now() + ms;
    if (this.settled === null) {
      this.settled = new Promise<bigint>((resolve) => (this.releaseSettled = resolve));
      this.stallDeadline = deadline;
    } else if (deadline < this.stallDeadline) {
      this.stallDeadline = deadline;
    } else {
      return this.settled;
    }
    if (this.stallDeadline < this.stallTimerAt) this.armStall(this.stallDeadline);
    return this.settled;
  }

  private armStall(at: number): void {
    if (this.stallTimer !== null) clearTimeout(this.stallTimer);
    this.stallTimerAt = at;
    this.stallTimer = setTimeout(this.onStall, Math.max(0, at - performance.now()));
  }

  /** The timer fired: past the deadline, the waiting reads go on (they see IP); before it, wait on. */
  private readonly onStall = (): void => {
    this.stallTimer = null;
    this.stallTimerAt = Infinity;
    if (this.settled === null) return;
    if (performance.now() >= this.stallDeadline) this.release();
    else this.armStall(this.stallDeadline);
  };

  private release(): void {
    const r = this.releaseSettled;
    if (r === null) return;
    this.settled = null;
    this.releaseSettled = null;
    this.stallDeadline = Infinity;
    r(this.regs.read(this.vcrsp.offset, 8));
  }

  /** The guest wrote VCMD (the whole register, or its high half last). */
  onWrite(value: bigint): void {
    if (this.inFlight !== null) {
      this.counters.ignored++;
      return;
    }
    // decodeVcmd's fields without its objects (the layout: CMD 7:0, OPERAND from operandShift,
    // 3.3 reserves 15:8); the PASID is the operand's low 20 bits.
    const lo = Number(BigInt.asUintN(32, value));
    const reservedSet = this.layout.operandShift === 16 && ((lo >>> 8) & 0xff) !== 0;
    const cmd = lo & 0xff;
    if (cmd === VCMD_CMD.ALLOC_PASID && !reservedSet) {
      // ALLOC_PASID: the request leaves first (VCRSP shows IP before anything else can run);
      // the command completes in the reply's own reaction.
      this.allocStarted = this.trace.active ? performance.now() : 0;
      const reply = this.callAlloc();
      this.regs.setDef(this.vcrsp, VCRSP_IP);
      this.inFlight = reply.then(this.allocReplied, this.allocFailed);
      return;
    }
    const pasid = Number(BigInt.asUintN(20, value >> this.operandShift));
    if (cmd === VCMD_CMD.FREE_PASID && !reservedSet && this.owned.has(pasid)) {
      // FREE_PASID of a PASID this VM holds (the other hot command: a guest frees what it
      // allocated): as ALLOC_PASID, the request leaves first and the command goes on in the
      // reply's reactions (freeReplied → freeDone), with no async frames in between.
      this.freeing = pasid;
      const reply = this.callFree(pasid);
      this.regs.setDef(this.vcrsp, VCRSP_IP);
      this.inFlight = reply.then(this.freeReplied, this.freeError);
      return;
    }
    this.regs.setDef(this.vcrsp, VCRSP_IP);
    this.inFlight = this.run(cmd, pasid, reservedSet);
  }

  /** VCRSP = status and result with IP clear; the command is over and waiting reads go on. */
  private complete(sc: number, result: number): void {
    // encodeVcrsp with IP clear: SC at bit 1 (layout-wide mask), RSLT at operandShift.
    this.regs.setDef(this.vcrsp, BigInt(result * 2 ** this.layout.operandShift + ((sc & this.layout.scMask) << this.layout.scShift)));
    this.inFlight = null;
    this.release();
  }

  /**
   * ALLOC_PASID's host request. Its reactions (allocReplied, allocFailed, allocRefused) never
   * throw, so the command's promise never rejects. The link does not resend a PASID_ALLOC lost
   * in flight (ECONNRESET): once it is back, the VM's reconciliation has freed whatever that one
   * allocated, so it is asked again, once.
   */
  private callAlloc(): Promise<{ pasid: number }> {
    try {
      return this.host.call('PASID_ALLOC', ALLOC_RANGE);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private readonly allocReplied = (r: { pasid: number }): void => {
    try {
      this.owned.add(r.pasid);
      this.counters.allocs++;
      if (this.trace.active) this.trace.emit({ kind: 'alloc', side: 'guest', vm: this.vm, name: 'VCMD ALLOC_PASID', dur: (performance.now() - this.allocStarted) * 1000, args: { pasid: r.pasid, layout: this.layoutName } });
    } catch (e) {
      this.log.error({ err: e }, 'virtual command failed unexpectedly');
      this.complete(this.layout.status.NO_PASID, 0);
      return;
    }
    this.complete(this.layout.status.SUCCESS, r.pasid);
  };

  private readonly allocFailed = (e: unknown): Promise<void> | void => {
    if ((e as { code?: string } | null)?.code === 'ECONNRESET') return this.callAlloc().then(this.allocReplied, this.allocRefused);
    this.allocRefused(e);
  };

  private readonly allocRefused = (e: unknown): void => {
    try {
      this.counters.errors++;
      this.trace.emit({ kind: 'alloc', side: 'guest', vm: this.vm, name: 'VCMD ALLOC_PASID: no PASID', args: { errno: (e as { code?: string } | null)?.code ?? 'EIO' } });
    } catch (err) {
      this.log.error({ err }, 'virtual command failed unexpectedly');
    }
    this.complete(this.layout.status.NO_PASID, 0);
  };

  /** FREE_PASID's host request (callAlloc's counterpart; its reactions never throw either). */
  private callFree(pasid: number): Promise<{ freed: number }> {
    try {
      return this.host.call('PASID_FREE', { min: pasid, max: pasid });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * The host freed `freeing`: it is no longer this VM's; the model drops what it forwarded for
   * it (onFreed), then the command completes. A host that freed nothing, or an onFreed that
   * fails, makes it INVALID_PASID (the PASID stays dropped).
   */
  private readonly freeReplied = (r: { freed: number }): Promise<void> | void => {
    const pasid = this.freeing;
    try {
      this.owned.delete(pasid);
      const after = this.onFreed?.(pasid);
      if (after !== undefined) return after.then(() => this.freeDone(r.freed), this.freeError);
    } catch (e) {
      this.freeError(e);
      return;
    }
    this.freeDone(r.freed);
  };

  private freeDone(freed: number): void {
    if (freed < 1) {
      this.freeError(new Error(`host freed ${freed} PASIDs`));
      return;
    }
    try {
      this.counters.frees++;
      if (this.trace.active) this.trace.emit({ kind: 'free', side: 'guest', vm: this.vm, name: 'VCMD FREE_PASID', args: { pasid: this.freeing } });
    } catch (e) {
      this.log.error({ err: e }, 'virtual command failed unexpectedly');
    }
    this.complete(this.layout.status.SUCCESS, 0);
  }

  /** FREE_PASID refused by the host (or its aftermath failed): INVALID_PASID. */
  private readonly freeError = (e: unknown): void => {
    try {
      this.counters.errors++;
      this.log.warn({ err: e, pasid: this.freeing }, 'VCMD FREE_PASID refused by the host');
    } catch (err) {
      this.log.error({ err }, 'virtual command failed unexpectedly');
    }
    this.complete(this.layout.status.INVALID_PASID, 0);
  };

  /** Any other command (FREE_PASID of a PASID not held, undefined ones): execute, then complete. Never rejects. */
  private async run(cmd: number, pasid: number, reservedSet: boolean): Promise<void> {
    // These need no host: they complete one microtask later, so that VCRSP shows IP after the
    // write (and onWrite has recorded the command in flight) like every other command.
    await undefined;
    let sc: number;
    let result: number;
    try {
      ({ sc, result } = this.execute(cmd, pasid, reservedSet));
    } catch (e) {
      this.log.error({ err: e }, 'virtual command failed unexpectedly');
      sc = this.layout.status.NO_PASID;
      result = 0;
    }
    this.complete(sc, result);
  }

  /** The host freed a PASID on its own (PASID_FREED): it is no longer this VM's. */
  hostFreed(pasid: number): void {
    this.owned.delete(pasid);
  }

  private execute(cmd: number, pasid: number, reservedSet: boolean): { sc: number; result: number } {
    const st = this.layout.status;
    if (reservedSet || cmd !== VCMD_CMD.FREE_PASID) {
      this.counters.errors++;
      this.trace.emit({ kind: 'alloc', side: 'guest', vm: this.vm, name: 'VCMD undefined command', args: { cmd, layout: this.layoutName } });
      return { sc: st.UNDEFINED_CMD, result: 0 };
    }
    // FREE_PASID of a PASID this VM holds went the fast way (onWrite); this one is not its.
    this.counters.errors++;
    this.trace.emit({ kind: 'free', side: 'guest', vm: this.vm, name: 'VCMD FREE_PASID: not owned', args: { pasid } });
    return { sc: st.INVALID_PASID, result: 0 };
  }
}
