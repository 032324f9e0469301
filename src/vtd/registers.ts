/**
 * The VT-d register file as data: offsets (QEMU `DMAR_*_REG`), width, reset value, writable mask,
 * write-1-to-clear mask and write-only mask, plus the bit layouts of the registers with fields.
 * Sources: VT-d spec ch. 10 (Register Descriptions); QEMU hw/i386/intel_iommu.c `vtd_init` and
 * hw/i386/intel_iommu_internal.h; docs/design.md §3.1 for the register set vsva exposes.
 *
 * Write semantics (QEMU `vtd_set_long`/`vtd_set_quad`): for a write of `val`,
 *   new = ((old & ~wmask) | (val & wmask)) & ~(val & w1cmask)
 * and a read returns `value & ~womask` (write-only bits read as 0, e.g. GCMD, CCMD.ICC…).
 * GCMD is handled by edge by the device model (docs/design.md §3.1); this file only says which bits exist.
 *
 * Masks follow QEMU `vtd_init`, except where a comment says otherwise (FSTS, page-request and
 * VCMD registers come from the spec / QEMU's out-of-tree vSVA and PRQ series).
 *
 * 32-bit bit constants are numbers (values < 2^32, unsigned); 64-bit ones are bigints. JS `|` on
 * numbers is signed 32-bit: combine bit 31 constants as `(GCMD.TE | GCMD.QIE) >>> 0`.
 */
import { fail } from '../errors.js';
import { U32_MASK, U64_MASK, bit, bits, defineLayout, type FieldDef, type Layout } from './layout.js';

// ---- offsets -----------------------------------------------------------------------------------

/** Register offsets from the register window base (QEMU `DMAR_*_REG`). VCMD registers: see VCMD_REG_OFFSETS. */
export const DMAR = {
  VER: 0x00,
  CAP: 0x08,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  CCMD: 0x28,
  FSTS: 0x34,
  FECTL: 0x38,
  FEDATA: 0x3c,
  FEADDR: 0x40,
  FEUADDR: 0x44,
  AFLOG: 0x58,
  PMEN: 0x64,
  PLMBASE: 0x68,
  PLMLIMIT: 0x6c,
  PHMBASE: 0x70,
  PHMLIMIT: 0x78,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  ICS: 0x9c,
  IECTL: 0xa0,
  IEDATA: 0xa4,
  IEADDR: 0xa8,
  IEUADDR: 0xac,
  IQERCD: 0xb0,
  IRTA: 0xb8,
  PQH: 0xc0,
  PQT: 0xc8,
  PQA: 0xd0,
  PRS: 0xdc,
  PECTL: 0xe0,
  PEDATA: 0xe4,
  PEADDR: 0xe8,
  PEUADDR: 0xec,
  /** IVA_REG = ECAP.IRO × 16 (QEMU DMAR_IOTLB_REG_OFFSET 0xf0). */
  IVA: 0xf0,
  /** IOTLB_REG = IVA + 8. */
  IOTLB: 0xf8,
  /** First fault recording register = CAP.FRO × 16 (QEMU DMAR_FRCD_REG_OFFSET 0x220). */
  FRCD: 0x220,
} as const;

/** IOTLB registers offset (ECAP.IRO = this / 16). */
export const VTD_IOTLB_REG_OFFSET = DMAR.IVA;
/** Fault recording registers offset (CAP.FRO = this / 16). */
export const VTD_FRCD_REG_OFFSET = DMAR.FRCD;
/** Number of fault recording registers (CAP.NFR = this − 1). QEMU: 1. */
export const VTD_FRCD_REG_NR = 1;
/** Bytes of MMIO the register window spans (covers VCMD registers at 0xE00..0xE37). */
export const VTD_REG_WINDOW_SIZE = 0x1000;

export type VcmdLayoutName = '3.1' | '3.3';

/** Offsets of the virtual command registers in the two spec layouts (docs/design.md §3.1). */
export const VCMD_REG_OFFSETS: { readonly [L in VcmdLayoutName]: { readonly VCCAP: number; readonly VCMD: number; readonly VCRSP: number } } = {
  '3.1': { VCCAP: 0xe00, VCMD: 0xe10, VCRSP: 0xe20 },
  '3.3': { VCMD: 0xe00, VCRSP: 0xe10, VCCAP: 0xe30 },
};

// ---- register layouts (fields) -----------------------------------------------------------------

/** A one-word register layout: every bit that is not a field is reserved (within `width` and above it). */
function defineRegister<const F extends readonly FieldDef[]>(name: string, fields: F): Layout<F[number]['name']> {
  let used = 0n;
  for (const f of fields) used |= ((1n << BigInt(f.width)) - 1n) << BigInt(f.lsb);
  return defineLayout({ name, words: 1, fields, reserved: [((1n << 64n) - 1n) & ~used] });
}

/** GCMD_REG (0x18): command bits; each sets/clears the GSTS bit at the same position when done. */
export const GCMD_REG = defineRegister('GCMD_REG', [
  bit('CFI', 0, 23, 'compatibility format interrupt'),
  bit('SIRTP', 0, 24, 'set interrupt remap table pointer'),
  bit('IRE', 0, 25, 'interrupt remapping enable'),
  bit('QIE', 0, 26, 'queued invalidation enable'),
  bit('WBF', 0, 27, 'write buffer flush'),
  bit('EAFL', 0, 28, 'enable advanced fault logging'),
  bit('SFL', 0, 29, 'set fault log'),
  bit('SRTP', 0, 30, 'set root table pointer'),
  bit('TE', 0, 31, 'translation enable'),
]);

/** GSTS_REG (0x1c): status bits at the same positions as their GCMD commands. */
export const GSTS_REG = defineRegister('GSTS_REG', [
  bit('CFIS', 0, 23),
  bit('IRTPS', 0, 24),
  bit('IRES', 0, 25),
  bit('QIES', 0, 26),
  bit('WBFS', 0, 27),
  bit('AFLS', 0, 28),
  bit('FLS', 0, 29),
  bit('RTPS', 0, 30),
  bit('TES', 0, 31),
]);

/** GCMD bits as numbers. */
export const GCMD = {
  TE: 0x80000000,
  SRTP: 0x40000000,
  SFL: 0x20000000,
  EAFL: 0x10000000,
  WBF: 0x08000000,
  QIE: 0x04000000,
  IRE: 0x02000000,
  SIRTP: 0x01000000,
  CFI: 0x00800000,
} as const;

/** GSTS bits as numbers (same positions as GCMD). */
export const GSTS = {
  TES: GCMD.TE,
  RTPS: GCMD.SRTP,
  FLS: GCMD.SFL,
  AFLS: GCMD.EAFL,
  WBFS: GCMD.WBF,
  QIES: GCMD.QIE,
  IRES: GCMD.IRE,
  IRTPS: GCMD.SIRTP,
  CFIS: GCMD.CFI,
} as const;

/** FSTS_REG (0x34). PRO (bit 7) is deprecated (MBZ) in newer specs; Linux still names and clears it. */
export const FSTS_REG = defineRegister('FSTS_REG', [
  bit('PFO', 0, 0, 'primary fault overflow (RW1C)'),
  bit('PPF', 0, 1, 'primary pending fault (RO: set while any FRCD.F is set)'),
  bit('AFO', 0, 2, 'advanced fault overflow (RW1C)'),
  bit('APF', 0, 3, 'advanced pending fault (RW1C)'),
  bit('IQE', 0, 4, 'invalidation queue error (RW1C)'),
  bit('ICE', 0, 5, 'invalidation completion error (RW1C)'),
  bit('ITE', 0, 6, 'invalidation time-out error (RW1C)'),
  bit('PRO', 0, 7, 'page request overflow (deprecated; now PRS.PRO)'),
  bits('FRI', 0, 15, 8, 'fault record index'),
]);

export const FSTS = {
  PFO: 0x01,
  PPF: 0x02,
  AFO: 0x04,
  APF: 0x08,
  IQE: 0x10,
  ICE: 0x20,
  ITE: 0x40,
  PRO: 0x80,
  FRI_SHIFT: 8,
  FRI_MASK: 0xff00,
} as const;

/** PRS_REG (0xdc): page request status, both RW1C. */
export const PRS_REG = defineRegister('PRS_REG', [bit('PPR', 0, 0, 'pending page request'), bit('PRO', 0, 1, 'page request overflow')]);
export const PRS = { PPR: 0x1, PRO: 0x2 } as const;

/** FECTL/IECTL/PECTL: interrupt mask (IM, bit 31) and interrupt pending (IP, bit 30). */
export const EVENT_CTL_REG = defineRegister('EVENT_CTL_REG', [bit('IP', 0, 30, 'interrupt pending (RO)'), bit('IM', 0, 31, 'interrupt mask')]);
export const EVENT_CTL = { IM: 0x80000000, IP: 0x40000000 } as const;

/** ICS_REG (0x9c): invalidation wait descriptor complete (RW1C). */
export const ICS_REG = defineRegister('ICS_REG', [bit('IWC', 0, 0, 'invalidation wait descriptor complete')]);
export const ICS = { IWC: 0x1 } as const;

/** IQA_REG (0x90): queue base, descriptor width (DW bit 11: 0 = 128-bit, 1 = 256-bit), queue size. */
export const IQA_REG = defineRegister('IQA_REG', [
  bits('QS', 0, 2, 0, 'queue size: 4 KiB × 2^QS'),
  bit('DW', 0, 11, 'descriptor width: 0 = 128-bit, 1 = 256-bit'),
  bits('IQA', 0, 63, 12, 'queue base address bits 63:12'),
]);
export const IQA = { QS_MASK: 7n, DW: 0x800n, IQA_MASK: 0xfffffffffffff000n } as const;

/** IQH_REG (0x80) / IQT_REG (0x88): QH/QT in bits 18:4 (128-bit descriptors) or 18:5 (256-bit). */
export const IQH_REG = defineRegister('IQH_REG', [bits('QH', 0, 18, 4, 'queue head (byte offset >> 4)')]);
export const IQT_REG = defineRegister('IQT_REG', [bits('QT', 0, 18, 4, 'queue tail (byte offset >> 4)')]);
/** QEMU VTD_IQH_QH_MASK / IQT mask: bits 18:4. */
export const VTD_IQ_PTR_MASK = 0x7fff0n;
/** With DW = 1, IQT bit 4 must be 0 (QEMU VTD_IQT_QT_256_RSV_BIT); otherwise IQE. */
export const VTD_IQT_QT_256_RSV_BIT = 0x10n;

/** Descriptor shift: 4 for 128-bit descriptors (DW = 0), 5 for 256-bit (DW = 1). */
export function iqDescShift(dw: 0 | 1 | boolean): 4 | 5 {
  return dw ? 5 : 4;
}

/** Descriptor index held in an IQH/IQT value (QEMU VTD_IQT_QT(dw, v)). */
export function iqIndexFromReg(value: bigint, dw: 0 | 1 | boolean): number {
  return dw ? Number((value >> 5n) & 0x3fffn) : Number((value >> 4n) & 0x7fffn);
}

/** IQH/IQT value for a descriptor index (QEMU `head << (dw ? 5 : 4) & 0x7fff0`). */
export function iqRegFromIndex(index: number, dw: 0 | 1 | boolean): bigint {
  return (BigInt(index) << BigInt(iqDescShift(dw))) & VTD_IQ_PTR_MASK;
}

/** Number of descriptors in the queue: 4 KiB × 2^QS bytes / descriptor size (QEMU `1 << (QS + 8 - dw)`). */
export function iqEntries(qs: number, dw: 0 | 1 | boolean): number {
  return 1 << (qs + 8 - (dw ? 1 : 0));
}

/** IQERCD_REG (0xb0): invalidation queue error record. */
export const IQERCD_REG = defineRegister('IQERCD_REG', [
  bits('IQEI', 0, 3, 0, 'invalidation queue error info'),
  bits('ITESID', 0, 47, 32, 'invalidation time-out error source ID'),
  bits('ICESID', 0, 63, 48, 'invalidation completion error source ID'),
]);

/**
 * IQEI codes: what set FSTS.IQE (VT-d spec rev. 5.10 §11.4.9.9 "Invalidation Queue Error Record
 * Register", field IQEI, bits 3:0). RSVD_FIELD_VIOLATION also covers a valid descriptor type whose fields
 * ask for something the type does not define (an undefined granularity, AM above CAP.MAMV).
 */
export const IQEI = {
  INFO_NOT_AVAILABLE: 0,
  INVALID_TAIL_PTR: 1,
  FETCH_DESCRIPTOR_ERR: 2,
  INVALID_DESCRIPTOR_TYPE: 3,
  RSVD_FIELD_VIOLATION: 4,
  INVALID_DESCRIPTOR_WIDTH: 5,
  QUEUE_TAIL_MISALIGNED: 6,
  INVALID_TTM: 7,
} as const;
export type IqeiCode = (typeof IQEI)[keyof typeof IQEI];

/** CCMD_REG (0x28): context command. */
export const CCMD_REG = defineRegister('CCMD_REG', [
  bits('DID', 0, 15, 0),
  bits('SID', 0, 31, 16),
  bits('FM', 0, 33, 32),
  bits('CAIG', 0, 60, 59, 'actual invalidation granularity'),
  bits('CIRG', 0, 62, 61, 'invalidation request granularity: 1 global, 2 domain, 3 device'),
  bit('ICC', 0, 63, 'invalidate context cache'),
]);

/** IVA_REG (IRO + 0): invalidate address. */
export const IVA_REG = defineRegister('IVA_REG', [bits('AM', 0, 5, 0, 'address mask'), bit('IH', 0, 6, 'invalidation hint'), bits('ADDR', 0, 63, 12)]);

/** IOTLB_REG (IRO + 8): IOTLB invalidate. */
export const IOTLB_REG = defineRegister('IOTLB_REG', [
  bits('DID', 0, 47, 32),
  bit('DW', 0, 48, 'drain writes'),
  bit('DR', 0, 49, 'drain reads'),
  bits('IAIG', 0, 58, 57, 'actual invalidation granularity'),
  bits('IIRG', 0, 61, 60, 'invalidation request granularity: 1 global, 2 domain, 3 page'),
  bit('IVT', 0, 63, 'invalidate IOTLB'),
]);

/** PQA_REG (0xd0): page request queue base and size (2^PQS 4 KiB pages). */
export const PQA_REG = defineRegister('PQA_REG', [bits('PQS', 0, 2, 0, 'queue size: 4 KiB × 2^PQS'), bits('PQA', 0, 63, 12)]);
/** PQH_REG (0xc0) / PQT_REG (0xc8): byte offsets of 32-byte entries, bits 18:5. */
export const PQH_REG = defineRegister('PQH_REG', [bits('PQH', 0, 18, 5)]);
export const PQT_REG = defineRegister('PQT_REG', [bits('PQT', 0, 18, 5)]);
export const VTD_PQ_PTR_MASK = 0x7ffe0n;
/** Bytes per page request descriptor. */
export const VTD_PRQ_ENTRY_SIZE = 32;

// ---- register definitions ----------------------------------------------------------------------

export interface RegisterDef {
  readonly name: string;
  readonly offset: number;
  readonly width: 32 | 64;
  readonly reset: bigint;
  /** Bits software may write. */
  readonly wmask: bigint;
  /** Bits a write of 1 clears. */
  readonly w1cmask: bigint;
  /** Write-only bits: they read as 0. */
  readonly womask: bigint;
  readonly doc?: string;
}

function reg(
  name: string,
  offset: number,
  width: 32 | 64,
  reset: bigint,
  wmask: bigint,
  w1cmask: bigint,
  doc?: string,
  womask = 0n,
): RegisterDef {
  return doc === undefined ? { name, offset, width, reset, wmask, w1cmask, womask } : { name, offset, width, reset, wmask, w1cmask, womask, doc };
}

export interface RegisterFileOptions {
  /** CAP_REG value (read-only). */
  readonly cap: bigint;
  /** ECAP_REG value (read-only). */
  readonly ecap: bigint;
  /** Which VCMD register layout to include, or false for none. Default '3.1'. */
  readonly vcmd?: VcmdLayoutName | false;
  /** VCCAP value (read-only). Default 1 (PAS) when VCMD is on. */
  readonly vccap?: bigint;
  /** VER_REG value. Default 0x30 (VT-d 3.0: QEMU's scalable-mode value; older QEMU 0x10). */
  readonly ver?: bigint;
}

/**
 * Every register of the window with its semantics (QEMU vtd_init masks unless noted), in
 * offset order. Fault recording registers appear as two 64-bit halves FRCD<n>_LO / FRCD<n>_HI.
 */
export function buildRegisterFile(opts: RegisterFileOptions): RegisterDef[] {
  const regs: RegisterDef[] = [
    reg('VER', DMAR.VER, 32, opts.ver ?? 0x30n, 0n, 0n, 'version: MAX 7:4, MIN 3:0'),
    reg('CAP', DMAR.CAP, 64, opts.cap, 0n, 0n, 'capability (cap-ecap.ts)'),
    reg('ECAP', DMAR.ECAP, 64, opts.ecap, 0n, 0n, 'extended capability (cap-ecap.ts)'),
    reg('GCMD', DMAR.GCMD, 32, 0n, 0xff800000n, 0n, 'global command; write-only, handled by edge', 0xff800000n),
    reg('GSTS', DMAR.GSTS, 32, 0n, 0n, 0n, 'global status'),
    reg('RTADDR', DMAR.RTADDR, 64, 0n, 0xfffffffffffffc00n, 0n, 'root table address: RTA 63:12, TTM 11:10'),
    reg('CCMD', DMAR.CCMD, 64, 0n, 0xe0000003ffffffffn, 0n, 'context command', 0x3ffff0000n),
    // Spec RW1C bits PFO, AFO, APF, IQE, ICE, ITE (QEMU defines only PFO|IQE = 0x11; it never sets the others).
    reg('FSTS', DMAR.FSTS, 32, 0n, 0n, 0x7dn, 'fault status'),
    reg('FECTL', DMAR.FECTL, 32, 0x80000000n, 0x80000000n, 0n, 'fault event control: IM 31, IP 30'),
    reg('FEDATA', DMAR.FEDATA, 32, 0n, 0xffffn, 0n, 'fault event data'),
    reg('FEADDR', DMAR.FEADDR, 32, 0n, 0xfffffffcn, 0n, 'fault event address'),
    reg('FEUADDR', DMAR.FEUADDR, 32, 0n, 0n, 0n, 'fault event upper address (RsvdZ without ECAP.EIM)'),
    reg('AFLOG', DMAR.AFLOG, 64, 0n, 0n, 0n, 'advanced fault log (not supported)'),
    reg('PMEN', DMAR.PMEN, 32, 0n, 0n, 0n, 'protected memory enable (RO: CAP.PLMR/PHMR clear)'),
    reg('PLMBASE', DMAR.PLMBASE, 32, 0n, 0n, 0n, 'protected low-memory base (not supported)'),
    reg('PLMLIMIT', DMAR.PLMLIMIT, 32, 0n, 0n, 0n, 'protected low-memory limit (not supported)'),
    reg('PHMBASE', DMAR.PHMBASE, 64, 0n, 0n, 0n, 'protected high-memory base (not supported)'),
    reg('PHMLIMIT', DMAR.PHMLIMIT, 64, 0n, 0n, 0n, 'protected high-memory limit (not supported)'),
    reg('IQH', DMAR.IQH, 64, 0n, 0n, 0n, 'invalidation queue head (RO)'),
    reg('IQT', DMAR.IQT, 64, 0n, VTD_IQ_PTR_MASK, 0n, 'invalidation queue tail'),
    reg('IQA', DMAR.IQA, 64, 0n, 0xfffffffffffff807n, 0n, 'invalidation queue address: IQA 63:12, DW 11, QS 2:0'),
    reg('ICS', DMAR.ICS, 32, 0n, 0n, 0x1n, 'invalidation completion status: IWC'),
    reg('IECTL', DMAR.IECTL, 32, 0x80000000n, 0x80000000n, 0n, 'invalidation event control: IM 31, IP 30'),
    reg('IEDATA', DMAR.IEDATA, 32, 0n, U32_MASK, 0n, 'invalidation event data'),
    reg('IEADDR', DMAR.IEADDR, 32, 0n, 0xfffffffcn, 0n, 'invalidation event address'),
    reg('IEUADDR', DMAR.IEUADDR, 32, 0n, 0n, 0n, 'invalidation event upper address (RsvdZ without ECAP.EIM)'),
    reg('IQERCD', DMAR.IQERCD, 64, 0n, 0n, 0n, 'invalidation queue error record (RO)'),
    reg('IRTA', DMAR.IRTA, 64, 0n, 0xfffffffffffff80fn, 0n, 'interrupt remapping table address'),
    // Page request registers (spec; QEMU PRQ series): software owns PQH and PQA, hardware PQT.
    reg('PQH', DMAR.PQH, 64, 0n, VTD_PQ_PTR_MASK, 0n, 'page request queue head'),
    reg('PQT', DMAR.PQT, 64, 0n, 0n, 0n, 'page request queue tail (RO)'),
    reg('PQA', DMAR.PQA, 64, 0n, 0xfffffffffffff007n, 0n, 'page request queue address: PQA 63:12, PQS 2:0'),
    reg('PRS', DMAR.PRS, 32, 0n, 0n, 0x3n, 'page request status: PPR 0, PRO 1 (RW1C)'),
    reg('PECTL', DMAR.PECTL, 32, 0x80000000n, 0x80000000n, 0n, 'page request event control: IM 31, IP 30'),
    reg('PEDATA', DMAR.PEDATA, 32, 0n, U32_MASK, 0n, 'page request event data'),
    reg('PEADDR', DMAR.PEADDR, 32, 0n, 0xfffffffcn, 0n, 'page request event address'),
    reg('PEUADDR', DMAR.PEUADDR, 32, 0n, 0n, 0n, 'page request event upper address (RsvdZ without ECAP.EIM)'),
    reg('IVA', DMAR.IVA, 64, 0n, 0xfffffffffffff07fn, 0n, 'invalidate address (write-only)', 0xfffffffffffff07fn),
    reg('IOTLB', DMAR.IOTLB, 64, 0n, 0xb003ffff00000000n, 0n, 'IOTLB invalidate'),
  ];
  for (let i = 0; i < VTD_FRCD_REG_NR; i++) {
    const off = VTD_FRCD_REG_OFFSET + i * 16;
    regs.push(reg(`FRCD${i}_LO`, off, 64, 0n, 0n, 0n, 'fault recording register bits 63:0 (RO)'));
    regs.push(reg(`FRCD${i}_HI`, off + 8, 64, 0n, 0n, 1n << 63n, 'fault recording register bits 127:64 (F is RW1C)'));
  }
  const layout = opts.vcmd ?? '3.1';
  if (layout !== false) {
    const o = VCMD_REG_OFFSETS[layout];
    regs.push(reg('VCCAP', o.VCCAP, 64, opts.vccap ?? 1n, 0n, 0n, `virtual command capability (spec ${layout} layout)`));
    regs.push(reg('VCMD', o.VCMD, 64, 0n, U64_MASK, 0n, `virtual command (spec ${layout} layout)`));
    regs.push(reg('VCRSP', o.VCRSP, 64, 0n, 0n, 0n, `virtual command response (spec ${layout} layout, RO)`));
  }
  regs.sort((a, b) => a.offset - b.offset);
  checkNoOverlap(regs);
  return regs;
}

function checkNoOverlap(regs: readonly RegisterDef[]): void {
  for (let i = 1; i < regs.length; i++) {
    const prev = regs[i - 1]!;
    if (prev.offset + prev.width / 8 > regs[i]!.offset) fail('EINVAL', `register ${prev.name} overlaps ${regs[i]!.name}`);
  }
}

/** The value after a software write of `val` to a register (QEMU vtd_set_quad/long semantics). */
export function applyRegisterWrite(def: RegisterDef, old: bigint, val: bigint): bigint {
  const v = BigInt.asUintN(def.width, val);
  return BigInt.asUintN(def.width, ((old & ~def.wmask) | (v & def.wmask)) & ~(v & def.w1cmask));
}

/** The value software reads (write-only bits read as 0). */
export function registerReadValue(def: RegisterDef, value: bigint): bigint {
  return value & ~def.womask;
}
