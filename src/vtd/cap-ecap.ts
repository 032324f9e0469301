/**
 * CAP_REG (0x08) and ECAP_REG (0x10) field layouts, and the values vsva exposes to a guest.
 * Sources: VT-d spec §10.4.2 (CAP_REG) and §10.4.3 (ECAP_REG); QEMU hw/i386/intel_iommu_internal.h
 * `VTD_CAP_*` / `VTD_ECAP_*`.
 *
 * Exposed (docs/design.md §3.1): scalable mode (SMTS), PASID with PSS = 19 (20-bit PASIDs), first- and
 * second-level translation (FLTS, SLTS), QI, DT, PRS, PDS, SRS, EAFS, VCS, PT (pass-through
 * PASID entries, PGTT = 4), CAP.CM = 1, SAGAW 48-bit/4-level only, MGAW 48, FL1GP, SLLPS
 * 2M + 1G, PSI, MAMV 18, ND = 6 (16-bit domain IDs), DRD/DWD (QEMU's default), FRO/NFR and IRO
 * matching registers.ts. NEST is never exposed. FL5LP is off unless asked for.
 */
import { bit, bitRange, bits, decode, defineLayout, encode, type Decoded, type FieldInput } from './layout.js';
import { buildRegisterFile, VTD_FRCD_REG_NR, VTD_FRCD_REG_OFFSET, VTD_IOTLB_REG_OFFSET, type RegisterDef, type VcmdLayoutName } from './registers.js';

/** CAP_REG fields (VT-d spec §10.4.2). */
export const CAP_REG = defineLayout({
  name: 'CAP_REG',
  words: 1,
  fields: [
    bits('ND', 0, 2, 0, 'number of domains = 2^(4 + 2·ND)'),
    bit('AFL', 0, 3, 'advanced fault logging'),
    bit('RWBF', 0, 4, 'required write-buffer flushing'),
    bit('PLMR', 0, 5, 'protected low-memory region'),
    bit('PHMR', 0, 6, 'protected high-memory region'),
    bit('CM', 0, 7, 'caching mode'),
    bits('SAGAW', 0, 12, 8, 'supported AGAWs: bit 1 39-bit, bit 2 48-bit, bit 3 57-bit (abs bits 9/10/11)'),
    bits('MGAW', 0, 21, 16, 'maximum guest address width − 1'),
    bit('ZLR', 0, 22, 'zero-length read'),
    bits('FRO', 0, 33, 24, 'fault-recording register offset / 16'),
    bits('SLLPS', 0, 37, 34, 'second-level large pages: bit 0 2 MiB, bit 1 1 GiB'),
    bit('PSI', 0, 39, 'page-selective invalidation'),
    bits('NFR', 0, 47, 40, 'number of fault-recording registers − 1'),
    bits('MAMV', 0, 53, 48, 'maximum address mask value'),
    bit('DWD', 0, 54, 'write draining'),
    bit('DRD', 0, 55, 'read draining'),
    bit('FL1GP', 0, 56, 'first-level 1 GiB pages'),
    bit('PI', 0, 59, 'posted interrupts'),
    bit('FL5LP', 0, 60, 'first-level 5-level paging'),
    bit('ECMDS', 0, 61, 'enhanced command support (Linux; VB reserved)'),
    bit('ESIRTPS', 0, 62, 'enhanced set interrupt remap table pointer support'),
    bit('ESRTPS', 0, 63, 'enhanced set root table pointer support'),
  ],
  reserved: [bitRange(15, 13) | bitRange(23, 23) | bitRange(38, 38) | bitRange(58, 57)],
});

/** ECAP_REG fields (VT-d spec §10.4.3). */
export const ECAP_REG = defineLayout({
  name: 'ECAP_REG',
  words: 1,
  fields: [
    bit('C', 0, 0, 'page-walk coherency'),
    bit('QI', 0, 1, 'queued invalidation'),
    bit('DT', 0, 2, 'device-TLB'),
    bit('IR', 0, 3, 'interrupt remapping'),
    bit('EIM', 0, 4, 'extended interrupt mode'),
    bit('PT', 0, 6, 'pass-through'),
    bit('SC', 0, 7, 'snoop control'),
    bits('IRO', 0, 17, 8, 'IOTLB register offset / 16'),
    bits('MHMV', 0, 23, 20, 'maximum handle mask value'),
    bit('MTS', 0, 25, 'memory type support'),
    bit('NEST', 0, 26, 'nested translation'),
    bit('DIS', 0, 27, 'Linux ecap_dis (VB reserved)'),
    bit('BROKEN_PASID', 0, 28, 'Linux ecap_broken_pasid (VB deprecated)'),
    bit('PRS', 0, 29, 'page requests'),
    bit('ERS', 0, 30, 'execute requests'),
    bit('SRS', 0, 31, 'supervisor requests'),
    bit('NWFS', 0, 33, 'no write flag'),
    bit('EAFS', 0, 34, 'extended accessed flag'),
    bits('PSS', 0, 39, 35, 'PASID size − 1'),
    bit('PASID', 0, 40, 'process address space ID'),
    bit('DIT', 0, 41, 'device-TLB invalidation throttle'),
    bit('PDS', 0, 42, 'page-request drain'),
    bit('SMTS', 0, 43, 'scalable mode translation'),
    bit('VCS', 0, 44, 'virtual command'),
    bit('SLADS', 0, 45, 'second-level A/D (Linux SSADS)'),
    bit('SLTS', 0, 46, 'second-level translation'),
    bit('FLTS', 0, 47, 'first-level translation'),
    bit('SMPWCS', 0, 48, 'scalable-mode page-walk coherency'),
    bit('RPS', 0, 49, 'RID_PASID'),
    bit('PMS', 0, 51, 'performance monitoring (Linux)'),
    bit('ADMS', 0, 52, 'abort DMA mode'),
    bit('RPRIVS', 0, 53, 'RID_PRIV'),
  ],
  reserved: [bitRange(5, 5) | bitRange(19, 18) | bitRange(24, 24) | bitRange(32, 32) | bitRange(50, 50) | bitRange(63, 54)],
});

export type CapFields = Decoded<typeof CAP_REG>['fields'];
export type EcapFields = Decoded<typeof ECAP_REG>['fields'];

export function encodeCap(values: FieldInput<typeof CAP_REG>): bigint {
  return encode(CAP_REG, values)[0]!;
}
export function decodeCap(cap: bigint): Decoded<typeof CAP_REG> {
  return decode(CAP_REG, [cap]);
}
export function encodeEcap(values: FieldInput<typeof ECAP_REG>): bigint {
  return encode(ECAP_REG, values)[0]!;
}
export function decodeEcap(ecap: bigint): Decoded<typeof ECAP_REG> {
  return decode(ECAP_REG, [ecap]);
}

/** CAP.SAGAW bits (field value): 39-bit/3-level, 48-bit/4-level, 57-bit/5-level. */
export const SAGAW = { AW_39BIT: 0x2, AW_48BIT: 0x4, AW_57BIT: 0x8 } as const;
/** CAP.SLLPS bits (field value). */
export const SLLPS = { SIZE_2M: 0x1, SIZE_1G: 0x2 } as const;
/** QEMU's maximum address mask value. */
export const VTD_MAMV = 18;
/** PSS exposed by vsva: 19 → 20-bit PASIDs. */
export const VSVA_PSS = 19;
/** ND exposed by vsva: 6 → 2^16 domains (16-bit DIDs). */
export const VSVA_ND = 6;
/** Guest address width exposed by vsva. */
export const VSVA_MGAW_BITS = 48;

/** Number of domain IDs a CAP.ND value gives: 2^(4 + 2·ND). */
export function domainCount(nd: number): number {
  return 2 ** (4 + 2 * nd);
}

/** Number of PASIDs an ECAP.PSS value gives: 2^(PSS + 1) (Linux `max_pasids = 2 << pss`). */
export function pasidCount(pss: number): number {
  return 2 ** (pss + 1);
}

export interface VsvaCapOptions {
  /** Expose CAP.FL5LP (first-level 5-level paging). Default false. */
  readonly fl5lp?: boolean;
}

/** The CAP and ECAP values vsva exposes (docs/design.md §3.1). */
export function vsvaCapEcap(opts: VsvaCapOptions = {}): { cap: bigint; ecap: bigint } {
  const cap = encodeCap({
    ND: VSVA_ND,
    CM: 1,
    SAGAW: SAGAW.AW_48BIT,
    MGAW: VSVA_MGAW_BITS - 1,
    FRO: VTD_FRCD_REG_OFFSET / 16,
    SLLPS: SLLPS.SIZE_2M | SLLPS.SIZE_1G,
    PSI: 1,
    NFR: VTD_FRCD_REG_NR - 1,
    MAMV: VTD_MAMV,
    DWD: 1,
    DRD: 1,
    FL1GP: 1,
    FL5LP: opts.fl5lp === true,
  });
  const ecap = encodeEcap({
    QI: 1,
    DT: 1,
    PT: 1,
    IRO: VTD_IOTLB_REG_OFFSET / 16,
    NEST: 0,
    PRS: 1,
    SRS: 1,
    EAFS: 1,
    PSS: VSVA_PSS,
    PASID: 1,
    PDS: 1,
    SMTS: 1,
    VCS: 1,
    SLTS: 1,
    FLTS: 1,
  });
  return { cap, ecap };
}

/** vsva's full register file: buildRegisterFile with vsva's CAP/ECAP and the chosen VCMD layout. */
export function vsvaRegisterFile(vcmd: VcmdLayoutName | false = '3.1', opts: VsvaCapOptions = {}): RegisterDef[] {
  const { cap, ecap } = vsvaCapEcap(opts);
  const layoutEcap = vcmd === false ? ecap & ~(1n << 44n) : ecap;
  return buildRegisterFile({ cap, ecap: layoutEcap, vcmd });
}
