/**
 * Scalable-mode fault reasons and the 128-bit fault recording register.
 * Sources: VT-d spec appendix A (Non-Recoverable Fault Reason Encodings), §10.4.14 (fault
 * recording registers), §9.9 (fault record); Linux drivers/iommu/intel/dmar.c
 * `dma_remap_sm_fault_reasons`; VirtualBox include/VBox/iommu-intel.h for the condition names.
 *
 * Condition names (RTA.1, SCT.4, SPT.4, …) are the spec's, as VirtualBox's header carries them;
 * texts are Linux's `dma_remap_sm_fault_reasons` strings. Codes only VirtualBox's header names
 * have no Linux text; their `text` is the spec condition name.
 *
 * Fault recording register (FRCD, 128 bits = lo, hi): absolute bits as the spec numbers them, so PV
 * (123:104) is hi bits 59:40 and is **20 bits** wide (QEMU packs only 16; Linux reads 20).
 */
import { bit, bitRange, bits, decode, defineLayout, encode } from './layout.js';

export interface FaultReasonInfo {
  /** Fault reason code as it appears in FRCD.FR. */
  readonly code: number;
  /** The spec's fault condition name (VB `VTDADDRFAULT_*`). */
  readonly spec: string;
  /** Linux's text for the code (or the spec name when only VB defines it). */
  readonly text: string;
  /** QEMU enum name, where QEMU raises this code. */
  readonly qemu?: string;
}

/** Named scalable-mode fault reasons: `<spec condition>_<meaning>`, greppable as e.g. `SPT_4`. */
export const FaultReason = {
  RTA_1_INVALID_ROOT_TABLE_ADDRESS: 0x30,
  RTA_2_TTM_0_FOR_PASID_REQUEST: 0x31,
  RTA_3_TTM_0_FOR_PAGE_GROUP_REQUEST: 0x32,
  RTA_4: 0x33,
  SRT_1_ROOT_ENTRY_ACCESS: 0x38,
  SRT_2_ROOT_ENTRY_NOT_PRESENT: 0x39,
  SRT_3_ROOT_ENTRY_RESERVED: 0x3a,
  SCT_1_CONTEXT_ENTRY_ACCESS: 0x40,
  SCT_2_CONTEXT_ENTRY_NOT_PRESENT: 0x41,
  SCT_3_CONTEXT_ENTRY_RESERVED: 0x42,
  SCT_4_INVALID_CONTEXT_ENTRY: 0x43,
  SCT_5_DTE_CLEAR: 0x44,
  SCT_6_PASIDE_CLEAR: 0x45,
  SCT_7_PASID_ABOVE_PDTS: 0x46,
  SCT_8_PRE_CLEAR: 0x47,
  SCT_9_RID_PASID_ERROR: 0x48,
  SPD_1_PASID_DIR_ENTRY_ACCESS: 0x50,
  SPD_2_PASID_DIR_ENTRY_NOT_PRESENT: 0x51,
  SPD_3_PASID_DIR_ENTRY_RESERVED: 0x52,
  SPT_1_PASID_ENTRY_ACCESS: 0x58,
  SPT_2_PASID_ENTRY_NOT_PRESENT: 0x59,
  SPT_3_PASID_ENTRY_RESERVED: 0x5a,
  SPT_4_INVALID_ENTRY: 0x5b,
  SPT_5_ERE_CLEAR: 0x5c,
  SPT_6_SRE_CLEAR: 0x5d,
  SFL_1_FL_ENTRY_ACCESS: 0x70,
  SFL_2_FL_ENTRY_NOT_PRESENT: 0x71,
  SFL_3_FL_ENTRY_RESERVED: 0x72,
  SFL_4_FL_PML4_ACCESS: 0x73,
  SFL_5_FL_ADDR_BEYOND_MGAW_NESTED: 0x74,
  SFL_6_FL_PML4_READ_NESTED: 0x75,
  SFL_7_FL_ENTRY_READ_NESTED: 0x76,
  SFL_8_FL_ENTRY_WRITE_NESTED: 0x77,
  SSL_1_SL_ENTRY_ACCESS: 0x78,
  SSL_2_SL_ENTRY_PERMISSION: 0x79,
  SSL_3_SL_ENTRY_RESERVED: 0x7a,
  SSL_4_INVALID_SLPTPTR: 0x7b,
  SSL_5_SL_AD_UPDATE_NO_SNOOP: 0x7c,
  SSL_6: 0x7d,
  SGN_1_NON_CANONICAL: 0x80,
  SGN_2_US_SUPERVISOR_ONLY: 0x81,
  SGN_3_NO_EXECUTE: 0x82,
  SGN_4_ADDR_BEYOND_DMA_MAX: 0x83,
  SGN_5_SL_ADDR_BEYOND_MAX: 0x84,
  SGN_6_NO_WRITE: 0x85,
  SGN_7_NO_READ: 0x86,
  SGN_8_INTERRUPT_ADDRESS: 0x87,
  SGN_9: 0x88,
  SGN_10: 0x89,
  SFL_9: 0x90,
  SFL_10_FL_AD_UPDATE_NO_SNOOP: 0x91,
} as const;

export type FaultReasonCode = (typeof FaultReason)[keyof typeof FaultReason];

/** The spec's scalable-mode fault reasons, row for row (code, spec condition, Linux text, QEMU enum). */
export const FAULT_REASONS: readonly FaultReasonInfo[] = [
  { code: 0x30, spec: 'RTA.1', text: 'SM: Invalid Root Table Address' },
  { code: 0x31, spec: 'RTA.2', text: 'SM: TTM 0 for request with PASID', qemu: 'VTD_FR_RTADDR_INV_TTM' },
  { code: 0x32, spec: 'RTA.3', text: 'SM: TTM 0 for page group request' },
  { code: 0x33, spec: 'RTA.4', text: 'RTA.4' },
  { code: 0x38, spec: 'SRT.1', text: 'SM: Error attempting to access Root Entry' },
  { code: 0x39, spec: 'SRT.2', text: 'SM: Present bit in Root Entry is clear' },
  { code: 0x3a, spec: 'SRT.3', text: 'SM: Non-zero reserved field set in Root Entry' },
  { code: 0x40, spec: 'SCT.1', text: 'SM: Error attempting to access Context Entry' },
  { code: 0x41, spec: 'SCT.2', text: 'SM: Present bit in Context Entry is clear' },
  { code: 0x42, spec: 'SCT.3', text: 'SM: Non-zero reserved field set in the Context Entry' },
  { code: 0x43, spec: 'SCT.4', text: 'SM: Invalid Context Entry' },
  { code: 0x44, spec: 'SCT.5', text: 'SM: DTE field in Context Entry is clear' },
  { code: 0x45, spec: 'SCT.6', text: 'SM: PASID Enable field in Context Entry is clear' },
  { code: 0x46, spec: 'SCT.7', text: 'SM: PASID is larger than the max in Context Entry' },
  { code: 0x47, spec: 'SCT.8', text: 'SM: PRE field in Context-Entry is clear', qemu: 'VTD_FR_SM_PRE_ABS' },
  { code: 0x48, spec: 'SCT.9', text: 'SM: RID_PASID field error in Context-Entry' },
  { code: 0x50, spec: 'SPD.1', text: 'SM: Error attempting to access the PASID Directory Entry', qemu: 'VTD_FR_PASID_DIR_ACCESS_ERR' },
  { code: 0x51, spec: 'SPD.2', text: 'SM: Present bit in Directory Entry is clear', qemu: 'VTD_FR_PASID_DIR_ENTRY_P' },
  { code: 0x52, spec: 'SPD.3', text: 'SM: Non-zero reserved field set in PASID Directory Entry' },
  { code: 0x58, spec: 'SPT.1', text: 'SM: Error attempting to access PASID Table Entry', qemu: 'VTD_FR_PASID_TABLE_ACCESS_ERR' },
  { code: 0x59, spec: 'SPT.2', text: 'SM: Present bit in PASID Table Entry is clear', qemu: 'VTD_FR_PASID_ENTRY_P' },
  { code: 0x5a, spec: 'SPT.3', text: 'SM: Non-zero reserved field set in PASID Table Entry' },
  { code: 0x5b, spec: 'SPT.4', text: 'SM: Invalid Scalable-Mode PASID Table Entry', qemu: 'VTD_FR_PASID_TABLE_ENTRY_INV' },
  { code: 0x5c, spec: 'SPT.5', text: 'SM: ERE field is clear in PASID Table Entry' },
  { code: 0x5d, spec: 'SPT.6', text: 'SM: SRE field is clear in PASID Table Entry' },
  { code: 0x70, spec: 'SFL.1', text: 'SM: Error attempting to access first-level paging entry', qemu: 'VTD_FR_FS_PAGING_ENTRY_INV' },
  { code: 0x71, spec: 'SFL.2', text: 'SM: Present bit in first-level paging entry is clear', qemu: 'VTD_FR_FS_PAGING_ENTRY_P' },
  { code: 0x72, spec: 'SFL.3', text: 'SM: Non-zero reserved field set in first-level paging entry', qemu: 'VTD_FR_FS_PAGING_ENTRY_RSVD' },
  { code: 0x73, spec: 'SFL.4', text: 'SM: Error attempting to access FL-PML4 entry', qemu: 'VTD_FR_PASID_ENTRY_FSPTPTR_INV' },
  { code: 0x74, spec: 'SFL.5', text: 'SM: First-level entry address beyond MGAW in Nested translation' },
  { code: 0x75, spec: 'SFL.6', text: 'SM: Read permission error in FL-PML4 entry in Nested translation' },
  { code: 0x76, spec: 'SFL.7', text: 'SM: Read permission error in first-level paging entry in Nested translation' },
  { code: 0x77, spec: 'SFL.8', text: 'SM: Write permission error in first-level paging entry in Nested translation' },
  { code: 0x78, spec: 'SSL.1', text: 'SM: Error attempting to access second-level paging entry' },
  { code: 0x79, spec: 'SSL.2', text: 'SM: Read/Write permission error in second-level paging entry' },
  { code: 0x7a, spec: 'SSL.3', text: 'SM: Non-zero reserved field set in second-level paging entry' },
  { code: 0x7b, spec: 'SSL.4', text: 'SM: Invalid second-level page table pointer' },
  { code: 0x7c, spec: 'SSL.5', text: 'SM: A/D bit update needed in second-level entry when set up in no snoop' },
  { code: 0x7d, spec: 'SSL.6', text: 'SSL.6' },
  { code: 0x80, spec: 'SGN.1', text: 'SM: Address in first-level translation is not canonical', qemu: 'VTD_FR_FS_NON_CANONICAL' },
  { code: 0x81, spec: 'SGN.2', text: 'SM: U/S set 0 for first-level translation with user privilege', qemu: 'VTD_FR_FS_PAGING_ENTRY_US' },
  { code: 0x82, spec: 'SGN.3', text: 'SM: No execute permission for request with PASID and ER=1' },
  { code: 0x83, spec: 'SGN.4', text: 'SM: Address beyond the DMA hardware max' },
  { code: 0x84, spec: 'SGN.5', text: 'SM: Second-level entry address beyond the max' },
  { code: 0x85, spec: 'SGN.6', text: 'SM: No write permission for Write/AtomicOp request', qemu: 'VTD_FR_SM_WRITE' },
  { code: 0x86, spec: 'SGN.7', text: 'SM: No read permission for Read/AtomicOp request' },
  { code: 0x87, spec: 'SGN.8', text: 'SM: Invalid address-interrupt address', qemu: 'VTD_FR_SM_INTERRUPT_ADDR' },
  { code: 0x88, spec: 'SGN.9', text: 'SGN.9' },
  { code: 0x89, spec: 'SGN.10', text: 'SGN.10' },
  { code: 0x90, spec: 'SFL.9', text: 'Unknown' },
  { code: 0x91, spec: 'SFL.10', text: 'SM: A/D bit update needed in first-level entry when set up in no snoop', qemu: 'VTD_FR_FS_BIT_UPDATE_FAILED' },
];

const byCode = new Map<number, FaultReasonInfo>(FAULT_REASONS.map((r) => [r.code, r]));

/** The table row for a scalable-mode fault reason code, or undefined for any other code. */
export function faultReasonInfo(code: number): FaultReasonInfo | undefined {
  return byCode.get(code);
}

/**
 * Scalable-mode reasons that are not "qualified": FPD cannot suppress them, because they arise
 * before the entry carrying FPD is known or read (VT-d spec §7.1.3 "Fault Conditions and
 * Remapping Hardware Behavior for Various Requests", the Qualified column; QEMU
 * `vtd_qualified_faults`): root table address, root entry access / P / reserved, context entry
 * access, PASID directory entry access, PASID table entry access.
 */
const NON_QUALIFIED_FAULTS: ReadonlySet<number> = new Set([0x30, 0x31, 0x32, 0x33, 0x38, 0x39, 0x3a, 0x40, 0x50, 0x58]);

/** Whether FPD (context, PASID directory or PASID table entry) suppresses recording of `reason`. */
export function isQualifiedFault(reason: number): boolean {
  return !NON_QUALIFIED_FAULTS.has(reason);
}

/** Interrupt-remapping fault reasons are 0x20–0x29; legacy DMA-remapping reasons 0x01–0x0E (not used by vsva). */
export const FAULT_REASON_IR_FIRST = 0x20;
export const FAULT_REASON_IR_LAST = 0x29;

// ---- fault recording register ------------------------------------------------------------------

/** Size of one fault recording register in bytes (two 64-bit words). */
export const FRCD_REG_SIZE = 16;

/**
 * Fault recording register: word 0 = bits 63:0, word 1 = bits 127:64 (hi). F is RW1C (see
 * registers.ts); every other field is read-only and written by the IOMMU.
 */
export const FRCD = defineLayout({
  name: 'FRCD',
  words: 2,
  fields: [
    bits('FI', 0, 63, 12, 'faulting page address (bits 63:12)'),
    bits('SID', 1, 15, 0, 'source ID, abs 79:64'),
    bit('T2', 1, 28, 'type bit 2, abs 92'),
    bit('PRIV', 1, 29, 'privilege mode requested, abs 93'),
    bit('EXE', 1, 30, 'execute requested, abs 94'),
    bit('PP', 1, 31, 'PASID present, abs 95'),
    bits('FR', 1, 39, 32, 'fault reason, abs 103:96'),
    bits('PV', 1, 59, 40, 'PASID value (20 bits), abs 123:104'),
    bits('AT', 1, 61, 60, 'address type, abs 125:124'),
    bit('T1', 1, 62, 'type bit 1, abs 126'),
    bit('F', 1, 63, 'fault (RW1C), abs 127'),
  ],
  reserved: [bitRange(11, 0), bitRange(27, 16)],
});

/** The F bit of FRCD's high word (bit 127): RW1C. */
export const FRCD_HI_F = 1n << 63n;

/**
 * Faulting request type, encoded in FRCD as T1 = bit 1 and T2 = bit 0 of this value
 * (VirtualBox `VTDREQTYPE`: write 0, page request 1, read 2, atomic op 3).
 */
export const FaultRequestType = {
  WRITE: 0,
  PAGE: 1,
  READ: 2,
  ATOMIC_OP: 3,
} as const;
export type FaultRequestTypeValue = (typeof FaultRequestType)[keyof typeof FaultRequestType];

/** T1/T2 for a request type. */
export function requestTypeBits(type: FaultRequestTypeValue): { T1: bigint; T2: bigint } {
  return { T1: BigInt((type >> 1) & 1), T2: BigInt(type & 1) };
}

/** Request type from decoded T1/T2. */
export function requestTypeFromBits(t1: bigint, t2: bigint): FaultRequestTypeValue {
  return (Number(t1 & 1n) * 2 + Number(t2 & 1n)) as FaultRequestTypeValue;
}

/** A fault record as the device model produces it. */
export interface FaultRecord {
  /** Faulting address; bits 11:0 are dropped (FI holds 63:12). */
  readonly addr: bigint;
  readonly sid: number;
  readonly reason: number;
  readonly type: FaultRequestTypeValue;
  /** PASID of the request, when it had one (sets PP). 20 bits. */
  readonly pasid?: number;
  readonly priv?: boolean;
  readonly exe?: boolean;
  readonly at?: number;
}

/**
 * Encode a fault record into FRCD's two words with F set.
 * @throws VsvaError EINVAL when a value does not fit its field.
 */
export function encodeFaultRecord(r: FaultRecord): bigint[] {
  const { T1, T2 } = requestTypeBits(r.type);
  return encode(FRCD, {
    FI: BigInt.asUintN(64, r.addr) >> 12n,
    SID: r.sid,
    T2,
    PRIV: r.priv ?? false,
    EXE: r.exe ?? false,
    PP: r.pasid !== undefined,
    FR: r.reason,
    PV: r.pasid ?? 0,
    AT: r.at ?? 0,
    T1,
    F: 1n,
  });
}

/** Decode FRCD words back into a fault record plus the F bit. Never throws for two words. */
export function decodeFaultRecord(words: readonly bigint[]): FaultRecord & { readonly fault: boolean } {
  const { fields: f } = decode(FRCD, words.length === 2 ? words : [words[0] ?? 0n, words[1] ?? 0n]);
  const base = {
    addr: f.FI << 12n,
    sid: Number(f.SID),
    reason: Number(f.FR),
    type: requestTypeFromBits(f.T1, f.T2),
    priv: f.PRIV === 1n,
    exe: f.EXE === 1n,
    at: Number(f.AT),
    fault: f.F === 1n,
  };
  return f.PP === 1n ? { ...base, pasid: Number(f.PV) } : base;
}
