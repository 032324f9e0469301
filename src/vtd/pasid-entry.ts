/**
 * PASID directory entry (64-bit) and scalable-mode PASID table entry (512-bit).
 * Sources: VT-d spec §9.5 (scalable-mode PASID directory entry) and §9.6 (scalable-mode PASID
 * table entry); Linux drivers/iommu/intel/pasid.h; QEMU hw/i386/intel_iommu_internal.h.
 *
 * A 20-bit PASID splits into a directory index (bits 19:6, 8-byte directory entries) and a table
 * index (bits 5:0, 64 entries of 64 bytes = one 4 KiB table).
 *
 * PASID table entry words qw0..qw7; bit positions inside each word, with the spec's absolute
 * positions (bit n of the 512-bit entry) in the field docs. qw3..qw7 are reserved.
 */
import { FaultReason } from './fault.js';
import { U64_MASK, bit, bitRange, bits, decode, defineLayout, type Decoded, type ReservedViolation } from './layout.js';
import { PAGE_SIZE } from './page-table.js';

// ---- PASID split -------------------------------------------------------------------------------

/** PASID width: the PCIe PASID TLP prefix carries 20 bits (Linux MAX_NR_PASID_BITS; VT-d ECAP.PSS ≤ 19). */
export const PASID_BITS = 20;
/**
 * Number of PASIDs, 1 << PASID_BITS = 0x100000: an exclusive upper bound (what Linux's
 * drivers/iommu/intel/pasid.h calls PASID_MAX).
 */
export const PASID_LIMIT = 1 << PASID_BITS;
/** Largest valid PASID, PASID_LIMIT - 1 = 0xfffff: the inclusive bound wire fields are checked against. */
export const PASID_MAX = PASID_LIMIT - 1;
/** Directory index = PASID bits 19:6 (QEMU VTD_PASID_DIR_INDEX, Linux PASID_PDE_SHIFT). */
export const PASID_PDE_SHIFT = 6;
export const PASID_DIR_INDEX_MASK = 0x3fff;
/** Table index = PASID bits 5:0 (QEMU VTD_PASID_TABLE_INDEX, Linux PASID_PTE_MASK). */
export const PASID_PTE_MASK = 0x3f;
/** Entries per PASID table (Linux PASID_TBL_ENTRIES). */
export const PASID_TABLE_ENTRIES = 64;
export const PASID_DIR_ENTRY_SIZE = 8;
export const PASID_ENTRY_SIZE = 64;
export const PASID_ENTRY_WORDS = 8;

export function pasidDirIndex(pasid: number): number {
  return (pasid >>> PASID_PDE_SHIFT) & PASID_DIR_INDEX_MASK;
}

export function pasidTableIndex(pasid: number): number {
  return pasid & PASID_PTE_MASK;
}

// ---- PASID directory entry ---------------------------------------------------------------------

/** PASID directory entry (VT-d spec §9.5). Bits 11:2 reserved. */
export const PASID_DIR_ENTRY = defineLayout({
  name: 'PASID_DIR_ENTRY',
  words: 1,
  fields: [
    bit('P', 0, 0, 'present'),
    bit('FPD', 0, 1, 'fault processing disable'),
    bits('SMPTBLPTR', 0, 63, 12, 'PASID table pointer bits 63:12'),
  ],
  reserved: [bitRange(11, 2)],
});

/** Bit masks of a PASID directory entry, for hot paths. */
export const PASID_DIR_ENTRY_P = 1n;
export const PASID_DIR_ENTRY_FPD = 2n;
/** QEMU VTD_PASID_TABLE_BASE_ADDR_MASK: the table address is the entry with bits 11:0 cleared. */
export const PASID_TABLE_BASE_ADDR_MASK = U64_MASK & ~(PAGE_SIZE - 1n);

// ---- PASID table entry -------------------------------------------------------------------------

/** PGTT values (QEMU VTD_SM_PASID_ENTRY_{FLT,SLT,NESTED,PT}, Linux PASID_ENTRY_PGTT_*). Others invalid. */
export const PGTT = {
  /** first-level translation only */
  FLT: 1,
  /** second-level translation only */
  SLT: 2,
  /** nested: first level over second level */
  NESTED: 3,
  /** pass-through */
  PT: 4,
} as const;
export type PgttValue = (typeof PGTT)[keyof typeof PGTT];

/** FLPM values: first-level paging mode. 2 and 3 are reserved. */
export const FLPM = {
  LEVEL4: 0,
  LEVEL5: 1,
} as const;

/** AW values (second-level AGAW): SL levels = AW + 2. */
export const PASID_AW = {
  AW_39BIT: 1,
  AW_48BIT: 2,
  AW_57BIT: 3,
} as const;

/** Scalable-mode PASID table entry (VT-d spec §9.6, qw0..qw7). */
export const PASID_TABLE_ENTRY = defineLayout({
  name: 'PASID_TABLE_ENTRY',
  words: 8,
  fields: [
    // qw0
    bit('P', 0, 0, 'present'),
    bit('FPD', 0, 1, 'fault processing disable'),
    bits('AW', 0, 4, 2, 'second-level address width: SL levels = AW + 2 (1 = 39-bit, 2 = 48-bit)'),
    bit('SLEE', 0, 5, 'second-level execute enable'),
    bits('PGTT', 0, 8, 6, 'PASID granular translation type: 1 FL, 2 SL, 3 nested, 4 PT'),
    bit('SLADE', 0, 9, 'second-level A/D enable (Linux SSADE)'),
    bits('SLPTPTR', 0, 63, 12, 'second-level page table pointer bits 63:12'),
    // qw1 (abs 127:64)
    bits('DID', 1, 15, 0, 'domain ID, abs 79:64'),
    bit('PWSNP', 1, 23, 'page-walk snoop, abs 87'),
    bit('PGSNP', 1, 24, 'page snoop, abs 88'),
    bit('CD', 1, 25, 'cache disable, abs 89'),
    bit('EMTE', 1, 26, 'extended memory type enable, abs 90'),
    bits('EMT', 1, 29, 27, 'extended memory type, abs 93:91'),
    bit('PWT', 1, 30, 'page-level write-through, abs 94'),
    bit('PCD', 1, 31, 'page-level cache disable, abs 95'),
    bits('PAT', 1, 63, 32, 'page attribute table, abs 127:96'),
    // qw2 (abs 191:128)
    bit('SRE', 2, 0, 'supervisor request enable, abs 128'),
    bit('ERE', 2, 1, 'execute request enable, abs 129'),
    bits('FLPM', 2, 3, 2, 'first-level paging mode: 0 4-level, 1 5-level, abs 131:130'),
    bit('WPE', 2, 4, 'write-protect enable, abs 132'),
    bit('NXE', 2, 5, 'no-execute enable, abs 133'),
    bit('SMEP', 2, 6, 'supervisor mode execute protection, abs 134'),
    bit('EAFE', 2, 7, 'extended accessed flag enable, abs 135'),
    bits('FLPTR', 2, 63, 12, 'first-level page table pointer bits 63:12, abs 191:140'),
  ],
  reserved: [
    bitRange(11, 10), // qw0 11:10
    bitRange(22, 16), // qw1 22:16 (abs 86:80)
    bitRange(11, 8), // qw2 11:8 (abs 139:136)
    bitRange(63, 0), // qw3
    bitRange(63, 0), // qw4
    bitRange(63, 0), // qw5
    bitRange(63, 0), // qw6
    bitRange(63, 0), // qw7
  ],
});

/** Numeric shifts/masks of the most-read qw0/qw2 fields, for hot paths. */
export const PASID_ENTRY_QW0 = { P: 1n, FPD: 2n, PGTT_SHIFT: 6n, PGTT_MASK: 7n, AW_SHIFT: 2n, AW_MASK: 7n, SLPTPTR_MASK: 0xfffffffffffff000n } as const;
export const PASID_ENTRY_QW2 = { SRE: 1n, ERE: 2n, FLPM_SHIFT: 2n, FLPM_MASK: 3n, WPE: 16n, NXE: 32n, SMEP: 64n, EAFE: 128n, FLPTR_MASK: 0xfffffffffffff000n } as const;

/** PGTT of a qw0 word (any value 0..7, including invalid ones). */
export function pgttOf(qw0: bigint): number {
  return Number((qw0 >> 6n) & 7n);
}

export type PasidEntryFields = Decoded<typeof PASID_TABLE_ENTRY>['fields'];

/** What the device model may accept; omitted options are not checked. */
export interface PasidEntryCheckOptions {
  /** PGTT values this configuration accepts (QEMU: depends on x-flts / pt). Default: 1..4. */
  readonly allowedPgtt?: readonly number[];
  /** CAP.SAGAW field (bits 12:8 as a 5-bit value): AW must have its bit set when SL is used. */
  readonly sagaw?: number;
  /** CAP.FL5LP: when false, FLPM = 1 (5-level) is invalid for FL/nested entries. */
  readonly fl5lp?: boolean;
}

export type PasidEntryCheck =
  | { readonly ok: true; readonly fields: PasidEntryFields; readonly pgtt: PgttValue }
  | {
      readonly ok: false;
      /** 0x59 SPT.2 not present, 0x5a SPT.3 reserved bits, 0x5b SPT.4 invalid entry. */
      readonly fault: number;
      readonly why: string;
      readonly fields: PasidEntryFields;
      readonly reserved: readonly ReservedViolation[];
    };

/**
 * Check a PASID table entry the way the device model uses it, in the spec's order:
 * P clear → 0x59 (SPT.2); any reserved bit → 0x5a (SPT.3); PGTT not 1..4 or not allowed, FLPM
 * reserved (2/3) or unsupported for an FL/nested entry, AW not in SAGAW for an SL/nested entry
 * → 0x5b (SPT.4). FL fields are checked only when PGTT uses the first level (1 or 3), SL fields
 * only when it uses the second level (2 or 3). Never throws for 8 words.
 */
export function checkPasidEntry(words: readonly bigint[], opts: PasidEntryCheckOptions = {}): PasidEntryCheck {
  const d = decode(PASID_TABLE_ENTRY, words);
  const f = d.fields;
  const bad = (fault: number, why: string): PasidEntryCheck => ({ ok: false, fault, why, fields: f, reserved: d.reserved });
  if (f.P === 0n) return bad(FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT, 'PASID entry P is clear');
  if (d.reserved.length > 0) {
    const where = d.reserved.map((r) => `qw${r.word} bits 0x${r.bits.toString(16)}`).join(', ');
    return bad(FaultReason.SPT_3_PASID_ENTRY_RESERVED, `reserved bits set: ${where}`);
  }
  const pgtt = Number(f.PGTT);
  if (pgtt < PGTT.FLT || pgtt > PGTT.PT) return bad(FaultReason.SPT_4_INVALID_ENTRY, `PGTT ${pgtt} is reserved`);
  if (opts.allowedPgtt !== undefined && !opts.allowedPgtt.includes(pgtt)) {
    return bad(FaultReason.SPT_4_INVALID_ENTRY, `PGTT ${pgtt} is not supported by this IOMMU`);
  }
  if (pgtt === PGTT.FLT || pgtt === PGTT.NESTED) {
    const flpm = Number(f.FLPM);
    if (flpm > FLPM.LEVEL5) return bad(FaultReason.SPT_4_INVALID_ENTRY, `FLPM ${flpm} is reserved`);
    if (flpm === FLPM.LEVEL5 && opts.fl5lp === false) return bad(FaultReason.SPT_4_INVALID_ENTRY, 'FLPM 1 (5-level) without CAP.FL5LP');
  }
  if ((pgtt === PGTT.SLT || pgtt === PGTT.NESTED) && opts.sagaw !== undefined) {
    const aw = Number(f.AW);
    if (aw > 4 || ((opts.sagaw >> aw) & 1) === 0) return bad(FaultReason.SPT_4_INVALID_ENTRY, `AW ${aw} is not in SAGAW 0x${opts.sagaw.toString(16)}`);
  }
  return { ok: true, fields: f, pgtt: pgtt as PgttValue };
}
