/**
 * Fixed-layout little-endian structs declared as data: each field has a name, a wire type, an
 * offset (computed, packed) and a one-line description. One declaration gives the encoder, the
 * validating decoder, and the layout table printed in docs/protocol.md (layoutTable), so the
 * document and the code cannot drift apart.
 *
 * Validation follows the protocol's errno glossary (errno.ts): a value outside a field's
 * documented range or enum → EINVAL; a non-zero reserved field or an unknown flag bit →
 * EOPNOTSUPP. Sizes are checked by the message codecs (messages/codec.ts).
 */
import { fail } from '../src/errors.js';

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

export function typeName(t: FieldType): string {
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
  }

  /** Write `v` at `off`; throws EINVAL for a value the field cannot hold. */
  encodeInto(buf: Buffer, off: number, v: T): void {
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
        const x = o[f.name];
        if (typeof x !== 'string') this.bad(f, x);
        if (Buffer.byteLength(x as string, 'utf8') > t.size - 1 || (x as string).includes('\0')) {
          fail('EINVAL', `${this.name}.${f.name}: text must be at most ${t.size - 1} UTF-8 bytes without NUL`);
        }
        const n = buf.write(x as string, at, t.size, 'utf8');
        buf.fill(0, at + n, at + t.size);
      }
      this.checkValue(f, o[f.name]);
    }
  }

  /** Decode and validate the struct at `off` (the caller has checked that size bytes exist). */
  decode(buf: Buffer, off: number): T {
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
        const end = at + t.size;
        let nul = buf.indexOf(0, at);
        if (nul < 0 || nul >= end) fail('EINVAL', `${this.name}.${f.name}: text is not NUL-terminated within ${t.size} bytes`);
        for (let i = nul; i < end; i++) {
          if (buf[i] !== 0) fail('EOPNOTSUPP', `${this.name}.${f.name}: padding after the NUL terminator is not zero`);
        }
        try {
          o[f.name] = utf8.decode(buf.subarray(at, nul));
        } catch {
          fail('EINVAL', `${this.name}.${f.name}: text is not valid UTF-8`);
        }
      }
    }
    return o as T;
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
