/**
 * Virtual command interface (VCCAP / VCMD / VCRSP) in both register layouts.
 * Sources: VT-d spec ch. 10 (VCCAP_REG, VCMD_REG, VCRSP_REG), Linux drivers/iommu/intel/pasid.c
 * `vcmd_alloc_pasid` / `vcmd_free_pasid` (until 6.7), docs/design.md §3.1 for the two layouts.
 *
 * | layout | VCCAP | VCMD  | VCRSP | SC bits | operand / result | error SC |
 * | 3.1    | 0xE00 | 0xE10 | 0xE20 | 2:1     | bit 8 up         | 2        |
 * | 3.3    | 0xE30 | 0xE00 | 0xE10 | 7:1     | bit 16 up        | 16       |
 *
 * VCMD.CMD is bits 7:0 in both (1 ALLOC_PASID, 2 FREE_PASID). VCRSP.IP (bit 0) is set while a
 * command is in flight. The PASID in an operand or result is its low 20 bits.
 */
import { bit, bitRange, bits, decode, defineLayout, encode, type ReservedViolation } from './layout.js';
import { PASID_MAX } from './pasid-entry.js';
import { VCMD_REG_OFFSETS, type VcmdLayoutName } from './registers.js';

export { VCMD_REG_OFFSETS, type VcmdLayoutName };

/** VCMD.CMD values. */
export const VCMD_CMD = { NULL: 0, ALLOC_PASID: 1, FREE_PASID: 2 } as const;

/** VCCAP: PAS (PASID allocation supported) in bit 0, both layouts. */
export const VCCAP_REG = defineLayout({ name: 'VCCAP_REG', words: 1, fields: [bit('PAS', 0, 0, 'PASID allocation supported')], reserved: [bitRange(63, 1)] });
export const VCCAP_PAS = 1n;

/** The 20-bit PASID carried in an operand or result (PASID_MAX is all ones in 20 bits). */
const PASID_MASK = BigInt(PASID_MAX);

function layoutsFor(name: VcmdLayoutName, operandLsb: 8 | 16, scMsb: 2 | 7) {
  const vcmd = defineLayout({
    name: `VCMD_REG(${name})`,
    words: 1,
    fields: [bits('CMD', 0, 7, 0, 'command'), bits('OPERAND', 0, 63, operandLsb, 'operand (PASID for FREE_PASID)')],
    reserved: [operandLsb === 16 ? bitRange(15, 8) : 0n],
  });
  const vcrsp = defineLayout({
    name: `VCRSP_REG(${name})`,
    words: 1,
    fields: [bit('IP', 0, 0, 'in progress'), bits('SC', 0, scMsb, 1, 'status code'), bits('RSLT', 0, 63, operandLsb, 'result (allocated PASID)')],
    reserved: [operandLsb === 16 ? bitRange(15, 8) : bitRange(7, 3)],
  });
  return { vcmd, vcrsp };
}

const L31 = layoutsFor('3.1', 8, 2);
const L33 = layoutsFor('3.3', 16, 7);

/**
 * Status codes. 3.1: 1 undefined command (QEMU), 2 no PASID available (alloc) / invalid PASID
 * (free). 3.3: 16 for both PASID errors (Linux patch "iommu/vt-d: Update the virtual command
 * related registers", Lu Baolu, July 2021); it gives no 3.3 code for an undefined command, so
 * vsva reports 1 there too.
 */
export const VCMD_STATUS: { readonly [L in VcmdLayoutName]: { readonly SUCCESS: number; readonly UNDEFINED_CMD: number; readonly NO_PASID: number; readonly INVALID_PASID: number } } = {
  '3.1': { SUCCESS: 0, UNDEFINED_CMD: 1, NO_PASID: 2, INVALID_PASID: 2 },
  '3.3': { SUCCESS: 0, UNDEFINED_CMD: 1, NO_PASID: 16, INVALID_PASID: 16 },
};

/** Everything about one layout: offsets, register layouts, status codes, operand shift. */
export const VCMD_LAYOUTS = {
  '3.1': { name: '3.1', offsets: VCMD_REG_OFFSETS['3.1'], vcmd: L31.vcmd, vcrsp: L31.vcrsp, status: VCMD_STATUS['3.1'], operandShift: 8, scShift: 1, scMask: 0x3 },
  '3.3': { name: '3.3', offsets: VCMD_REG_OFFSETS['3.3'], vcmd: L33.vcmd, vcrsp: L33.vcrsp, status: VCMD_STATUS['3.3'], operandShift: 16, scShift: 1, scMask: 0x7f },
} as const;

export interface VcmdValue {
  readonly cmd: number;
  /** The whole operand field. */
  readonly operand: bigint;
  /** Low 20 bits of the operand: the PASID of FREE_PASID. */
  readonly pasid: number;
  readonly reserved: readonly ReservedViolation[];
}

export interface VcrspValue {
  readonly ip: boolean;
  readonly sc: number;
  /** The whole result field. */
  readonly result: bigint;
  /** Low 20 bits of the result: the PASID ALLOC_PASID returned. */
  readonly pasid: number;
  readonly reserved: readonly ReservedViolation[];
}

/**
 * The VCMD value a guest writes. `operand` is the PASID for FREE_PASID.
 * @throws VsvaError EINVAL when cmd or operand does not fit.
 */
export function encodeVcmd(layout: VcmdLayoutName, cmd: number, operand: bigint | number = 0): bigint {
  return encode(VCMD_LAYOUTS[layout].vcmd, { CMD: cmd, OPERAND: operand })[0]!;
}

/** Decode a written VCMD value (never throws). */
export function decodeVcmd(layout: VcmdLayoutName, value: bigint): VcmdValue {
  const d = decode(VCMD_LAYOUTS[layout].vcmd, [value]);
  return { cmd: Number(d.fields.CMD), operand: d.fields.OPERAND, pasid: Number(d.fields.OPERAND & PASID_MASK), reserved: d.reserved };
}

/**
 * The VCRSP value the device model shows.
 * @throws VsvaError EINVAL when sc or result does not fit the layout.
 */
export function encodeVcrsp(layout: VcmdLayoutName, r: { ip?: boolean; sc?: number; result?: bigint | number }): bigint {
  return encode(VCMD_LAYOUTS[layout].vcrsp, { IP: r.ip ?? false, SC: r.sc ?? 0, RSLT: r.result ?? 0 })[0]!;
}

/** Decode a VCRSP value (never throws). */
export function decodeVcrsp(layout: VcmdLayoutName, value: bigint): VcrspValue {
  const d = decode(VCMD_LAYOUTS[layout].vcrsp, [value]);
  return { ip: d.fields.IP === 1n, sc: Number(d.fields.SC), result: d.fields.RSLT, pasid: Number(d.fields.RSLT & PASID_MASK), reserved: d.reserved };
}
