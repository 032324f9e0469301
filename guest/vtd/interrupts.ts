/**
 * The three VT-d event interrupts — fault event (FECTL/FEDATA/FEADDR), invalidation completion
 * event (IECTL/IEDATA/IEADDR) and page request event (PECTL/PEDATA/PEADDR) — with the spec's
 * IM/IP protocol (VT-d spec rev. 5.10 §11.4.7.2 "Fault Event Control Register", §11.4.9.5
 * "Invalidation Event Control Register", §7.5 "Recoverable Fault Event"):
 * - a condition raised while IM = 0 sends the interrupt message at once (IP stays 0);
 * - raised while IM = 1 it sets IP; clearing IM with IP set sends it then and clears IP;
 * - software servicing the condition (clearing its status bits) clears a pending IP.
 *
 * There is no interrupt controller in the model: a sent interrupt is counted and emitted as a
 * trace event (with the programmed data/address), and listeners may observe it.
 */
import type { TraceBus } from '../../src/trace/bus.js';
import type { TraceKind } from '../../src/trace/events.js';
import { EVENT_CTL } from '../../src/vtd/registers.js';
import type { RegisterFile } from './register-file.js';

export type InterruptSource = 'fault' | 'invalidation' | 'page-request';

const CTL: Record<InterruptSource, { ctl: string; data: string; addr: string; trace: TraceKind }> = {
  fault: { ctl: 'FECTL', data: 'FEDATA', addr: 'FEADDR', trace: 'fault' },
  invalidation: { ctl: 'IECTL', data: 'IEDATA', addr: 'IEADDR', trace: 'invalidate' },
  'page-request': { ctl: 'PECTL', data: 'PEDATA', addr: 'PEADDR', trace: 'page-request' },
};

export interface InterruptMessage {
  readonly source: InterruptSource;
  readonly data: number;
  readonly addr: number;
}

export class EventInterrupts {
  /** Interrupt messages sent, per source. */
  readonly sent: Record<InterruptSource, number> = { fault: 0, invalidation: 0, 'page-request': 0 };
  private readonly listeners: ((m: InterruptMessage) => void)[] = [];

  constructor(
    private readonly regs: RegisterFile,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  onInterrupt(listener: (m: InterruptMessage) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** An interrupt condition of `source` occurred. */
  raise(source: InterruptSource): void {
    const c = CTL[source];
    const ctl = this.regs.getN(c.ctl);
    if ((ctl & EVENT_CTL.IM) !== 0) this.regs.update(c.ctl, BigInt(EVENT_CTL.IP));
    else this.send(source);
  }

  /** After a guest write to the source's control register: unmasking sends a pending interrupt. */
  onControlWrite(source: InterruptSource): void {
    const c = CTL[source];
    const ctl = this.regs.getN(c.ctl);
    if ((ctl & EVENT_CTL.IM) === 0 && (ctl & EVENT_CTL.IP) !== 0) {
      this.regs.update(c.ctl, 0n, BigInt(EVENT_CTL.IP));
      this.send(source);
    }
  }

  /** The condition was serviced by software: drop a pending (masked) interrupt. */
  serviced(source: InterruptSource): void {
    this.regs.update(CTL[source].ctl, 0n, BigInt(EVENT_CTL.IP));
  }

  private send(source: InterruptSource): void {
    const c = CTL[source];
    const m: InterruptMessage = { source, data: this.regs.getN(c.data), addr: this.regs.getN(c.addr) };
    this.sent[source]++;
    this.trace.emit({ kind: c.trace, side: 'guest', vm: this.vm, name: `${source} interrupt`, args: { data: m.data, addr: m.addr } });
    for (const l of this.listeners) l(m);
  }
}
