/**
 * Fixed-layout little-endian structs declared as data: each field has a name, a wire type, an
 * offset (computed, packed) and a one-line description. One declaration gives the encoder, the
 * validating decoder, and the layout table printed in docs/protocol.md (layoutTable), so the
 * document and the code cannot drift apart.
 *
 * Validation follows the protocol's errno glossary (errno.ts): a value outside a field's
 * documented range or enum → EINVAL; a non-zero reserved field or an unknown flag bit →
 * EOPNOTSUPP. Sizes are checked by the message codecs (messages/codec.ts).
 *
 * Every message goes through these codecs on both sides, so each Struct is compiled once, when
 * it is declared, into a straight-line encoder and decoder for its own fields (generated with
 * `new Function` from the field table only: offsets, sizes and limits are numbers, names are
 * quoted as string literals; nothing from the wire or from callers reaches the generated
 * source). They test exactly the conditions of the per-field walk, in the same field order,
 * and on any failure hand the field to the walk's own check, so errnos and messages are the
 * walk's. The walk itself stays as `encodeIntoGeneric` / `decodeGeneric`: the specification the
 * compiled code is tested against (test/unit/vhost/struct-compiled.test.ts), and the path for
 * an offset that leaves the buffer (the walk's RangeError).
 */
import { fail } from '../../src/errors.js';

export type ScalarType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64';

export type FieldType =
  | ScalarType
  /** Raw bytes (Uint8Array of exactly `size`). */
  | { kind: 'bytes'; size: number }
  /** UTF-8 text, NUL-terminated and NUL-padded to `size` (at most size-1 bytes of text). */
  | { kind: 'cstr'; size: number }
  /** Reserved: must be zero; not present in the decoded object. */
  | { kind: 'reserved'; size: number };

export interface FieldDef<N extends string = string> {
  name: N;
  type: FieldType;
  doc: string;
  /** Flag field: the known bits. Any other bit set → EOPNOTSUPP. */
  mask?: number | bigint;
  /** Enum field: the allowed values. Anything else → EINVAL. */
  values?: readonly number[];
  /** Largest allowed value (inclusive). Larger → EINVAL. */
  max?: number;
}

export interface LaidOutField extends FieldDef {
  offset: number;
  size: number;
}

/** A reserved field: written as zero, rejected when non-zero, absent from the decoded object. */
export interface ReservedDef extends FieldDef {
  type: { kind: 'reserved'; size: number };
}

/** A reserved field (always written as zero, rejected when non-zero). */
export function reserved(size: number, name = 'reserved'): ReservedDef {
  return { name, type: { kind: 'reserved', size }, doc: 'reserved, must be 0' };
}

function typeSize(t: FieldType): number {
  if (typeof t === 'string') return t === 'u8' ? 1 : t === 'u16' ? 2 : t === 'u64' ? 8 : 4;
  return t.size;
}

function typeName(t: FieldType): string {
  if (typeof t === 'string') return t;
  if (t.kind === 'bytes') return `u8[${t.size}]`;
  if (t.kind === 'cstr') return `char[${t.size}] (UTF-8, NUL-padded)`;
  return t.size === 1 ? 'u8' : t.size === 2 ? 'u16' : t.size === 4 ? 'u32' : t.size === 8 ? 'u64' : `u8[${t.size}]`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A packed struct of `fields`. T is the decoded object: every non-reserved field by name;
 * u8/u16/u32 as number, u64 as bigint, bytes as Uint8Array, cstr as string.
 */
export class Struct<T extends object> {
  readonly fields: readonly LaidOutField[];
  readonly size: number;
  private readonly compiled: CompiledCodec<T>;

  constructor(
    readonly name: string,
    fields: readonly (FieldDef<Extract<keyof T, string>> | ReservedDef)[],
  ) {
    let offset = 0;
    this.fields = fields.map((f) => {
      const size = typeSize(f.type);
      const laid = { ...f, offset, size };
      offset += size;
      return laid;
    });
    this.size = offset;
    this.compiled = compileStruct<T>(this.fields, this.size, {
      bad: (f, x) => this.bad(f, x),
      check: (f, x) => this.checkValue(f, x),
      reservedNotZero: (f) => fail('EOPNOTSUPP', `${this.name}: reserved bytes at offset ${f.offset} are not zero`),
      encodeText: (buf, at, f, x) => this.encodeText(buf, at, f, x),
      decodeText: (buf, at, f) => this.decodeText(buf, at, f),
      encodeGeneric: (buf, off, v) => this.encodeIntoGeneric(buf, off, v),
      decodeGeneric: (buf, off) => this.decodeGeneric(buf, off),
    });
  }

  /** Write `v` at `off`; throws EINVAL for a value the field cannot hold. */
  encodeInto(buf: Buffer, off: number, v: T): void {
    this.compiled.encode(buf, off, v);
  }

  /** Decode and validate the struct at `off` (the caller has checked that size bytes exist). */
  decode(buf: Buffer, off: number): T {
    return this.compiled.decode(buf, off);
  }

  /**
   * The per-field walk behind encodeInto (same result, same errors): the reference the compiled
   * encoder is tested against.
   */
  encodeIntoGeneric(buf: Buffer, off: number, v: T): void {
    const o = v as Record<string, unknown>;
    for (const f of this.fields) {
      const at = off + f.offset;
      const t = f.type;
      if (typeof t === 'string') {
        if (t === 'u64') {
          const x = o[f.name];
          if (typeof x !== 'bigint' || x < 0n || x > 0xffff_ffff_ffff_ffffn) this.bad(f, x);
          buf.writeBigUInt64LE(x as bigint, at);
        } else {
          const x = o[f.name];
          const limit = t === 'u8' ? 0xff : t === 'u16' ? 0xffff : t === 'i32' ? 0x7fff_ffff : 0xffff_ffff;
          const low = t === 'i32' ? -0x8000_0000 : 0;
          if (typeof x !== 'number' || !Number.isInteger(x) || x < low || x > limit) this.bad(f, x);
          if (t === 'u32') buf.writeUInt32LE(x as number, at);
          else if (t === 'i32') buf.writeInt32LE(x as number, at);
          else if (t === 'u16') buf.writeUInt16LE(x as number, at);
          else buf[at] = x as number;
        }
      } else if (t.kind === 'reserved') {
        buf.fill(0, at, at + t.size);
      } else if (t.kind === 'bytes') {
        const x = o[f.name];
        if (!(x instanceof Uint8Array) || x.length !== t.size) this.bad(f, x);
        buf.set(x as Uint8Array, at);
      } else {
        this.encodeText(buf, at, f, o[f.name]);
      }
      this.checkValue(f, o[f.name]);
    }
  }

  /** The per-field walk behind decode (same result, same errors): the compiled decoder's reference. */
  decodeGeneric(buf: Buffer, off: number): T {
    const o: Record<string, unknown> = {};
    for (const f of this.fields) {
      const at = off + f.offset;
      const t = f.type;
      if (typeof t === 'string') {
        const x =
          t === 'u32' ? buf.readUInt32LE(at)
          : t === 'u64' ? buf.readBigUInt64LE(at)
          : t === 'u16' ? buf.readUInt16LE(at)
          : t === 'i32' ? buf.readInt32LE(at)
          : buf[at]!;
        this.checkValue(f, x);
        o[f.name] = x;
      } else if (t.kind === 'reserved') {
        for (let i = at; i < at + t.size; i++) {
          if (buf[i] !== 0) fail('EOPNOTSUPP', `${this.name}: reserved bytes at offset ${f.offset} are not zero`);
        }
      } else if (t.kind === 'bytes') {
        o[f.name] = new Uint8Array(buf.subarray(at, at + t.size));
      } else {
        o[f.name] = this.decodeText(buf, at, f);
      }
    }
    return o as T;
  }

  /** A cstr field: UTF-8, at most size-1 bytes, no NUL; NUL-padded. */
  private encodeText(buf: Buffer, at: number, f: LaidOutField, x: unknown): void {
    const size = f.size;
    if (typeof x !== 'string') this.bad(f, x);
    if (Buffer.byteLength(x as string, 'utf8') > size - 1 || (x as string).includes('\0')) {
      fail('EINVAL', `${this.name}.${f.name}: text must be at most ${size - 1} UTF-8 bytes without NUL`);
    }
    const n = buf.write(x as string, at, size, 'utf8');
    buf.fill(0, at + n, at + size);
  }

  private decodeText(buf: Buffer, at: number, f: LaidOutField): string {
    const end = at + f.size;
    const nul = buf.indexOf(0, at);
    if (nul < 0 || nul >= end) fail('EINVAL', `${this.name}.${f.name}: text is not NUL-terminated within ${f.size} bytes`);
    for (let i = nul; i < end; i++) {
      if (buf[i] !== 0) fail('EOPNOTSUPP', `${this.name}.${f.name}: padding after the NUL terminator is not zero`);
    }
    try {
      return utf8.decode(buf.subarray(at, nul));
    } catch {
      fail('EINVAL', `${this.name}.${f.name}: text is not valid UTF-8`);
    }
  }

  private checkValue(f: LaidOutField, x: unknown): void {
    if (f.mask !== undefined) {
      const unknown = typeof x === 'bigint' ? x & ~BigInt(f.mask) : (x as number) & ~Number(f.mask);
      if (unknown !== 0 && unknown !== 0n) {
        fail('EOPNOTSUPP', `${this.name}.${f.name}: unknown flag bits 0x${unknown.toString(16)}`);
      }
    }
    if (f.values !== undefined && !f.values.includes(x as number)) {
      fail('EINVAL', `${this.name}.${f.name}: value ${String(x)} is not one of ${f.values.join(', ')}`);
    }
    if (f.max !== undefined && (x as number) > f.max) {
      fail('EINVAL', `${this.name}.${f.name}: value ${String(x)} exceeds ${f.max}`);
    }
  }

  private bad(f: LaidOutField, x: unknown): never {
    fail('EINVAL', `${this.name}.${f.name}: ${typeof x === 'bigint' ? `0x${x.toString(16)}` : String(x)} does not fit ${typeName(f.type)}`);
  }
}

/** A struct's generated encoder and decoder (method syntax: Struct<T> stays usable as Struct<object>). */
interface CompiledCodec<T> {
  encode(buf: Buffer, off: number, v: T): void;
  decode(buf: Buffer, off: number): T;
}

/** What the generated code calls out to: the walk's own checks and messages, and the walk itself. */
interface CompileHooks<T> {
  /** The value does not fit the field's type (throws the walk's EINVAL). */
  bad(f: LaidOutField, x: unknown): never;
  /** The walk's mask / enum / max check (throws its error). */
  check(f: LaidOutField, x: unknown): void;
  reservedNotZero(f: LaidOutField): never;
  encodeText(buf: Buffer, at: number, f: LaidOutField, x: unknown): void;
  decodeText(buf: Buffer, at: number, f: LaidOutField): string;
  encodeGeneric(buf: Buffer, off: number, v: T): void;
  decodeGeneric(buf: Buffer, off: number): T;
}

const SCALAR_LIMITS: Record<Exclude<ScalarType, 'u64'>, [low: number, high: number]> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffff_ffff],
  i32: [-0x8000_0000, 0x7fff_ffff],
};

/**
 * The condition (JS source over `x`) under which the walk's checkValue rejects `x`, or null when
 * the field has no mask, enum or max. Same tests as checkValue: number masks with 32-bit `&`,
 * bigint masks with bigint `&`, `values` by identity, `max` by `>`.
 */
function valueCheckSource(f: LaidOutField, bigintValue: boolean): string | null {
  const parts: string[] = [];
  if (f.mask !== undefined) {
    parts.push(bigintValue ? `(x & ${(~BigInt(f.mask)).toString()}n) !== 0n` : `(x & (${~Number(f.mask)})) !== 0`);
  }
  if (f.values !== undefined) {
    for (const v of f.values) if (!Number.isFinite(v)) return 'true'; // never in our tables; let the walk decide
    parts.push(f.values.length === 0 ? 'true' : `(${f.values.map((v) => `x !== ${v}`).join(' && ')})`);
  }
  if (f.max !== undefined) parts.push(Number.isFinite(f.max) ? `x > ${f.max}` : 'true');
  return parts.length === 0 ? null : parts.join(' || ');
}

/** Little-endian byte stores of the number `x` (already range-checked) at `at + k`. */
function storeBytes(n: number): string {
  const out: string[] = ['buf[at] = x;'];
  for (let k = 1; k < n; k++) out.push(`buf[at + ${k}] = x >>> ${8 * k};`);
  return out.join(' ');
}

/** The compiled encoder and decoder of a laid-out struct (see the file comment). */
function compileStruct<T>(fields: readonly LaidOutField[], size: number, hooks: CompileHooks<T>): CompiledCodec<T> {
  const enc: string[] = [];
  const dec: string[] = [];
  const keys: string[] = [];
  fields.forEach((f, i) => {
    const fi = `F[${i}]`;
    const key = JSON.stringify(f.name);
    const t = f.type;
    enc.push(`at = off + ${f.offset};`);
    if (typeof t === 'string') {
      const bigintValue = t === 'u64';
      const cond = valueCheckSource(f, bigintValue);
      // encode: type and range, store, then the value check (the walk's order)
      enc.push(`x = v[${key}];`);
      if (t === 'u64') {
        enc.push(`if (typeof x !== 'bigint' || x < 0n || x > 0xffffffffffffffffn) H.bad(${fi}, x);`);
        enc.push('lo = Number(x & 0xffffffffn); hi = Number(x >> 32n);');
        enc.push('buf[at] = lo; buf[at + 1] = lo >>> 8; buf[at + 2] = lo >>> 16; buf[at + 3] = lo >>> 24;');
        enc.push('buf[at + 4] = hi; buf[at + 5] = hi >>> 8; buf[at + 6] = hi >>> 16; buf[at + 7] = hi >>> 24;');
      } else {
        const [low, high] = SCALAR_LIMITS[t];
        enc.push(`if (typeof x !== 'number' || !(x >= ${low} && x <= ${high}) || !Number.isInteger(x)) H.bad(${fi}, x);`);
        enc.push(storeBytes(f.size));
      }
      if (cond !== null) enc.push(`if (${cond}) H.check(${fi}, x);`);
      // decode: load, value check
      const o = `off + ${f.offset}`;
      const load =
        t === 'u8' ? `buf[${o}]`
        : t === 'u16' ? `buf[${o}] | (buf[${o} + 1] << 8)`
        : t === 'u32' ? `(buf[${o}] | (buf[${o} + 1] << 8) | (buf[${o} + 2] << 16)) + buf[${o} + 3] * 0x1000000`
        : t === 'i32' ? `buf[${o}] | (buf[${o} + 1] << 8) | (buf[${o} + 2] << 16) | (buf[${o} + 3] << 24)`
        : `BigInt((buf[${o}] | (buf[${o} + 1] << 8) | (buf[${o} + 2] << 16)) + buf[${o} + 3] * 0x1000000) + (BigInt((buf[${o} + 4] | (buf[${o} + 5] << 8) | (buf[${o} + 6] << 16)) + buf[${o} + 7] * 0x1000000) << 32n)`;
      dec.push(`const x${i} = ${load};`);
      if (cond !== null) dec.push(`{ const x = x${i}; if (${cond}) H.check(${fi}, x); }`);
      keys.push(`${key}: x${i}`);
    } else if (t.kind === 'reserved') {
      enc.push(t.size <= 16 ? Array.from({ length: t.size }, (_, k) => `buf[at + ${k}] = 0;`).join(' ') : `buf.fill(0, at, at + ${t.size});`);
      const cond = valueCheckSource(f, false);
      if (cond !== null) enc.push(`x = v[${key}]; if (${cond}) H.check(${fi}, x);`);
      const o = `off + ${f.offset}`;
      dec.push(
        t.size <= 16
          ? `if ((${Array.from({ length: t.size }, (_, k) => `buf[${o} + ${k}]`).join(' | ')}) !== 0) H.reservedNotZero(${fi});`
          : `for (let k = ${o}, e = ${o} + ${t.size}; k < e; k++) if (buf[k] !== 0) H.reservedNotZero(${fi});`,
      );
    } else if (t.kind === 'bytes') {
      enc.push(`x = v[${key}];`);
      enc.push(`if (!(x instanceof Uint8Array) || x.length !== ${t.size}) H.bad(${fi}, x);`);
      enc.push('buf.set(x, at);');
      if (valueCheckSource(f, false) !== null) enc.push(`H.check(${fi}, x);`);
      dec.push(`const x${i} = new Uint8Array(buf.subarray(off + ${f.offset}, off + ${f.offset + t.size}));`);
      keys.push(`${key}: x${i}`);
    } else {
      enc.push(`x = v[${key}];`);
      enc.push(`H.encodeText(buf, at, ${fi}, x);`);
      if (valueCheckSource(f, false) !== null) enc.push(`H.check(${fi}, x);`);
      dec.push(`const x${i} = H.decodeText(buf, off + ${f.offset}, ${fi});`);
      keys.push(`${key}: x${i}`);
    }
  });
  // An offset that is not a whole position with `size` bytes after it takes the walk (its RangeError).
  const guard = `if (!(off >= 0 && off + ${size} <= buf.length) || off !== Math.floor(off))`;
  const encodeSource = `return function encodeInto(buf, off, v) {
  ${guard} return H.encodeGeneric(buf, off, v);
  let at = 0, x, lo = 0, hi = 0;
  ${enc.join('\n  ')}
};`;
  const decodeSource = `return function decode(buf, off) {
  ${guard} return H.decodeGeneric(buf, off);
  ${dec.join('\n  ')}
  return { ${keys.join(', ')} };
};`;
  // Source built from our own field table only (see the file comment).
  const encode = new Function('F', 'H', encodeSource)(fields, hooks) as (buf: Buffer, off: number, v: T) => void;
  const decode = new Function('F', 'H', decodeSource)(fields, hooks) as (buf: Buffer, off: number) => T;
  return { encode, decode };
}

/** The layout of `s` as a Markdown table (offset, size, type, field, meaning). */
export function layoutTable(s: Struct<object>, base = 0): string {
  const rows = s.fields.map((f) => {
    const extra: string[] = [];
    if (f.mask !== undefined) extra.push(`known bits 0x${f.mask.toString(16)}`);
    if (f.values !== undefined) extra.push(`one of ${f.values.join(', ')}`);
    if (f.max !== undefined) extra.push(`≤ ${f.max}`);
    const meaning = extra.length ? `${f.doc} (${extra.join('; ')})` : f.doc;
    return `| ${base + f.offset} | ${f.size} | ${typeName(f.type)} | ${f.name} | ${meaning} |`;
  });
  return ['| Offset | Size | Type | Field | Meaning |', '|---|---|---|---|---|', ...rows].join('\n');
}
