/**
 * The invalidation queue (reference vtd-scalable-mode.md §3 "Queued invalidation"; DESIGN §3.1):
 * IQA (base, DW, QS), IQT written by software, IQH advanced by the model, descriptors of 128 or
 * 256 bits fetched from guest RAM and checked with decodeDescriptor.
 *
 * Error semantics (QEMU `vtd_handle_inv_queue_error`, spec IQEI codes):
 * - IQT bit 4 set with DW = 1 → IQE (IQEI 6, tail misaligned); tail ≥ queue size → IQE (IQEI 1);
 * - a descriptor outside guest RAM → IQEI 2; unknown type → IQEI 3; reserved bit set → IQEI 4;
 *   a 256-bit-only type in a 128-bit queue → IQEI 5;
 * - on an error FSTS.IQE is set, IQH is left at the bad descriptor (descriptors before it took
 *   effect), and nothing is fetched while IQE is set. When software clears IQE, fetching
 *   resumes from IQH (as hardware does — Linux's qi_check_fault rewrites the bad slot, then
 *   clears IQE); an IQT write then also resumes.
 *
 * Wait descriptors are handled here: first every earlier descriptor's effect reaches the host
 * (sink.flush), then SW writes the 32-bit status data to guest RAM and IF sets ICS.IWC and raises
 * the invalidation completion event. FN needs nothing more (descriptors are processed in order,
 * each completing before the next); PD is satisfied because page requests are written to the
 * page request queue synchronously when the host reports them.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { decodeDescriptor, descriptorBytes, InvDescType, type DecodedDescriptor } from '../../src/vtd/descriptors.js';
import { hex64, wordsFromBytes } from '../../src/vtd/layout.js';
import { GSTS, ICS, IQEI, VTD_IQT_QT_256_RSV_BIT, iqEntries, iqIndexFromReg, iqRegFromIndex } from '../../src/vtd/registers.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { FaultRecorder } from './fault-recorder.js';
import type { EventInterrupts } from './interrupts.js';
import type { RegisterFile } from './register-file.js';

export type ValidDescriptor = Extract<DecodedDescriptor, { kind: 'descriptor' }>;

export interface DescriptorSink {
  /**
   * Carry out one valid descriptor other than a wait (host work may be batched). Returns an
   * IQEI code when the descriptor is invalid for reasons beyond its reserved bits (a
   * granularity the type does not define, AM above MAMV); the queue then stops at it.
   */
  handle(d: ValidDescriptor): Promise<number | undefined>;
  /** Make every earlier descriptor's effect reach the host. */
  flush(): Promise<void>;
}

export class InvalidationQueue {
  readonly counters = { runs: 0, descriptors: 0, waits: 0, errors: 0, statusWrites: 0 };
  private running: Promise<void> = Promise.resolve();

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

  /** Process descriptors from IQH to IQT (serialised with any run in progress). */
  run(): Promise<void> {
    const next = this.running.then(() => this.process());
    this.running = next.catch(() => undefined);
    return next;
  }

  private async process(): Promise<void> {
    if ((this.regs.getN('GSTS') & GSTS.QIES) === 0) return;
    if ((this.regs.getN('FSTS') & 0x10) !== 0) return; // IQE pending: no fetch
    const iqa = this.regs.get('IQA');
    const dw = (iqa & 0x800n) !== 0n;
    const base = iqa & 0xffff_ffff_ffff_f000n;
    const entries = iqEntries(Number(iqa & 7n), dw);
    const iqt = this.regs.get('IQT');
    if (dw && (iqt & VTD_IQT_QT_256_RSV_BIT) !== 0n) return this.error(IQEI.QUEUE_TAIL_MISALIGNED, 'IQT bit 4 set with 256-bit descriptors');
    const tail = iqIndexFromReg(iqt, dw);
    if (tail >= entries) return this.error(IQEI.INVALID_TAIL_PTR, `tail ${tail} is beyond a ${entries}-entry queue`);
    let head = iqIndexFromReg(this.regs.get('IQH'), dw) % entries;
    if (head === tail) return;
    this.counters.runs++;
    const bytes = descriptorBytes(dw);
    const words = dw ? 4 : 2;
    while (head !== tail) {
      const gpa = base + BigInt(head * bytes);
      if (gpa + BigInt(bytes) > BigInt(this.ram.size)) {
        await this.sink.flush();
        return this.error(IQEI.FETCH_DESCRIPTOR_ERR, `descriptor ${head} at ${hex64(gpa)} is outside guest RAM`, head, dw);
      }
      const raw = wordsFromBytes(this.ram.read(Number(gpa), bytes), 0, words);
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
        return this.error(iqei, why, head, dw, raw);
      }
      if (this.trace.active) this.trace.emit({ kind: 'descriptor', side: 'guest', vm: this.vm, name: d.name, args: { index: head, qw0: hex64(raw[0]!), qw1: hex64(raw[1]!) } });
      if (d.type === InvDescType.WAIT) {
        await this.wait(d as Extract<ValidDescriptor, { type: 0x5 }>);
      } else {
        const bad = await this.sink.handle(d);
        if (bad !== undefined) {
          await this.sink.flush();
          return this.error(bad, `${d.name}: invalid granularity or address mask`, head, dw, raw);
        }
      }
      this.counters.descriptors++;
      head = (head + 1) % entries;
      this.regs.set('IQH', iqRegFromIndex(head, dw));
    }
    await this.sink.flush();
  }

  private async wait(d: Extract<ValidDescriptor, { type: 0x5 }>): Promise<void> {
    this.counters.waits++;
    await this.sink.flush();
    const f = d.fields;
    if (f.SW === 1n) {
      const addr = f.STATUS_ADDR << 2n;
      if (addr + 4n <= BigInt(this.ram.size)) {
        this.ram.writeU32(Number(addr), Number(f.STATUS_DATA));
        this.counters.statusWrites++;
      } else {
        this.log.warn({ addr: hex64(addr) }, 'wait descriptor status address is outside guest RAM; status not written');
      }
    }
    if (f.IF === 1n) {
      this.regs.update('ICS', BigInt(ICS.IWC));
      this.interrupts.raise('invalidation');
    }
  }

  private error(iqei: number, why: string, head?: number, dw?: boolean, raw?: readonly bigint[]): void {
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
