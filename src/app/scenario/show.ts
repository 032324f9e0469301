/**
 * How scenario values appear in step descriptions and mismatches: addresses in hex, variables
 * as `$NAME`, byte specs in short. Shared by the step records (ops-*.ts), the expectation
 * checks and the report.
 */
import type { AddrValue, BytesSpec, IntValue } from './types.js';

/** What differed: `what` names the checked thing; expected/actual are rendered values. */
export interface Mismatch {
  what: string;
  expected: string;
  actual: string;
}

export function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}

export function showInt(v: IntValue | null | undefined): string {
  if (v === undefined) return '?';
  if (v === null) return 'none';
  return typeof v === 'object' ? `$${v.ref}` : String(v);
}

export function showAddr(v: AddrValue | undefined): string {
  if (v === undefined) return '?';
  return typeof v === 'object' ? `$${v.ref}` : hex(v);
}

export function showBytes(b: BytesSpec): string {
  if ('hex' in b) return b.hex.length > 32 ? `hex ${b.hex.slice(0, 32)}… (${b.hex.length / 2} bytes)` : `hex ${b.hex}`;
  if ('text' in b) return JSON.stringify(b.text);
  if ('pattern' in b) return `${b.length} × ${hex(b.pattern)}`;
  return `${b.length} random bytes (seed ${b.random})`;
}
