/**
 * VT-d first-level (x86-64 format) and second-level page-table entries, levels and strides.
 * Sources: VT-d spec §9.7 (first-level paging entries), §9.8 (second-level paging entries), §3.6
 * and §3.7 (levels and strides); QEMU hw/i386/intel_iommu_internal.h.
 *
 * Terminology: level 1 holds 4 KiB leaves (PTE), level 2 PDE (2 MiB leaf when PS=1), level 3 PDPE
 * (1 GiB leaf when PS=1), level 4 PML4E, level 5 PML5E. An entry's index at level L is address
 * bits (12 + 9L − 1):(12 + 9(L − 1)).
 *
 * Reserved masks are QEMU's (`VTD_FPTE_PAGE_L*_RSVD_MASK`, `VTD_SPTE_PAGE_L*_RSVD_MASK`), as
 * functions of the host address width (HAW, the `aw-bits` of the IOMMU, 39 or 48 in QEMU):
 * address bits HAW..51 are reserved in every entry.
 * - FL: levels 1–3 non-large `~(HAW | 0xfff0…)`; level 4 adds bit 7 (PS); 2 MiB leaf adds 20:13;
 *   1 GiB leaf adds 29:13. Level 5 (PML5E) is treated like level 4 (bit 7 reserved): QEMU only
 *   walks 4-level FL tables; the x86 format reserves PS in PML5E as in PML4E.
 * - SL: levels 1–3 `0x800 | ~(HAW | 0xbff0…)` (so bit 62, legacy TM, is reserved); level 4 adds
 *   bit 7; 2 MiB leaf `0x1ff800 | …`; 1 GiB leaf `0x3ffff800 | …`; level 5 like level 4. Bit 11
 *   (SNP) is reserved only outside scalable mode: QEMU un-reserves it when scalable mode (or
 *   snoop control) is on, which is always the case in vsva — pass `snpReserved: true` to get
 *   the legacy masks.
 *
 * `present`: a FL entry is present when P (bit 0) is set; a SL entry when R or W is set
 * (Linux `dma_pte_present`).
 */
import { fail } from '../errors.js';
import { aboveHaw, bit, bits, cachedLayout, defineLayout, withReserved, type Layout } from './layout.js';

// ---- levels and strides ---------------------------------------------------------------------

/** Base page: 4 KiB (VT-d spec §3.6 and §3.7: the smallest page both translation levels map). */
export const VTD_PAGE_SHIFT = 12;
/**
 * The base page size, 1 << VTD_PAGE_SHIFT bytes, as a bigint because addresses are bigint. The
 * one definition of "4 KiB page" in the tree: import it rather than writing 4096n again.
 */
export const PAGE_SIZE = 4096n;
/** Bits of address translated per level (512 entries of 8 bytes per 4 KiB table). */
export const VTD_STRIDE_SHIFT = 9;
export const VTD_PT_ENTRIES = 1 << VTD_STRIDE_SHIFT;
export const VTD_PT_INDEX_MASK = VTD_PT_ENTRIES - 1;
/** Size of one entry in bytes. */
export const VTD_PTE_SIZE = 8;

export type PtLevel = 1 | 2 | 3 | 4 | 5;
export type PageSize = '4K' | '2M' | '1G';

/** Page shift of each page size and the level whose entry maps it (PS=1 for 2M/1G). */
export const PAGE_SIZES: { readonly [S in PageSize]: { readonly shift: number; readonly bytes: number; readonly level: PtLevel } } = {
  '4K': { shift: VTD_PAGE_SHIFT, bytes: 1 << VTD_PAGE_SHIFT, level: 1 },
  '2M': { shift: 21, bytes: 1 << 21, level: 2 },
  '1G': { shift: 30, bytes: 1 << 30, level: 3 },
};

/** Address shift of the region one entry at `level` maps: 12 + 9·(level − 1) (QEMU `vtd_pt_level_shift`). */
export function levelShift(level: number): number {
  return VTD_PAGE_SHIFT + VTD_STRIDE_SHIFT * (level - 1);
}

/** Index of `addr`'s entry in the table at `level` (0..511). Exact for any 64-bit address. */
export function levelIndex(addr: bigint | number, level: number): number {
  if (typeof addr === 'number' && addr >= 0 && addr < 2 ** 53) return Math.floor(addr / 2 ** levelShift(level)) & VTD_PT_INDEX_MASK;
  return Number((BigInt(addr) >> BigInt(levelShift(level))) & BigInt(VTD_PT_INDEX_MASK));
}

/** Input address width of a table with `levels` levels: 3 → 39, 4 → 48, 5 → 57. */
export function addressWidthForLevels(levels: number): number {
  return VTD_PAGE_SHIFT + VTD_STRIDE_SHIFT * levels;
}

/** First-level address widths: 4-level = 48 bits, 5-level = 57 bits (Linux ADDR_WIDTH_4LEVEL/5LEVEL). */
export const FL_ADDR_WIDTH_4LEVEL = 48;
export const FL_ADDR_WIDTH_5LEVEL = 57;

/**
 * True when `addr` is canonical for a first-level table of input width `width` (48 or 57): bits
 * 63..width−1 all equal (QEMU `vtd_iova_fl_check_canonical`; failure is fault 0x80 SGN.1).
 */
export function isCanonical(addr: bigint, width: number): boolean {
  const a = BigInt.asUintN(64, addr);
  const top = a >> BigInt(width - 1);
  return top === 0n || top === (1n << BigInt(65 - width)) - 1n;
}

/** Bits 51:12 of an entry: the output/next-table address before HAW masking. */
export const PTE_ADDR_MASK = 0x000ffffffffff000n;

/** Address bits of a leaf mapping `size` (51:12, 51:21 or 51:30). */
export function leafAddrMask(size: PageSize): bigint {
  return PTE_ADDR_MASK & ~((1n << BigInt(PAGE_SIZES[size].shift)) - 1n);
}

// ---- first-level (x86-64) entry ----------------------------------------------------------------

/** FL PTE bit positions as numbers (hot paths test `Number(pte & 0xfffn)` etc.). */
export const FL_PTE_BIT = {
  P: 0,
  RW: 1,
  US: 2,
  PWT: 3,
  PCD: 4,
  A: 5,
  D: 6,
  PS: 7,
  EA: 10,
  XD: 63,
} as const;

/** FL PTE one-bit masks as bigints. */
export const FL_PTE_MASK = {
  P: 1n << 0n,
  RW: 1n << 1n,
  US: 1n << 2n,
  PWT: 1n << 3n,
  PCD: 1n << 4n,
  A: 1n << 5n,
  D: 1n << 6n,
  PS: 1n << 7n,
  EA: 1n << 10n,
  XD: 1n << 63n,
  /** In a 2 MiB / 1 GiB leaf, bit 12 is PAT (it is below the leaf's address bits). */
  PAT_LARGE: 1n << 12n,
} as const;

/** QEMU ignores FL bits 63:52 (`VTD_FS_UPPER_IGNORED`); XD is bit 63. */
export const VTD_FS_UPPER_IGNORED = 0xfff0000000000000n;

/**
 * The first-level entry's fields (VT-d spec §9.7). Bit 6 is D in a leaf (ignored in a table
 * entry); bit 7 is PS in PDPE/PDE, PAT in a 4 KiB PTE and reserved in PML4E/PML5E; in a large
 * leaf bit 12 is PAT and ADDR is read through `leafAddrMask(size)`.
 */
export const FL_PTE = defineLayout({
  name: 'FL_PTE',
  words: 1,
  fields: [
    bit('P', 0, 0, 'present'),
    bit('RW', 0, 1, 'read/write: 0 = read-only'),
    bit('US', 0, 2, 'user/supervisor: 0 = supervisor only'),
    bit('PWT', 0, 3, 'page-level write-through'),
    bit('PCD', 0, 4, 'page-level cache disable'),
    bit('A', 0, 5, 'accessed'),
    bit('D', 0, 6, 'dirty (leaf); ignored in a table entry'),
    bit('PS', 0, 7, 'page size (PDPE/PDE); PAT in a 4 KiB PTE; reserved in PML4E/PML5E'),
    bit('EA', 0, 10, 'extended accessed (when PASID-entry EAFE = 1)'),
    bits('ADDR', 0, 51, 12, 'next table / page frame address bits 51:12 (masked to HAW)'),
    bit('XD', 0, 63, 'execute disable'),
  ],
  reserved: [0n],
});

const flCache = new Map<string, Layout<(typeof FL_PTE.fields)[number]['name']>>();

/**
 * Reserved bits of a first-level entry at `level` (1..5); `ps` = the entry is a large leaf
 * (only meaningful at levels 2 and 3). QEMU `VTD_FPTE_*_RSVD_MASK(aw)`.
 */
export function flReservedMask(level: PtLevel, ps: boolean, haw: number): bigint {
  checkLevel(level);
  const base = aboveHaw(haw) & ~VTD_FS_UPPER_IGNORED;
  if (ps && level === 2) return 0x1fe000n | base;
  if (ps && level === 3) return 0x3fffe000n | base;
  if (level >= 4) return 0x80n | base;
  return base;
}

/** FL_PTE with the reserved mask of `level`/`ps`/`haw`, cached. */
export function flPteLayout(level: PtLevel, ps: boolean, haw: number): typeof FL_PTE {
  const key = `${level}:${ps && (level === 2 || level === 3)}:${haw}`;
  return cachedLayout(flCache, key, () => withReserved(FL_PTE, `FL_PTE(level ${level}${ps ? ', PS' : ''}, HAW ${haw})`, [flReservedMask(level, ps, haw)]));
}

/** FL present rule: P set. */
export function flPresent(pte: bigint): boolean {
  return (pte & 1n) !== 0n;
}

// ---- second-level entry ------------------------------------------------------------------------

/** SL PTE bit positions as numbers. */
export const SL_PTE_BIT = {
  R: 0,
  W: 1,
  X: 2,
  IPAT: 6,
  PS: 7,
  A: 8,
  D: 9,
  SNP: 11,
  TM: 62,
} as const;

/** SL PTE one-bit masks as bigints. */
export const SL_PTE_MASK = {
  R: 1n << 0n,
  W: 1n << 1n,
  X: 1n << 2n,
  EMT: 7n << 3n,
  IPAT: 1n << 6n,
  PS: 1n << 7n,
  A: 1n << 8n,
  D: 1n << 9n,
  SNP: 1n << 11n,
  /** legacy transient mapping; reserved in these masks */
  TM: 1n << 62n,
} as const;

/** QEMU `VTD_SL_IGN_COM`: bits 63 and 61:52 are ignored. */
export const VTD_SL_IGN_COM = 0xbff0000000000000n;
/** QEMU `VTD_SPTE_SNP`. */
export const VTD_SPTE_SNP = 0x800n;

/** The second-level entry's fields (VT-d spec §9.8). EMT/IPAT are meaningful in a leaf only. */
export const SL_PTE = defineLayout({
  name: 'SL_PTE',
  words: 1,
  fields: [
    bit('R', 0, 0, 'read'),
    bit('W', 0, 1, 'write'),
    bit('X', 0, 2, 'execute (with PASID-entry SLEE)'),
    bits('EMT', 0, 5, 3, 'extended memory type (leaf)'),
    bit('IPAT', 0, 6, 'ignore PAT (leaf)'),
    bit('PS', 0, 7, 'page size (levels 2/3); reserved at level 4'),
    bit('A', 0, 8, 'accessed (with SLADE)'),
    bit('D', 0, 9, 'dirty (with SLADE)'),
    bit('SNP', 0, 11, 'snoop (scalable mode / snoop control)'),
    bits('ADDR', 0, 51, 12, 'next table / page frame address bits 51:12 (masked to HAW)'),
  ],
  reserved: [0n],
});

const slCache = new Map<string, Layout<(typeof SL_PTE.fields)[number]['name']>>();

/**
 * Reserved bits of a second-level entry at `level` (1..5); `ps` = large leaf (levels 2/3).
 * QEMU `VTD_SPTE_*_RSVD_MASK(aw)`, with SNP (bit 11) un-reserved unless `snpReserved`.
 */
export function slReservedMask(level: PtLevel, ps: boolean, haw: number, snpReserved = false): bigint {
  checkLevel(level);
  const base = aboveHaw(haw) & ~VTD_SL_IGN_COM;
  let mask: bigint;
  if (ps && level === 2) mask = 0x1ff800n | base;
  else if (ps && level === 3) mask = 0x3ffff800n | base;
  else if (level >= 4) mask = 0x880n | base;
  else mask = 0x800n | base;
  return snpReserved ? mask : mask & ~VTD_SPTE_SNP;
}

/** SL_PTE with the reserved mask of `level`/`ps`/`haw`, cached. */
export function slPteLayout(level: PtLevel, ps: boolean, haw: number, snpReserved = false): typeof SL_PTE {
  const key = `${level}:${ps && (level === 2 || level === 3)}:${haw}:${snpReserved}`;
  return cachedLayout(slCache, key, () =>
    withReserved(SL_PTE, `SL_PTE(level ${level}${ps ? ', PS' : ''}, HAW ${haw})`, [slReservedMask(level, ps, haw, snpReserved)]),
  );
}

/** SL present rule: R or W set (Linux `dma_pte_present`). */
export function slPresent(pte: bigint): boolean {
  return (pte & 3n) !== 0n;
}

/** SL levels from a PASID entry's AW field: AW + 2 (QEMU `VTD_PE_GET_SL_LEVEL`). */
export function slLevelsFromAw(aw: number): number {
  return aw + 2;
}

/** FL levels from a PASID entry's FLPM field: 4 + FLPM (0 → 4-level, 1 → 5-level). */
export function flLevelsFromFlpm(flpm: number): number {
  return 4 + flpm;
}

function checkLevel(level: number): void {
  if (!Number.isInteger(level) || level < 1 || level > 5) fail('EINVAL', `page-table level ${level} is not in 1..5`);
}
