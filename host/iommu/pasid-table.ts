/**
 * A device's physical PASID table in host memory: a PASID directory (8-byte entries, indexed by
 * PASID bits 19:6) pointing to 4 KiB PASID tables of 64 × 64-byte scalable-mode PASID entries
 * (indexed by PASID bits 5:0). Layout from src/vtd/pasid-entry.ts (VT-d spec §9.5–9.6).
 *
 * The directory is sized for the device's PASID width (at least one entry, so RID_PASID 0 always
 * has a slot); PASID tables are allocated on first use and kept. An entry is written high words
 * first and qw0 (with P) last, the order in which the hardware may observe it.
 */
import { encode, type FieldInput } from '../../src/vtd/layout.js';
import {
  PASID_DIR_ENTRY,
  PASID_DIR_ENTRY_SIZE,
  PASID_ENTRY_SIZE,
  PASID_ENTRY_WORDS,
  PASID_TABLE_ENTRY,
  pasidDirIndex,
  pasidTableIndex,
} from '../../src/vtd/pasid-entry.js';
import type { HostMemory } from '../memory/host-memory.js';
import type { PageTablePool } from './pt-pool.js';

/** The zero bytes `clear` writes: word 0 of an entry, then its other words. */
const ZERO_WORD = new Uint8Array(8);
const ZERO_REST = new Uint8Array((PASID_ENTRY_WORDS - 1) * 8);

export type PasidEntryValues = FieldInput<typeof PASID_TABLE_ENTRY>;

export class PasidTable {
  /** HPA of the PASID directory (what the context entry's PASIDDIRPTR holds). */
  readonly dirHpa: number;
  /** Directory entries (PASID count / 64, at least 1). */
  readonly dirEntries: number;
  private readonly dirPages: number;
  private readonly tables = new Map<number, number>();

  constructor(
    private readonly pool: PageTablePool,
    private readonly mem: HostMemory,
    pasidBits: number,
  ) {
    this.dirEntries = Math.max(1, 2 ** pasidBits / 64);
    this.dirPages = Math.ceil((this.dirEntries * PASID_DIR_ENTRY_SIZE) / 4096);
    this.dirHpa = pool.allocContig(this.dirPages);
  }

  /** HPA of the directory entry covering `pasid`. */
  dirEntryHpa(pasid: number): number {
    return this.dirHpa + pasidDirIndex(pasid) * PASID_DIR_ENTRY_SIZE;
  }

  /** HPA of `pasid`'s PASID entry, or undefined when its PASID table was never allocated. */
  entryHpa(pasid: number): number | undefined {
    const t = this.tables.get(pasidDirIndex(pasid));
    return t === undefined ? undefined : t + pasidTableIndex(pasid) * PASID_ENTRY_SIZE;
  }

  /** Encode and write `pasid`'s entry (allocating its PASID table when needed). */
  write(pasid: number, values: PasidEntryValues): void {
    const words = encode(PASID_TABLE_ENTRY, values);
    const di = pasidDirIndex(pasid);
    let t = this.tables.get(di);
    if (t === undefined) {
      t = this.pool.alloc();
      this.tables.set(di, t);
      this.mem.writeU64(this.dirEntryHpa(pasid), encode(PASID_DIR_ENTRY, { P: 1, SMPTBLPTR: BigInt(t) >> 12n })[0]!);
    }
    const at = t + pasidTableIndex(pasid) * PASID_ENTRY_SIZE;
    for (let i = PASID_ENTRY_WORDS - 1; i >= 0; i--) this.mem.writeU64(at + i * 8, words[i]!);
  }

  /**
   * Clear `pasid`'s entry (P = 0, all fields zero): word 0 (with P) first, so the entry is not
   * present before its other words go (`write` stores word 0 last). Two byte copies, no 64-bit
   * values built: a VM release clears one entry per bound PASID.
   */
  clear(pasid: number): void {
    const at = this.entryHpa(pasid);
    if (at === undefined) return;
    this.mem.write(at, ZERO_WORD);
    this.mem.write(at + 8, ZERO_REST);
  }

  /** The 8 words of `pasid`'s entry as stored, or undefined when it has no PASID table. */
  read(pasid: number): bigint[] | undefined {
    const at = this.entryHpa(pasid);
    if (at === undefined) return undefined;
    const out: bigint[] = [];
    for (let i = 0; i < PASID_ENTRY_WORDS; i++) out.push(this.mem.readU64(at + i * 8));
    return out;
  }

  /** Free the directory and every PASID table. */
  dispose(): void {
    for (const t of this.tables.values()) this.pool.free(t);
    this.tables.clear();
    this.pool.free(this.dirHpa, this.dirPages);
  }
}
