/**
 * Primary fault logging: fault recording registers (found through CAP.FRO, CAP.NFR + 1 of
 * them), FSTS.PPF/PFO/FRI and the fault event (VT-d spec rev. 5.10 §7.2.1 "Primary Fault Logging",
 * §11.4.7.1 "Fault Status Register", §11.4.7.6 "Fault Recording Registers [n]"; QEMU
 * `vtd_report_frcd_fault` semantics):
 * - a fault goes to the first FRCD with F clear, scanning from FSTS.FRI; it sets F, FSTS.PPF
 *   and FSTS.FRI to that register's index;
 * - with every FRCD full the fault is dropped and FSTS.PFO is set;
 * - while FSTS.PFO is set no fault is recorded at all, even into an FRCD whose F bit software
 *   has cleared meanwhile: software clears PFO to resume recording (§7.2.1);
 * - a fault event is raised only when no fault condition (PFO, PPF, AFO, APF, IQE, ICE, ITE)
 *   was already pending — software services the pending ones first;
 * - PPF is read-only and tracks "some FRCD has F set": clearing the F bits (RW1C) clears it.
 *
 * PV is the full 20-bit PASID (spec and Linux; QEMU packs 16 bits).
 */
import type { TraceBus } from '../../src/trace/bus.js';
import { encodeFaultRecord, FRCD_HI_F, type FaultRecord } from '../../src/vtd/fault.js';
import { hex64 } from '../../src/vtd/layout.js';
import { FSTS, IQEI, VTD_FRCD_REG_NR, type IqeiCode } from '../../src/vtd/registers.js';
import type { EventInterrupts } from './interrupts.js';
import type { RegisterFile } from './register-file.js';

/** FSTS bits that are fault conditions (a new one raises an event only when none is pending). */
const FSTS_PENDING = FSTS.PFO | FSTS.PPF | FSTS.AFO | FSTS.APF | FSTS.IQE | FSTS.ICE | FSTS.ITE;

export type FaultOutcome = 'recorded' | 'overflow' | 'suppressed';

export class FaultRecorder {
  /** Faults recorded, dropped for overflow, and suppressed by FPD. */
  readonly counters = { recorded: 0, overflow: 0, suppressed: 0, queueErrors: 0 };

  constructor(
    private readonly regs: RegisterFile,
    private readonly interrupts: EventInterrupts,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  /** Record a fault, or count it suppressed when `fpd` (fault processing disabled) is set. */
  record(r: FaultRecord, fpd = false): FaultOutcome {
    const args = { reason: r.reason, addr: hex64(r.addr), sid: r.sid, pasid: r.pasid ?? null };
    if (fpd) {
      this.counters.suppressed++;
      this.trace.emit({ kind: 'fault', side: 'guest', vm: this.vm, name: 'fault suppressed (FPD)', args });
      return 'suppressed';
    }
    const fsts = this.regs.getN('FSTS');
    const wasPending = (fsts & FSTS_PENDING) !== 0;
    if ((fsts & FSTS.PFO) !== 0) {
      this.counters.overflow++;
      this.trace.emit({ kind: 'fault', side: 'guest', vm: this.vm, name: 'fault dropped (PFO set)', args });
      return 'overflow';
    }
    const start = (fsts & FSTS.FRI_MASK) >> FSTS.FRI_SHIFT;
    let slot = -1;
    for (let i = 0; i < VTD_FRCD_REG_NR; i++) {
      const idx = (start + i) % VTD_FRCD_REG_NR;
      if ((this.regs.get(`FRCD${idx}_HI`) & FRCD_HI_F) === 0n) {
        slot = idx;
        break;
      }
    }
    if (slot < 0) {
      this.regs.update('FSTS', BigInt(FSTS.PFO));
      this.counters.overflow++;
      this.trace.emit({ kind: 'fault', side: 'guest', vm: this.vm, name: 'fault overflow (PFO)', args });
      if (!wasPending) this.interrupts.raise('fault');
      return 'overflow';
    }
    const [lo, hi] = encodeFaultRecord(r);
    this.regs.set(`FRCD${slot}_LO`, lo!);
    this.regs.set(`FRCD${slot}_HI`, hi!);
    this.regs.update('FSTS', BigInt(FSTS.PPF | (slot << FSTS.FRI_SHIFT)), BigInt(FSTS.FRI_MASK));
    this.counters.recorded++;
    this.trace.emit({ kind: 'fault', side: 'guest', vm: this.vm, name: 'fault recorded', args: { ...args, frcd: slot } });
    if (!wasPending) this.interrupts.raise('fault');
    return 'recorded';
  }

  /** Invalidation queue error: FSTS.IQE, IQERCD.IQEI, and a fault event if nothing was pending. */
  queueError(iqei: IqeiCode): void {
    const wasPending = (this.regs.getN('FSTS') & FSTS_PENDING) !== 0;
    this.regs.update('FSTS', BigInt(FSTS.IQE));
    this.regs.set('IQERCD', (this.regs.get('IQERCD') & ~0xfn) | BigInt(iqei & 0xf));
    this.counters.queueErrors++;
    if (!wasPending) this.interrupts.raise('fault');
  }

  /** After software wrote an FRCD or FSTS: recompute PPF and drop a serviced pending event. */
  afterStatusWrite(): void {
    let any = false;
    for (let i = 0; i < VTD_FRCD_REG_NR; i++) if ((this.regs.get(`FRCD${i}_HI`) & FRCD_HI_F) !== 0n) any = true;
    if (!any) this.regs.update('FSTS', 0n, BigInt(FSTS.PPF));
    const fsts = this.regs.getN('FSTS');
    if ((fsts & FSTS.IQE) === 0) this.regs.set('IQERCD', this.regs.get('IQERCD') & ~0xfn);
    if ((fsts & FSTS_PENDING) === 0) this.interrupts.serviced('fault');
  }
}

export { IQEI };
