/**
 * Scalar value parsers for scenario files. Each returns the value or a message saying exactly
 * what was expected; the validator attaches the location. YAML integers arrive as bigint
 * (the document is parsed with intAsBigInt so 64-bit addresses keep every bit); JSON files
 * may write any integer as a decimal or 0x-hex string.
 */
import { Errno, type ErrnoName } from '../../errors.js';
import type { AddrValue, IntValue, VarRef } from './types.js';

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

const ErrnoNames = Object.keys(Errno) as ErrnoName[];

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(message: string): Parsed<T> => ({ ok: false, message });

const VAR_RE = /^\$([A-Za-z_][A-Za-z0-9_]*)$/;
export const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const BDF_RE = /^([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$/;

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
}

/** `$NAME` → its name, else undefined. */
export function varName(v: unknown): string | undefined {
  return typeof v === 'string' ? VAR_RE.exec(v)?.[1] : undefined;
}

/** An integer given as a number, bigint or decimal/0x-hex string. */
export function parseBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isSafeInteger(v) ? BigInt(v) : undefined;
  if (typeof v === 'string') {
    const s = v.trim().replace(/_/g, '');
    if (/^(0|[1-9][0-9]*)$/.test(s) || /^0[xX][0-9a-fA-F]+$/.test(s)) return BigInt(s);
  }
  return undefined;
}

export function parseInt(v: unknown, min: number, max: number, what: string): Parsed<number> {
  const b = parseBigInt(v);
  if (b === undefined) return bad(`${what} must be an integer, not ${describe(v)}`);
  if (b < BigInt(min) || b > BigInt(max)) return bad(`${what} ${b} is out of range ${min}..${max}`);
  return ok(Number(b));
}

/** An integer or `$VAR`. */
export function parseIntValue(v: unknown, min: number, max: number, what: string): Parsed<IntValue> {
  const name = varName(v);
  if (name !== undefined) return ok<VarRef>({ ref: name });
  return parseInt(v, min, max, what);
}

/** A 64-bit address or `$VAR`. */
export function parseAddr(v: unknown, what: string): Parsed<AddrValue> {
  const name = varName(v);
  if (name !== undefined) return ok<VarRef>({ ref: name });
  const b = parseBigInt(v);
  if (b === undefined) return bad(`${what} must be an address (integer or 0x-hex), not ${describe(v)}`);
  if (b < 0n || b >= 1n << 64n) return bad(`${what} 0x${b.toString(16)} is not a 64-bit address`);
  return ok(b);
}

const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/** A byte count: an integer, or '64M' / '256MiB' / '4K' / '1G'. */
export function parseSize(v: unknown, what: string): Parsed<number> {
  if (typeof v === 'string') {
    const m = /^\s*([0-9]+)\s*([KMG]?)(i?B)?\s*$/i.exec(v);
    if (m) {
      const n = Number(m[1]) * SIZE_UNITS[m[2]!.toUpperCase()]!;
      if (Number.isSafeInteger(n)) return ok(n);
    }
  }
  const b = parseBigInt(v);
  if (b === undefined || b > BigInt(Number.MAX_SAFE_INTEGER)) return bad(`${what} must be a byte count like 65536 or '64M', not ${describe(v)}`);
  return ok(Number(b));
}

export function parseBool(v: unknown, what: string): Parsed<boolean> {
  return typeof v === 'boolean' ? ok(v) : bad(`${what} must be true or false, not ${describe(v)}`);
}

export function parseString(v: unknown, what: string): Parsed<string> {
  return typeof v === 'string' && v.length > 0 ? ok(v) : bad(`${what} must be a non-empty string, not ${describe(v)}`);
}

export function parseName(v: unknown, what: string): Parsed<string> {
  if (typeof v !== 'string' || !NAME_RE.test(v)) return bad(`${what} must be a name of letters, digits, '_', '.', '-', not ${describe(v)}`);
  return ok(v);
}

/** A variable name for `as:` / `save:` (without the $). */
export function parseVarDef(v: unknown, what: string): Parsed<string> {
  if (typeof v !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(v)) return bad(`${what} must be a variable name like A or pasid_1 (without $), not ${describe(v)}`);
  return ok(v);
}

/** PCI bus:device.function, normalised to lower case (e.g. '00:03.0'). */
export function parseBdf(v: unknown, what: string): Parsed<string> {
  if (typeof v !== 'string' || !BDF_RE.test(v)) return bad(`${what} must be a PCI address bus:device.function like '00:03.0', not ${describe(v)}`);
  return ok(v.toLowerCase());
}

export function parseEnum<T extends string>(v: unknown, choices: readonly T[], what: string): Parsed<T> {
  if (typeof v === 'string' && (choices as readonly string[]).includes(v)) return ok(v as T);
  return bad(`${what} must be one of ${choices.join(', ')}, not ${describe(v)}`);
}

export function parseErrno(v: unknown, what: string): Parsed<ErrnoName> {
  if (typeof v === 'string' && (ErrnoNames as readonly string[]).includes(v)) return ok(v as ErrnoName);
  return bad(`${what} must be an errno name (${ErrnoNames.join(', ')}), not ${describe(v)}`);
}
