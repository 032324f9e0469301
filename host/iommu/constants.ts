/**
 * Numeric constants of the host IOMMU's hot paths, derived at module load from the bit-exact
 * declarations in src/vtd (the formats are declared once, there). PTEs are handled as two
 * 32-bit halves (`lo` = bits 31:0, `hi` = bits 63:32), so every mask here is split the same way.
 *
 * VT-d spec §9.6 (PASID table entries), §9.7–9.8 (first- and second-level paging entries).
 */
import { FL_PTE_MASK, SL_PTE_MASK, PTE_ADDR_MASK } from '../../src/vtd/page-table.js';
import { PGTT } from '../../src/vtd/pasid-entry.js';

const lo32 = (v: bigint): number => Number(v & 0xffffffffn);
const hi32 = (v: bigint): number => Number((v >> 32n) & 0xffffffffn);

// ---- request flags (the `flags` argument of the numeric translation API) -----------------------

/** The request writes (otherwise it reads). */
export const ACCESS_WRITE = 1;
/** The request is an execute (instruction fetch) request: ER=1 in the PASID prefix. */
export const ACCESS_EXEC = 2;
/** The request is privileged (supervisor): PR=1 in the PASID prefix. */
export const ACCESS_PRIV = 4;
/**
 * Translate without recording a fault (an ATS translation request: a failure is returned to the
 * device, which may then issue a page request; nothing is reported to the fault handler).
 */
export const REQ_NO_REPORT = 8;
/** The PASID argument value of a request without PASID. */
export const NO_PASID = -1;
/** PASID entry used for requests without PASID (the context entry's RID_PASID; Linux IOMMU_NO_PASID). */
export const RID_PASID = 0;
/** Returned by translation calls on a fault; details in the engine's `fault` object. */
export const XLATE_FAULT = -1;

/**
 * Access classes: one bit per (privilege, kind) pair. An IOTLB entry carries the set of classes
 * it permits, so a hit is one AND. Index = (priv ? 3 : 0) + (exec ? 2 : write ? 1 : 0).
 */
export const CLASS_COUNT = 6;
/** Class bit of a request's `flags & 7`; write+exec (3, 7) is not a valid request and maps to 0. */
export const CLASS_BIT_OF_FLAGS: Int32Array = (() => {
  const t = new Int32Array(8);
  for (let f = 0; f < 8; f++) {
    const w = (f & ACCESS_WRITE) !== 0;
    const x = (f & ACCESS_EXEC) !== 0;
    if (w && x) continue;
    t[f] = 1 << (((f & ACCESS_PRIV) !== 0 ? 3 : 0) + (x ? 2 : w ? 1 : 0));
  }
  return t;
})();

// ---- first-level PTE halves ---------------------------------------------------------------------

export const FL_P = lo32(FL_PTE_MASK.P);
export const FL_RW = lo32(FL_PTE_MASK.RW);
export const FL_US = lo32(FL_PTE_MASK.US);
export const FL_A = lo32(FL_PTE_MASK.A);
export const FL_D = lo32(FL_PTE_MASK.D);
export const FL_PS = lo32(FL_PTE_MASK.PS);
export const FL_EA = lo32(FL_PTE_MASK.EA);
/** XD is bit 63: bit 31 of the high half. */
export const FL_XD_HI = hi32(FL_PTE_MASK.XD);

// ---- second-level PTE halves --------------------------------------------------------------------

export const SL_R = lo32(SL_PTE_MASK.R);
export const SL_W = lo32(SL_PTE_MASK.W);
export const SL_X = lo32(SL_PTE_MASK.X);
export const SL_PS = lo32(SL_PTE_MASK.PS);
export const SL_A = lo32(SL_PTE_MASK.A);
export const SL_D = lo32(SL_PTE_MASK.D);

// ---- address field (bits 51:12) -----------------------------------------------------------------

/** Address bits 31:12 in the low half. */
export const PTE_ADDR_LO = lo32(PTE_ADDR_MASK);
/** Address bits 51:32 in the high half. */
export const PTE_ADDR_HI = hi32(PTE_ADDR_MASK);
/** Low-half address bits of a 2 MiB / 1 GiB leaf (bits 31:21 / 31:30). */
export const PTE_ADDR_LO_2M = PTE_ADDR_LO & ~((1 << 21) - 1);
export const PTE_ADDR_LO_1G = PTE_ADDR_LO & ~((1 << 30) - 1);

export const TWO_32 = 4294967296;

/** The PGTT values, as numbers (src/vtd/pasid-entry.ts PGTT). */
export const PGTT_FL = PGTT.FLT;
export const PGTT_SL = PGTT.SLT;
export const PGTT_NESTED = PGTT.NESTED;
export const PGTT_PT = PGTT.PT;

/** Interrupt address range 0xFEEx_xxxx: DMA whose output falls here faults with 0x87 (SGN.8). */
export const INTERRUPT_RANGE_BASE = 0xfee00000;
export const INTERRUPT_RANGE_END = 0xfef00000;

/** Page sizes by leaf level (index = level): 1 → 4 KiB, 2 → 2 MiB, 3 → 1 GiB. */
export const LEVEL_PAGE_BYTES = [0, 4096, 2 ** 21, 2 ** 30, 2 ** 39, 2 ** 48] as const;
/** 4 KiB pages per leaf by level. */
export const LEVEL_PAGES = [0, 1, 512, 262144, 2 ** 27, 2 ** 36] as const;
