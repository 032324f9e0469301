/**
 * The bigint/number seam of the VT-d model. Registers, addresses and descriptor words are 64-bit
 * and stay bigint; a value becomes a number only through `narrow`, which asserts that it fits the
 * width the caller names (at most 32 bits: IDs, granularities, masks, codes), so no bit is ever
 * dropped silently. Decoded fields always fit their declared width, so for them the assertion
 * documents the width and catches a caller that names the wrong field.
 */
import { fail } from '../../src/errors.js';

/** 2^bits for bits 0..32, as bigints (no allocation per call). */
const LIMIT: readonly bigint[] = Array.from({ length: 33 }, (_, bits) => 1n << BigInt(bits));

/**
 * `value` as a number, asserting 0 ≤ value < 2^bits.
 * @throws VsvaError ERANGE when the value does not fit, or `bits` is not an integer in 1..32.
 */
export function narrow(value: bigint, bits: number): number {
  const limit = LIMIT[bits];
  if (limit === undefined || bits < 1) fail('ERANGE', `narrow: ${bits} is not a width in 1..32 bits`);
  if (value < 0n || value >= limit) fail('ERANGE', `0x${value.toString(16)} does not fit ${bits} bits`);
  return Number(value);
}
