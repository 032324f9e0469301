/**
 * Invalidation queue descriptors, types 0x1–0x9, in 128-bit (DW = 0) and 256-bit (DW = 1) form.
 * Sources: VT-d spec §6.5.2 (queued invalidation descriptors, one subsection per type) and ch. 7
 * for the page group response; QEMU hw/i386/intel_iommu_internal.h `VTD_INV_DESC_*`.
 *
 * Type field: 7 bits, qw0[3:0] | qw0[11:9] << 4 (fields TYPE_3_0 and TYPE_6_4 of every layout).
 *
 * Reserved masks: QEMU's newer masks that leave type bits 11:9 to the type field (`…f1c0`
 * style), with these deliberate differences, each to follow the spec's field tables:
 * - context-cache qw0 and IOTLB qw0: the older QEMU masks (…ffc0, …ff00) with 11:9 freed.
 * - invalidation wait qw0 `0xfffff100`: bits 31:12 and 8. QEMU's `0xffffff80` also reserves 11:9
 *   and PD (bit 7); vsva exposes ECAP.PDS, so PD is a field.
 * - device-TLB / PASID-based device-TLB qw0: PFSID (15:12 and 63:52) is a field, as in the spec
 *   and Linux `QI_DEV_IOTLB_PFSID`; QEMU's masks reserve it.
 * - page group response qw0 `0xfff00000000001c0`: PDP (bit 5) is a field (Linux QI_PGRP_PDP);
 *   QEMU's PRI series reserves it.
 * In 256-bit form qw2 and qw3 are reserved, except the page group response's private data.
 *
 * Types 0x6 (PASID-based IOTLB), 0x7 (PASID-cache), 0x8 (PASID-based device-TLB) and 0x9 (page
 * group response) are valid only in a 256-bit queue (QEMU applies its 256-bit checks to 0x6–0x8;
 * the page group response carries 256-bit private data). Found in a 128-bit queue they are an
 * invalid-width error (IQEI 5).
 *
 * `decodeDescriptor` never throws: it returns the type with its fields and reserved-bit
 * violations, or an invalid-type / invalid-width result, for the device model to turn into IQE.
 */
import { fail } from '../errors.js';
import { bit, bitRange, bits, decode, defineLayout, encode, type FieldDef, type FieldInput, type FieldValues, type Layout, type ReservedViolation } from './layout.js';

/** Descriptor types (Linux QI_*_TYPE, QEMU VTD_INV_DESC_*). */
export const InvDescType = {
  /** context-cache invalidate */
  CC: 0x1,
  /** IOTLB invalidate */
  IOTLB: 0x2,
  /** device-TLB invalidate */
  DEVICE_IOTLB: 0x3,
  /** interrupt entry cache invalidate */
  IEC: 0x4,
  /** invalidation wait */
  WAIT: 0x5,
  /** PASID-based IOTLB invalidate (Linux QI_EIOTLB_TYPE) */
  PIOTLB: 0x6,
  /** PASID-cache invalidate */
  PC: 0x7,
  /** PASID-based device-TLB invalidate (Linux QI_DEIOTLB_TYPE) */
  PASID_DEVICE_IOTLB: 0x8,
  /** page group response */
  PGRP_RESP: 0x9,
} as const;
export type InvDescTypeValue = (typeof InvDescType)[keyof typeof InvDescType];

/** Bytes per descriptor for a DW value. */
export function descriptorBytes(dw: 0 | 1 | boolean): 16 | 32 {
  return dw ? 32 : 16;
}

/** The 7-bit type of a descriptor's qw0: bits 3:0 and 11:9 (QEMU VTD_INV_DESC_TYPE). */
export function descriptorType(qw0: bigint): number {
  return Number(((qw0 >> 5n) & 0x70n) | (qw0 & 0xfn));
}

/** qw0 bits holding a 7-bit type. */
export function descriptorTypeBits(type: number): bigint {
  return BigInt(type & 0xf) | (BigInt((type >> 4) & 0x7) << 9n);
}

// ---- granularities -----------------------------------------------------------------------------

/** Context-cache G (QEMU VTD_INV_DESC_CC_*). */
export const CC_G = { GLOBAL: 1, DOMAIN: 2, DEVICE: 3 } as const;
/** IOTLB G: global, domain-selective, page-selective. */
export const IOTLB_G = { GLOBAL: 1, DSI: 2, PSI: 3 } as const;
/** IEC G: 0 global, 1 index-selective (QI_IEC_SELECTIVE). */
export const IEC_G = { GLOBAL: 0, INDEX: 1 } as const;
/** PASID-based IOTLB G: 2 all-within-PASID (non-globals), 3 page-selective-within-PASID; 0/1 invalid. */
export const PIOTLB_G = { ALL_IN_PASID: 2, PSI_IN_PASID: 3 } as const;
/** PASID-cache G: 0 domain-selective, 1 PASID-selective, 3 global; 2 invalid. */
export const PC_G = { DSI: 0, PASID_SI: 1, GLOBAL: 3 } as const;
/** PASID-based device-TLB G bit: 1 = all PASIDs of the SID (QI_DEV_IOTLB_GRAN_ALL). */
export const PASID_DEVICE_IOTLB_G = { SELECTED: 0, ALL_PASIDS: 1 } as const;
/** Page group response codes (QI_RESP_*). */
export const PGRP_RESP_CODE = { SUCCESS: 0x0, INVALID: 0x1, FAILURE: 0xf } as const;

// ---- layouts -----------------------------------------------------------------------------------

const TYPE_FIELDS = [bits('TYPE_3_0', 0, 3, 0, 'descriptor type bits 3:0'), bits('TYPE_6_4', 0, 11, 9, 'descriptor type bits 6:4')] as const;
const ALL = bitRange(63, 0);

export interface DescriptorDef<L128 extends Layout = Layout, L256 extends Layout = Layout> {
  readonly type: InvDescTypeValue;
  readonly name: string;
  /** The 128-bit form (qw0, qw1). */
  readonly d128: L128;
  /** The 256-bit form (qw0..qw3). */
  readonly d256: L256;
  /** Valid only in a 256-bit queue (DW = 1). */
  readonly only256: boolean;
}

function descriptor<const F extends readonly FieldDef[], const X extends readonly FieldDef[] = readonly []>(
  type: InvDescTypeValue,
  name: string,
  fields: F,
  rsvd: readonly [bigint, bigint],
  only256: boolean,
  opts: { extra256?: X; rsvd256?: readonly [bigint, bigint] } = {},
) {
  const d128 = defineLayout({ name: `${name}_128`, words: 2, fields: [...TYPE_FIELDS, ...fields] as const, reserved: rsvd });
  const d256 = defineLayout({
    name: `${name}_256`,
    words: 4,
    fields: [...TYPE_FIELDS, ...fields, ...(opts.extra256 ?? ([] as unknown as X))] as const,
    reserved: [...rsvd, ...(opts.rsvd256 ?? [ALL, ALL])],
  });
  return { type, name, d128, d256, only256 };
}

/** 0x1 context-cache invalidate. */
export const CC_DESC = descriptor(
  InvDescType.CC,
  'CC_DESC',
  [bits('G', 0, 5, 4, 'granularity: 1 global, 2 domain, 3 device'), bits('DID', 0, 31, 16), bits('SID', 0, 47, 32), bits('FM', 0, 49, 48, 'function mask')],
  [0xfffc00000000f1c0n, ALL],
  false,
);

/** 0x2 IOTLB invalidate. */
export const IOTLB_DESC = descriptor(
  InvDescType.IOTLB,
  'IOTLB_DESC',
  [
    bits('G', 0, 5, 4, 'granularity: 1 global, 2 DSI, 3 PSI'),
    bit('DW', 0, 6, 'drain writes'),
    bit('DR', 0, 7, 'drain reads'),
    bits('DID', 0, 31, 16),
    bits('AM', 1, 5, 0, 'address mask'),
    bit('IH', 1, 6, 'invalidation hint'),
    bits('ADDR', 1, 63, 12),
  ],
  [0xffffffff0000f100n, 0xf80n],
  false,
);

/** 0x3 device-TLB invalidate. */
export const DEVICE_IOTLB_DESC = descriptor(
  InvDescType.DEVICE_IOTLB,
  'DEVICE_IOTLB_DESC',
  [
    bits('PFSID_3_0', 0, 15, 12, 'physical function source ID bits 3:0'),
    bits('MIP', 0, 20, 16, 'max invalidations pending (QDEP)'),
    bits('SID', 0, 47, 32),
    bits('PFSID_15_4', 0, 63, 52, 'physical function source ID bits 15:4'),
    bit('S', 1, 0, 'size: range encoded in ADDR'),
    bits('ADDR', 1, 63, 12),
  ],
  [0x000f0000ffe001f0n, 0xffen],
  false,
);

/** 0x4 interrupt entry cache invalidate. */
export const IEC_DESC = descriptor(
  InvDescType.IEC,
  'IEC_DESC',
  [bit('G', 0, 4, 'granularity: 0 global, 1 index-selective'), bits('IM', 0, 31, 27, 'index mask'), bits('IIDX', 0, 47, 32, 'interrupt index')],
  [0xffff000007fff1e0n, ALL],
  false,
);

/** 0x5 invalidation wait. */
export const WAIT_DESC = descriptor(
  InvDescType.WAIT,
  'WAIT_DESC',
  [
    bit('IF', 0, 4, 'interrupt flag: set ICS.IWC, raise the IECTL interrupt'),
    bit('SW', 0, 5, 'status write'),
    bit('FN', 0, 6, 'fence'),
    bit('PD', 0, 7, 'page-request drain'),
    bits('STATUS_DATA', 0, 63, 32),
    bits('STATUS_ADDR', 1, 63, 2, 'status address bits 63:2 (dword aligned)'),
  ],
  [0xfffff100n, 0x3n],
  false,
);

/** 0x6 PASID-based IOTLB invalidate. */
export const PIOTLB_DESC = descriptor(
  InvDescType.PIOTLB,
  'PIOTLB_DESC',
  [
    bits('G', 0, 5, 4, 'granularity: 2 all-in-PASID, 3 page-selective-in-PASID'),
    bits('DID', 0, 31, 16),
    bits('PASID', 0, 51, 32),
    bits('AM', 1, 5, 0, 'address mask'),
    bit('IH', 1, 6, 'invalidation hint'),
    bits('ADDR', 1, 63, 12),
  ],
  [0xfff000000000f1c0n, 0xf80n],
  true,
);

/** 0x7 PASID-cache invalidate. */
export const PC_DESC = descriptor(
  InvDescType.PC,
  'PC_DESC',
  [bits('G', 0, 5, 4, 'granularity: 0 domain, 1 PASID, 3 global'), bits('DID', 0, 31, 16), bits('PASID', 0, 51, 32)],
  [0xfff000000000f1c0n, ALL],
  true,
);

/** 0x8 PASID-based device-TLB invalidate. */
export const PASID_DEVICE_IOTLB_DESC = descriptor(
  InvDescType.PASID_DEVICE_IOTLB,
  'PASID_DEVICE_IOTLB_DESC',
  [
    bits('MIP', 0, 8, 4, 'max invalidations pending (QDEP)'),
    bits('PFSID_3_0', 0, 15, 12),
    bits('SID', 0, 31, 16),
    bits('PASID', 0, 51, 32),
    bits('PFSID_15_4', 0, 63, 52),
    bit('G', 1, 0, 'global: all PASIDs of the SID'),
    bit('S', 1, 11, 'size: range encoded in ADDR'),
    bits('ADDR', 1, 63, 12),
  ],
  [0n, 0x7fen],
  true,
);

/** 0x9 page group response (also in page-request.ts). */
export const PGRP_RESP_DESC = descriptor(
  InvDescType.PGRP_RESP,
  'PGRP_RESP_DESC',
  [
    bit('PP', 0, 4, 'PASID present'),
    bit('PDP', 0, 5, 'private data present'),
    bits('RESP_CODE', 0, 15, 12, 'response code: 0 success, 1 invalid, 0xF failure'),
    bits('RID', 0, 31, 16, 'requester ID'),
    bits('PASID', 0, 51, 32),
    bit('LPIG', 1, 2, 'last page in group'),
    bits('PRGI', 1, 11, 3, 'page request group index'),
  ],
  [0xfff00000000001c0n, 0xfffffffffffff003n],
  true,
  { extra256: [bits('PRIVATE_DATA_LO', 2, 63, 0, 'private data qw2'), bits('PRIVATE_DATA_HI', 3, 63, 0, 'private data qw3')] as const, rsvd256: [0n, 0n] },
);

/** Every descriptor type by type value. */
export const INV_DESCRIPTORS = {
  0x1: CC_DESC,
  0x2: IOTLB_DESC,
  0x3: DEVICE_IOTLB_DESC,
  0x4: IEC_DESC,
  0x5: WAIT_DESC,
  0x6: PIOTLB_DESC,
  0x7: PC_DESC,
  0x8: PASID_DEVICE_IOTLB_DESC,
  0x9: PGRP_RESP_DESC,
} as const;
type DescByType = typeof INV_DESCRIPTORS;

/** Types valid only in a 256-bit queue. */
export const VALID_ONLY_IN_256: ReadonlySet<number> = new Set(
  Object.values(INV_DESCRIPTORS)
    .filter((d) => d.only256)
    .map((d) => d.type),
);

/** Field values of a descriptor type (256-bit form; in a 128-bit decode, qw2/qw3 fields are 0). */
export type DescriptorFields<T extends InvDescTypeValue> = FieldValues<DescByType[T]['d256']>;

export type DecodedDescriptor =
  | {
      [T in InvDescTypeValue]: {
        readonly kind: 'descriptor';
        readonly type: T;
        readonly name: string;
        readonly fields: DescriptorFields<T>;
        /** Reserved bits set, per word; non-empty means the descriptor is invalid (IQEI 4). */
        readonly reserved: readonly ReservedViolation[];
      };
    }[InvDescTypeValue]
  | { readonly kind: 'invalid-type'; readonly type: number }
  | { readonly kind: 'invalid-width'; readonly type: number };

/**
 * Decode one descriptor fetched from a queue with descriptor width `dw`. `words` holds 2 words
 * (DW = 0) or 4 (DW = 1); extra words are ignored and missing ones read as 0. Never throws.
 */
export function decodeDescriptor(words: readonly bigint[], dw: 0 | 1 | boolean): DecodedDescriptor {
  const n = dw ? 4 : 2;
  const w: bigint[] = [];
  for (let i = 0; i < n; i++) w.push(BigInt.asUintN(64, words[i] ?? 0n));
  const type = descriptorType(w[0]!);
  const def = (INV_DESCRIPTORS as Record<number, DescriptorDef | undefined>)[type];
  if (def === undefined) return { kind: 'invalid-type', type };
  if (!dw && def.only256) return { kind: 'invalid-width', type };
  const layout = dw ? def.d256 : def.d128;
  const d = decode(layout, w);
  const fields = d.fields as Record<string, bigint>;
  // 128-bit form: fields only the 256-bit form has (page group response private data) read as 0.
  if (!dw && def.d256.fields.length !== def.d128.fields.length) for (const f of def.d256.fields) fields[f.name] ??= 0n;
  return { kind: 'descriptor', type: def.type, name: def.name, fields, reserved: d.reserved } as DecodedDescriptor;
}

/**
 * Encode a descriptor of `type` for a queue of width `dw` (2 or 4 words); the type bits are filled
 * in. Fields only the 256-bit form has (page group response private data) are refused at DW = 0.
 * @throws VsvaError EINVAL for a value that does not fit, an unknown field, or a 256-bit-only
 * type at DW = 0.
 */
export function encodeDescriptor<T extends InvDescTypeValue>(
  type: T,
  values: Omit<FieldInput<DescByType[T]['d256']>, 'TYPE_3_0' | 'TYPE_6_4'>,
  dw: 0 | 1 | boolean,
): bigint[] {
  const def = INV_DESCRIPTORS[type] as DescriptorDef;
  if (!dw && def.only256) {
    return failWidth(def);
  }
  const layout = dw ? def.d256 : def.d128;
  const typed = { ...(values as Record<string, bigint | number | boolean>), TYPE_3_0: type & 0xf, TYPE_6_4: (type >> 4) & 7 };
  return encode(layout, typed as FieldInput<typeof layout>);
}

function failWidth(def: DescriptorDef): never {
  return fail('EINVAL', `${def.name} (type 0x${def.type.toString(16)}) is valid only in a 256-bit queue`);
}
