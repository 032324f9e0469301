/**
 * RTADDR_REG, the scalable-mode root entry (128-bit) and the scalable-mode context entry (256-bit).
 * Sources: VT-d spec §10.4.6 (RTADDR_REG), §9.2 (scalable-mode root entry), §9.4 (scalable-mode
 * context entry); QEMU hw/i386/intel_iommu_internal.h.
 *
 * Reserved masks depend on the host address width (HAW, QEMU `aw-bits`): pointer bits HAW..63
 * are reserved (QEMU `VTD_ROOT_ENTRY_RSVD(aw) = 0xffe | ~HAW`,
 * `VTD_SM_CONTEXT_ENTRY_RSVD_VAL0(aw) = 0x1e0 | ~HAW`). Layouts are built per HAW and cached.
 */
import { aboveHaw, bit, bitRange, bits, cachedLayout, defineLayout } from './layout.js';

// ---- RTADDR_REG --------------------------------------------------------------------------------

/** RTADDR_REG (0x20): TTM 11:10, RTA 63:12; bits 9:0 reserved. */
export const RTADDR_REG = defineLayout({
  name: 'RTADDR_REG',
  words: 1,
  fields: [bits('TTM', 0, 11, 10, 'translation table mode'), bits('RTA', 0, 63, 12, 'root table address bits 63:12')],
  reserved: [bitRange(9, 0)],
});

/** TTM values (VB VTD_TTM_*). Linux and QEMU only test bit 10 (RTADDR_SMT). */
export const TTM = { LEGACY: 0, SCALABLE: 1, RESERVED: 2, ABORT_DMA: 3 } as const;
/** QEMU VTD_RTADDR_SMT / Linux DMA_RTADDR_SMT: bit 10. */
export const RTADDR_SMT = 1n << 10n;
export const RTADDR_RTA_MASK = 0xfffffffffffff000n;

// ---- root table --------------------------------------------------------------------------------

/** 256 root entries (one per bus), 16 bytes each. */
export const ROOT_TABLE_ENTRIES = 256;
export const ROOT_ENTRY_SIZE = 16;
/** devfn bit that selects the upper half of a scalable-mode root entry (QEMU VTD_DEVFN_CHECK_MASK). */
export const VTD_DEVFN_CHECK_MASK = 0x80;

function makeRootEntry(haw: number) {
  const rsvd = 0xffen | aboveHaw(haw);
  return defineLayout({
    name: `SM_ROOT_ENTRY(HAW ${haw})`,
    words: 2,
    fields: [
      bit('LP', 0, 0, 'lower present (devfn 0..127)'),
      bits('LCTP', 0, 63, 12, 'lower context-table pointer bits 63:12'),
      bit('UP', 1, 0, 'upper present (devfn 128..255)'),
      bits('UCTP', 1, 63, 12, 'upper context-table pointer bits 63:12'),
    ],
    reserved: [rsvd, rsvd],
  });
}
export type SmRootEntryLayout = ReturnType<typeof makeRootEntry>;
const rootCache = new Map<number, SmRootEntryLayout>();

/** Scalable-mode root entry layout for a host address width (cached). */
export function smRootEntryLayout(haw: number): SmRootEntryLayout {
  return cachedLayout(rootCache, haw, () => makeRootEntry(haw));
}

// ---- context table -----------------------------------------------------------------------------

/** A scalable-mode context table holds 128 entries of 32 bytes (QEMU VTD_CTX_ENTRY_SCALABLE_SIZE). */
export const SM_CONTEXT_TABLE_ENTRIES = 128;
export const SM_CONTEXT_ENTRY_SIZE = 32;

/** Index of a devfn's context entry inside the (lower or upper) scalable-mode context table. */
export function smContextIndex(devfn: number): number {
  return devfn & 0x7f;
}

/** QEMU VTD_SM_CONTEXT_ENTRY_RSVD_VAL1: qw1 bits 63:21. */
export const VTD_SM_CONTEXT_ENTRY_RSVD_VAL1 = 0xffffffffffe00000n;

function makeContextEntry(haw: number) {
  return defineLayout({
    name: `SM_CONTEXT_ENTRY(HAW ${haw})`,
    words: 4,
    fields: [
      bit('P', 0, 0, 'present'),
      bit('FPD', 0, 1, 'fault processing disable'),
      bit('DTE', 0, 2, 'device-TLB enable'),
      bit('PASIDE', 0, 3, 'PASID enable'),
      bit('PRE', 0, 4, 'page request enable'),
      bits('PDTS', 0, 11, 9, 'PASID directory size: 2^(PDTS + 7) entries'),
      bits('PASIDDIRPTR', 0, 63, 12, 'PASID directory pointer bits 63:12'),
      bits('RID_PASID', 1, 19, 0, 'PASID used for requests without PASID'),
      bit('RID_PRIV', 1, 20, 'privilege for requests without PASID (needs ECAP.RPRIVS)'),
    ],
    reserved: [0x1e0n | aboveHaw(haw), VTD_SM_CONTEXT_ENTRY_RSVD_VAL1, bitRange(63, 0), bitRange(63, 0)],
  });
}
export type SmContextEntryLayout = ReturnType<typeof makeContextEntry>;
const ctxCache = new Map<number, SmContextEntryLayout>();

/** Scalable-mode context entry layout for a host address width (cached). */
export function smContextEntryLayout(haw: number): SmContextEntryLayout {
  return cachedLayout(ctxCache, haw, () => makeContextEntry(haw));
}

/** Number of PASID directory entries a context entry's PDTS gives: 2^(PDTS + 7). */
export function pasidDirEntries(pdts: number): number {
  return 2 ** (pdts + 7);
}

/** Largest PASID (exclusive) a PDTS covers: entries × 64 PASIDs per table. */
export function pasidLimitForPdts(pdts: number): number {
  return pasidDirEntries(pdts) * 64;
}
