/**
 * The virtual command interface (VCCAP / VCMD / VCRSP) in the spec 3.1 or 3.3 layout
 * (reference vtd-scalable-mode.md §4; DESIGN §3.1): ALLOC_PASID and FREE_PASID become the
 * host's PASID_ALLOC / PASID_FREE, the way QEMU's vSVA series forwards them to
 * VFIO_IOMMU_PASID_REQUEST.
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
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { VCMD_CMD, VCMD_LAYOUTS, type VcmdLayoutName } from '../../src/vtd/vcmd.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import type { HostPort } from './host-port.js';
import type { RegisterFile } from './register-file.js';

/** Lowest PASID handed out: PASID 0 is RID_PASID and never bound (QEMU VTD_HPASID_MIN). */
export const VCMD_PASID_MIN = 1;

/** Longest a VCRSP read waits for a command in flight before it returns IP. */
export const VCRSP_READ_STALL_MS = 1;

const ALLOC_RANGE = { min: VCMD_PASID_MIN, max: PASID_MAX - 1 } as const;
/** VCRSP with IP set (bit 0 in both layouts). */
const VCRSP_IP = 1n;

export class VirtualCommands {
  /** PASIDs this VM allocated through VCMD and has not freed. */
  readonly owned = new Set<number>();
  readonly counters = { allocs: 0, frees: 0, errors: 0, ignored: 0 };
  private inFlight: Promise<void> | null = null;
  /** settledWithin callers, told when the command in flight completes. */
  private waiters: (() => void)[] = [];
  /** Called after the host freed a PASID this VM held (VCMD FREE_PASID or a host-forced free). */
  onFreed: ((pasid: number) => Promise<void>) | null = null;
  private readonly layout: (typeof VCMD_LAYOUTS)[VcmdLayoutName];

  constructor(
    readonly layoutName: VcmdLayoutName,
    private readonly regs: RegisterFile,
    private readonly host: HostPort,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {
    this.layout = VCMD_LAYOUTS[layoutName];
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
   * `ms`, whichever is first (never rejects). For a VCRSP read to wait on.
   */
  settledWithin(ms: number = VCRSP_READ_STALL_MS): Promise<void> | null {
    if (this.inFlight === null) return null;
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** The guest wrote VCMD (the whole register, or its high half last). */
  onWrite(value: bigint): void {
    if (this.inFlight !== null) {
      this.counters.ignored++;
      return;
    }
    // decodeVcmd's fields without its objects (the layout: CMD 7:0, OPERAND from operandShift,
    // 3.3 reserves 15:8); the PASID is the operand's low 20 bits.
    const lo = Number(value & 0xffff_ffffn);
    const shift = this.layout.operandShift;
    const reservedSet = shift === 16 && ((lo >>> 8) & 0xff) !== 0;
    const pasid = Number((value >> BigInt(shift)) & 0xfffffn);
    this.regs.set('VCRSP', VCRSP_IP);
    this.inFlight = this.run(lo & 0xff, pasid, reservedSet);
  }

  /** One command: execute, then VCRSP = status and result with IP clear. Never rejects. */
  private async run(cmd: number, pasid: number, reservedSet: boolean): Promise<void> {
    let sc: number;
    let result: number;
    try {
      ({ sc, result } = await this.execute(cmd, pasid, reservedSet));
    } catch (e) {
      this.log.error({ err: e }, 'virtual command failed unexpectedly');
      sc = this.layout.status.NO_PASID;
      result = 0;
    }
    // encodeVcrsp with IP clear: SC at bit 1 (layout-wide mask), RSLT at operandShift.
    this.regs.set('VCRSP', BigInt(result * 2 ** this.layout.operandShift + ((sc & this.layout.scMask) << this.layout.scShift)));
    this.inFlight = null;
    if (this.waiters.length > 0) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }

  /** The host freed a PASID on its own (PASID_FREED): it is no longer this VM's. */
  hostFreed(pasid: number): void {
    this.owned.delete(pasid);
  }

  private async execute(cmd: number, pasid: number, reservedSet: boolean): Promise<{ sc: number; result: number }> {
    const st = this.layout.status;
    const started = this.trace.active ? performance.now() : 0;
    if (reservedSet || (cmd !== VCMD_CMD.ALLOC_PASID && cmd !== VCMD_CMD.FREE_PASID)) {
      this.counters.errors++;
      this.trace.emit({ kind: 'alloc', side: 'guest', vm: this.vm, name: 'VCMD undefined command', args: { cmd, layout: this.layoutName } });
      return { sc: st.UNDEFINED_CMD, result: 0 };
    }
    if (cmd === VCMD_CMD.ALLOC_PASID) {
      try {
        let r: { pasid: number };
        try {
          r = await this.host.call('PASID_ALLOC', ALLOC_RANGE);
        } catch (e) {
          // The link does not resend a PASID_ALLOC lost in flight (ECONNRESET): once it is back,
          // the VM's reconciliation has freed whatever that one allocated, so ask again.
          if ((e as { code?: string }).code !== 'ECONNRESET') throw e;
          r = await this.host.call('PASID_ALLOC', ALLOC_RANGE);
        }
        this.owned.add(r.pasid);
        this.counters.allocs++;
        if (this.trace.active) this.trace.emit({ kind: 'alloc', side: 'guest', vm: this.vm, name: 'VCMD ALLOC_PASID', dur: (performance.now() - started) * 1000, args: { pasid: r.pasid, layout: this.layoutName } });
        return { sc: st.SUCCESS, result: r.pasid };
      } catch (e) {
        this.counters.errors++;
        this.trace.emit({ kind: 'alloc', side: 'guest', vm: this.vm, name: 'VCMD ALLOC_PASID: no PASID', args: { errno: (e as { code?: string }).code ?? 'EIO' } });
        return { sc: st.NO_PASID, result: 0 };
      }
    }
    if (!this.owned.has(pasid)) {
      this.counters.errors++;
      this.trace.emit({ kind: 'free', side: 'guest', vm: this.vm, name: 'VCMD FREE_PASID: not owned', args: { pasid } });
      return { sc: st.INVALID_PASID, result: 0 };
    }
    try {
      const r = await this.host.call('PASID_FREE', { min: pasid, max: pasid });
      this.owned.delete(pasid);
      await this.onFreed?.(pasid);
      if (r.freed < 1) throw new Error(`host freed ${r.freed} PASIDs`);
      this.counters.frees++;
      this.trace.emit({ kind: 'free', side: 'guest', vm: this.vm, name: 'VCMD FREE_PASID', args: { pasid } });
      return { sc: st.SUCCESS, result: 0 };
    } catch (e) {
      this.counters.errors++;
      this.log.warn({ err: e, pasid }, 'VCMD FREE_PASID refused by the host');
      return { sc: st.INVALID_PASID, result: 0 };
    }
  }
}
