/**
 * Storage and access semantics of the virtual VT-d register window (docs/design.md §3.1), built from the
 * register definitions of src/vtd/registers.ts (QEMU offsets, reset values, writable, W1C and
 * write-only masks). Nothing here acts on a write; the model (vtd-model.ts) reacts afterwards.
 *
 * Access rules, as QEMU's `vtd_mem_read`/`vtd_mem_write` and a guest kernel use them:
 * - A 64-bit register may be accessed as a whole (8 bytes at its offset) or by 32-bit halves
 *   (4 bytes at offset = low half, offset + 4 = high half). A half write applies the register's
 *   masks to that half only: W1C bits of the other half are untouched.
 * - An 8-byte access at a 32-bit register covers it and the 32-bit register that follows
 *   (two 32-bit accesses, low first).
 * - Offsets that hold no register read as 0 and ignore writes (reported as `undefined`).
 */
import { fail } from '../../src/errors.js';
import { registerReadValue, type RegisterDef } from '../../src/vtd/registers.js';

/** Which part of a register an access touched. */
export type RegisterPart = 'all' | 'low' | 'high';

export interface RegisterWrite {
  readonly def: RegisterDef;
  readonly part: RegisterPart;
  /** Register value before and after the write (full width). */
  readonly old: bigint;
  readonly value: bigint;
  /** The bits the guest wrote, in place (for a half write: shifted into that half). */
  readonly written: bigint;
  /** Mask of the bits this access covered, in place. */
  readonly covered: bigint;
}

const M32 = 0xffff_ffffn;
const M64 = (1n << 64n) - 1n;

/**
 * A register's masks for a whole-register access, computed once (a register access is on the
 * guest's hot paths — VCMD, IQT — and every bigint operation allocates).
 */
interface WholeMasks {
  /** The register's width as a mask. */
  readonly width: bigint;
  /** Bits a write keeps from the old value: ~wmask within the width. */
  readonly keep: bigint;
  readonly w: bigint;
  readonly w1c: bigint;
  /** Bits a read returns: ~womask within the width. */
  readonly readable: bigint;
}

export class RegisterFile {
  private readonly byOffset = new Map<number, RegisterDef>();
  private readonly byName = new Map<string, RegisterDef>();
  private readonly values = new Map<number, bigint>();
  private readonly whole = new Map<RegisterDef, WholeMasks>();

  constructor(readonly defs: readonly RegisterDef[]) {
    for (const d of defs) {
      this.byOffset.set(d.offset, d);
      this.byName.set(d.name, d);
      this.values.set(d.offset, d.reset);
      const width = d.width === 64 ? M64 : M32;
      this.whole.set(d, { width, keep: ~d.wmask & width, w: d.wmask & width, w1c: d.w1cmask & width, readable: ~d.womask & width });
    }
  }

  /** The definition of a register by name (e.g. 'IQT'). */
  def(name: string): RegisterDef {
    const d = this.byName.get(name);
    if (d === undefined) fail('ENOENT', `no register ${name} in this register file`);
    return d;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** Hardware-side read of a register's full value (write-only bits included). */
  get(name: string): bigint {
    return this.values.get(this.def(name).offset)!;
  }

  /** Hardware-side write of a register's full value: no masks apply. */
  set(name: string, value: bigint): void {
    this.setDef(this.def(name), value);
  }

  /** `set` by definition (hot paths keep the definition: no lookup by name). */
  setDef(d: RegisterDef, value: bigint): void {
    this.values.set(d.offset, value >= 0n && value <= this.whole.get(d)!.width ? value : BigInt.asUintN(d.width, value));
  }

  /** Hardware-side: set and clear bits. */
  update(name: string, setBits: bigint, clearBits = 0n): void {
    this.set(name, (this.get(name) & ~clearBits) | setBits);
  }

  /**
   * A 32-bit register as a number (hot paths). A 64-bit register is refused: its high half would
   * be lost (read it as a bigint with `get`).
   */
  getN(name: string): number {
    const d = this.def(name);
    if (d.width !== 32) fail('EINVAL', `${name} is a 64-bit register; read it with get()`);
    return Number(this.values.get(d.offset)!);
  }

  /** Every register back to its reset value. */
  reset(): void {
    for (const d of this.defs) this.values.set(d.offset, d.reset);
  }

  /**
   * A guest read of `size` bytes at `offset`, as the guest sees it (write-only bits read 0).
   * @throws VsvaError EINVAL for a size other than 4/8 or a misaligned offset.
   */
  read(offset: number, size: 4 | 8): bigint {
    checkAccess(offset, size);
    const d = this.byOffset.get(offset);
    if (d !== undefined) {
      const raw = this.values.get(offset)!;
      // registerReadValue (value & ~womask), with the mask computed once.
      const v = d.womask === 0n ? raw : raw & this.whole.get(d)!.readable;
      if (size === 8 && d.width === 32) return v | (this.read(offset + 4, 4) << 32n);
      return size === 4 && d.width === 64 ? v & M32 : v;
    }
    const hi = this.byOffset.get(offset - 4);
    if (hi !== undefined && hi.width === 64 && size === 4) return (registerReadValue(hi, this.values.get(hi.offset)!) >> 32n) & M32;
    return 0n;
  }

  /**
   * A guest write of `size` bytes at `offset`. Returns what changed, one entry per register the
   * access covered (an 8-byte write at a 32-bit register covers two), or an empty list.
   */
  write(offset: number, size: 4 | 8, value: bigint): RegisterWrite[] {
    checkAccess(offset, size);
    const d = this.byOffset.get(offset);
    if (d !== undefined) {
      if (d.width === 64) return [this.apply(d, size === 8 ? 'all' : 'low', size === 8 && value >= 0n && value <= M64 ? value : BigInt.asUintN(size * 8, value))];
      const out = [this.apply(d, 'all', value & M32)];
      if (size === 8) out.push(...this.write(offset + 4, 4, (value >> 32n) & M32));
      return out;
    }
    const hi = this.byOffset.get(offset - 4);
    if (hi !== undefined && hi.width === 64 && size === 4) return [this.apply(hi, 'high', value & M32)];
    return [];
  }

  /**
   * `write(d.offset, 8, value)` of a 64-bit register, returning only the register's new value
   * (no record): the hot path of a register whose reaction needs nothing else (VCMD).
   * @throws VsvaError EINVAL for a register that is not 64 bits wide.
   */
  writeWhole64(d: RegisterDef, value: bigint): bigint {
    if (d.width !== 64) fail('EINVAL', `${d.name} is not a 64-bit register`);
    const raw = value >= 0n && value <= M64 ? value : BigInt.asUintN(64, value);
    const m = this.whole.get(d)!;
    let v = (this.values.get(d.offset)! & m.keep) | (raw & m.w);
    if (m.w1c !== 0n) v &= ~(raw & m.w1c);
    this.values.set(d.offset, v);
    return v;
  }

  private apply(d: RegisterDef, part: RegisterPart, raw: bigint): RegisterWrite {
    const old = this.values.get(d.offset)!;
    if (part === 'all') {
      // The whole register (raw is within its width): the general case below with the masks
      // precomputed and no operation that cannot change the result.
      const m = this.whole.get(d)!;
      let value = (old & m.keep) | (raw & m.w);
      if (m.w1c !== 0n) value &= ~(raw & m.w1c);
      this.values.set(d.offset, value);
      return { def: d, part, old, value, written: raw, covered: m.width };
    }
    // A 32-bit half of a 64-bit register.
    const shift = part === 'high' ? 32n : 0n;
    const covered = M32 << shift;
    const written = (raw << shift) & covered;
    const wmask = d.wmask & covered;
    const w1c = d.w1cmask & covered;
    const value = BigInt.asUintN(d.width, ((old & ~wmask) | (written & wmask)) & ~(written & w1c));
    this.values.set(d.offset, value);
    return { def: d, part, old, value, written, covered };
  }
}

function checkAccess(offset: number, size: number): void {
  if (size !== 4 && size !== 8) fail('EINVAL', `register access of ${size} bytes (4 or 8 only)`);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % size !== 0) fail('EINVAL', `register offset ${offset} is not ${size}-byte aligned`);
}
