/**
 * Argument checks of HostIommu's API. Addresses and address-range sizes arrive as bigint (they
 * are 64-bit fields); inside the IOMMU they are numbers. A bigint becomes a number only through
 * `fitWidth`, which first asserts that it fits the width that applies (the host address width,
 * a second-level table's input width, …) — so no conversion can lose bits.
 */
import { fail } from '../../src/errors.js';
import { VTD_MAMV } from '../../src/vtd/cap-ecap.js';
import { PASID_BITS } from '../../src/vtd/pasid-entry.js';

const TWO_64 = 1n << 64n;
const TWO_53 = 1n << 53n;

/** `value` as a number, after asserting 0 ≤ value < 2^bits (bits ≤ 53). ERANGE otherwise. */
export function fitWidth(value: bigint, bits: number, what: string): number {
  if (value < 0n || value >= 1n << BigInt(bits)) fail('ERANGE', `${what} ${hex(value)} does not fit the ${bits}-bit width`);
  return Number(value);
}

/**
 * Page number and offset of a 64-bit request address (every 64-bit value is a request address;
 * the walk decides whether it translates). With `length`, the access [addr, addr + length) must
 * not wrap past 2^64. EINVAL otherwise.
 */
export function pageAndOffset(addr: bigint, length = 0): [vpn: number, off: number] {
  if (addr < 0n || addr >= TWO_64) fail('EINVAL', `address ${hex(addr)} is not a 64-bit value`);
  if (addr + BigInt(length) > TWO_64) fail('EINVAL', `a ${length}-byte access at ${hex(addr)} wraps past 2^64`);
  return [Number(addr >> 12n), Number(addr & 0xfffn)];
}

/**
 * Pages an invalidation with address mask `am` covers (VT-d spec §6.5.2, the AM field of the
 * IOTLB and PASID-based-IOTLB invalidate descriptors): 2^am pages at `addr`, the address bits
 * below the mask ignored, as [first, last] page numbers. EINVAL for a mask beyond MAMV.
 */
export function maskedPages(addr: bigint, am: number): [first: number, last: number] {
  if (!Number.isInteger(am) || am < 0 || am > VTD_MAMV) fail('EINVAL', `address mask ${am} is not in 0..${VTD_MAMV}`);
  // Addresses below 2^53 (every one a guest sends in practice) convert exactly, without bigint arithmetic.
  const vpn = addr >= 0n && addr < TWO_53 ? Math.floor(Number(addr) / 4096) : pageAndOffset(addr)[0];
  const n = 2 ** am;
  const first = Math.floor(vpn / n) * n;
  return [first, first + n - 1];
}

export function checkRid(rid: number): void {
  if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) fail('EINVAL', `RID ${rid} is not a 16-bit requester ID`);
}

export function checkDid(did: number): void {
  if (!((did | 0) === did && did >= 0 && did <= 0xffff)) fail('EINVAL', `DID ${did} is not a 16-bit domain ID`);
}

/** 2^PASID_BITS. */
const PASID_END = 1 << PASID_BITS;

export function checkPasid(pasid: number): void {
  // (x | 0) === x: an integer in the int32 range (NaN and fractions fail), no call on the hot path.
  if (!((pasid | 0) === pasid && pasid >= 0 && pasid < PASID_END)) fail('EINVAL', `PASID ${pasid} is not a ${PASID_BITS}-bit value`);
}

export function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0) fail('EINVAL', `DMA length ${length} is not a non-negative integer`);
}

/** "RID 0x0018". */
export function ridName(rid: number): string {
  return `RID 0x${rid.toString(16).padStart(4, '0')}`;
}

export function hex(v: bigint | number): string {
  return '0x' + v.toString(16);
}
