/** The byte specs of a scenario (types.ts BytesSpec): their length, and their bytes from the workload's data generators. */
import { patternBytes, seededBytes } from '../../../guest/workload/data.js';
import type { BytesSpec } from './types.js';

export function toBytes(b: BytesSpec): Uint8Array {
  if ('hex' in b) return Uint8Array.from(Buffer.from(b.hex, 'hex'));
  if ('text' in b) return new TextEncoder().encode(b.text);
  if ('pattern' in b) return patternBytes(b.pattern, b.length);
  return seededBytes(b.random, b.length);
}

export function bytesLength(b: BytesSpec): number {
  if ('hex' in b) return b.hex.length / 2;
  if ('text' in b) return new TextEncoder().encode(b.text).length;
  return b.length;
}
