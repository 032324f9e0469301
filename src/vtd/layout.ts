/**
 * Bit-exact structures of N 64-bit words, declared as data.
 *
 * A layout is a name, a word count, a list of fields `{ name, word, lsb, width, doc? }` and one
 * reserved mask per word. Field names are the VT-d spec's names, so a declaration can be read
 * side by side with the spec's table.
 *
 * Contracts:
 * - `encode(layout, values)` returns `bigint[]` of `layout.words` words. Missing fields are 0.
 *   A value that does not fit its field (negative, too wide, not an integer) throws
 *   `VsvaError('EINVAL')` naming the layout and field; nothing is returned partially.
 * - `decode(layout, words)` never throws for an array of `layout.words` words: every word is
 *   first reduced to 64 bits (`BigInt.asUintN(64, w)`), fields are extracted from the reduced
 *   words, and every set reserved bit is reported as data (`{ word, bits }`, one entry per word
 *   with any reserved bit set) so a device model can raise the right fault or IQE. Only a
 *   wrong-length array (a programming error) throws EINVAL.
 * - Fields never overlap one another (checked when the layout is defined). A reserved mask may
 *   overlap a field: e.g. pointer bits above the host address width (HAW) are part of the
 *   pointer field but reserved; such bits are decoded into the field AND reported as reserved.
 * - Every field value is a bigint. Hot paths use `getField`/`setField` on one word, or the
 *   numeric `lsbN`/`maxN` of a resolved field when the value is known to fit a number.
 */
import { fail } from '../errors.js';

/** All ones in a 32-bit / 64-bit register or entry word. */
export const U32_MASK = 0xffff_ffffn;
export const U64_MASK = (1n << 64n) - 1n;
const NO_VIOLATIONS: readonly ReservedViolation[] = Object.freeze([]);

/** One field as declared: spec name, word index, least-significant bit in that word, width. */
export interface FieldDef<N extends string = string> {
  readonly name: N;
  readonly word: number;
  readonly lsb: number;
  readonly width: number;
  readonly doc?: string;
}

/** A field with its masks precomputed, as stored on a layout (`layout.field.NAME`). */
export interface Field<N extends string = string> extends FieldDef<N> {
  /** Largest value the field holds: 2^width − 1. */
  readonly max: bigint;
  /** The field's bits in place inside its word: max << lsb. */
  readonly mask: bigint;
  /** lsb as a bigint, for shifts. */
  readonly shift: bigint;
  /** max as a number when width ≤ 53 (exact), else NaN: for hot paths that know the value fits. */
  readonly maxN: number;
}

export interface Layout<N extends string = string> {
  readonly name: string;
  readonly words: number;
  /** Fields in declaration order. */
  readonly fields: readonly Field<N>[];
  /** Fields by spec name. */
  readonly field: { readonly [K in N]: Field<K> };
  /** Reserved (must-be-zero) mask, one per word. */
  readonly reserved: readonly bigint[];
}

/** Names of a layout's fields. */
export type FieldName<L> = L extends Layout<infer N> ? N : never;

/** Decoded field values of a layout. */
export type FieldValues<L> = { [K in FieldName<L>]: bigint };

/** Values accepted by `encode`: any subset of the fields, as bigint, safe-integer number or boolean. */
export type FieldInput<L> = { readonly [K in FieldName<L>]?: bigint | number | boolean };

/** Set reserved bits of one word. */
export interface ReservedViolation {
  readonly word: number;
  readonly bits: bigint;
}

export interface Decoded<L> {
  readonly fields: FieldValues<L>;
  /** One entry per word that has reserved bits set, in word order; empty when none is set. */
  readonly reserved: readonly ReservedViolation[];
}

/** Declare a field the way the spec's tables write it: word, msb:lsb (bits inside that word). */
export function bits<const N extends string>(name: N, word: number, msb: number, lsb: number, doc?: string): FieldDef<N> {
  return doc === undefined ? { name, word, lsb, width: msb - lsb + 1 } : { name, word, lsb, width: msb - lsb + 1, doc };
}

/** Declare a one-bit field. */
export function bit<const N extends string>(name: N, word: number, position: number, doc?: string): FieldDef<N> {
  return bits(name, word, position, position, doc);
}

/** Mask of bits msb..lsb inclusive (both within 0..63). */
export function bitRange(msb: number, lsb: number): bigint {
  return ((1n << BigInt(msb - lsb + 1)) - 1n) << BigInt(lsb);
}

/** Mask of bits haw..63: the bits of an address that lie above the host address width. */
export function aboveHaw(haw: number): bigint {
  if (!Number.isInteger(haw) || haw < 12 || haw > 64) fail('EINVAL', `host address width ${haw} is not an integer in 12..64`);
  return U64_MASK & ~((1n << BigInt(haw)) - 1n);
}

/**
 * Define a layout. Checks (at definition time, so a bad table fails at module load): word
 * count ≥ 1, one reserved mask per word, every field inside its 64-bit word, names unique, no
 * two fields overlapping.
 */
export function defineLayout<const F extends readonly FieldDef[]>(def: {
  name: string;
  words: number;
  fields: F;
  reserved: readonly bigint[];
}): Layout<F[number]['name']> {
  const { name, words, fields, reserved } = def;
  if (!Number.isInteger(words) || words < 1) fail('EINVAL', `layout ${name}: word count ${words} must be a positive integer`);
  if (reserved.length !== words) fail('EINVAL', `layout ${name}: ${reserved.length} reserved masks for ${words} words`);
  const used = new Array<bigint>(words).fill(0n);
  const byName: Record<string, Field> = {};
  const resolved: Field[] = [];
  for (const f of fields) {
    if (byName[f.name] !== undefined) fail('EINVAL', `layout ${name}: field ${f.name} declared twice`);
    if (!Number.isInteger(f.word) || f.word < 0 || f.word >= words) fail('EINVAL', `layout ${name}: field ${f.name} in word ${f.word} of ${words}`);
    if (!Number.isInteger(f.lsb) || !Number.isInteger(f.width) || f.lsb < 0 || f.width < 1 || f.lsb + f.width > 64) {
      fail('EINVAL', `layout ${name}: field ${f.name} bits ${f.lsb + f.width - 1}:${f.lsb} do not fit a 64-bit word`);
    }
    const max = (1n << BigInt(f.width)) - 1n;
    const mask = max << BigInt(f.lsb);
    if ((used[f.word]! & mask) !== 0n) fail('EINVAL', `layout ${name}: field ${f.name} overlaps another field`);
    used[f.word]! |= mask;
    const field: Field = { ...f, max, mask, shift: BigInt(f.lsb), maxN: f.width <= 53 ? Number(max) : Number.NaN };
    byName[f.name] = field;
    resolved.push(field);
  }
  const layout: Layout<F[number]['name']> = {
    name,
    words,
    fields: resolved as Field<F[number]['name']>[],
    field: byName as Layout<F[number]['name']>['field'],
    reserved: reserved.map((m) => BigInt.asUintN(64, m)),
  };
  extractors.set(layout, compileExtractor(resolved));
  return layout;
}

/**
 * Field extraction compiled per layout into one object literal, so every decoded `fields`
 * object has the same shape (V8 keeps it a fast object; a loop of dynamic key stores does not).
 * The generated source contains only field names and numbers from the layout declarations.
 */
type Extractor = (w: readonly bigint[]) => Record<string, bigint>;
const extractors = new WeakMap<Layout, Extractor>();

function compileExtractor(fields: readonly Field[]): Extractor {
  const body = fields.map((f) => `${JSON.stringify(f.name)}: (w[${f.word}] >> ${f.lsb}n) & ${f.max}n`).join(',\n');
  return new Function('w', `return {\n${body}\n};`) as Extractor;
}

/** Same fields under a new name and new reserved masks (e.g. a HAW-dependent variant, or a wider form). */
export function withReserved<N extends string>(layout: Layout<N>, name: string, reserved: readonly bigint[]): Layout<N> {
  return defineLayout({ name, words: reserved.length, fields: layout.fields, reserved }) as Layout<N>;
}

/**
 * The layout cached under `key`, built by `build` the first time it is asked for. Variants that
 * depend on the host address width, level or page size are built once each.
 */
export function cachedLayout<K, L>(cache: Map<K, L>, key: K, build: () => L): L {
  let l = cache.get(key);
  if (l === undefined) cache.set(key, (l = build()));
  return l;
}

function toFieldValue(layoutName: string, f: Field, v: bigint | number | boolean): bigint {
  let value: bigint;
  if (typeof v === 'bigint') value = v;
  else if (typeof v === 'boolean') value = v ? 1n : 0n;
  else if (typeof v === 'number' && Number.isSafeInteger(v)) value = BigInt(v);
  else fail('EINVAL', `${layoutName}.${f.name}: value ${String(v)} is not an integer`);
  if (value < 0n || value > f.max) {
    fail('EINVAL', `${layoutName}.${f.name}: value 0x${value.toString(16)} does not fit in ${f.width} bit${f.width === 1 ? '' : 's'}`);
  }
  return value;
}

/**
 * Encode field values into `layout.words` 64-bit words. Missing fields are 0; reserved bits are 0.
 * @throws VsvaError EINVAL for an unknown field name or a value that does not fit its field.
 */
export function encode<L extends Layout>(layout: L, values: FieldInput<L>): bigint[] {
  const out = new Array<bigint>(layout.words).fill(0n);
  for (const [key, v] of Object.entries(values as Record<string, bigint | number | boolean | undefined>)) {
    if (v === undefined) continue;
    const f = (layout.field as Record<string, Field | undefined>)[key];
    if (f === undefined) fail('EINVAL', `${layout.name} has no field ${key}`);
    out[f.word]! |= toFieldValue(layout.name, f, v) << f.shift;
  }
  return out;
}

/**
 * Decode words into field values and reserved-bit violations. Never throws for an array of
 * `layout.words` words; each word is reduced to 64 bits first.
 * @throws VsvaError EINVAL only when `words.length !== layout.words`.
 */
export function decode<L extends Layout>(layout: L, words: readonly bigint[]): Decoded<L> {
  if (words.length !== layout.words) fail('EINVAL', `${layout.name} has ${layout.words} words, got ${words.length}`);
  const n = layout.words;
  const w = new Array<bigint>(n);
  let reserved: ReservedViolation[] | undefined;
  for (let i = 0; i < n; i++) {
    const x = BigInt.asUintN(64, words[i]!);
    w[i] = x;
    const set = x & layout.reserved[i]!;
    if (set !== 0n) (reserved ??= []).push({ word: i, bits: set });
  }
  let extract = extractors.get(layout);
  if (extract === undefined) extractors.set(layout, (extract = compileExtractor(layout.fields)));
  const fields = extract(w);
  return { fields: fields as FieldValues<L>, reserved: reserved ?? NO_VIOLATIONS };
}

/** The reserved-bit violations alone (no field extraction): one entry per word with set reserved bits. */
export function reservedViolations(layout: Layout, words: readonly bigint[]): ReservedViolation[] {
  const out: ReservedViolation[] = [];
  const n = Math.min(words.length, layout.words);
  for (let i = 0; i < n; i++) {
    const set = BigInt.asUintN(64, words[i]!) & layout.reserved[i]!;
    if (set !== 0n) out.push({ word: i, bits: set });
  }
  return out;
}

/** True when no reserved bit is set. */
export function reservedClear(layout: Layout, words: readonly bigint[]): boolean {
  const n = Math.min(words.length, layout.words);
  for (let i = 0; i < n; i++) if ((words[i]! & layout.reserved[i]!) !== 0n) return false;
  return true;
}

/** Read one field from the word that holds it. */
export function getField(word: bigint, f: Field): bigint {
  return (word >> f.shift) & f.max;
}

/** Read a one-bit field as a boolean. */
export function testField(word: bigint, f: Field): boolean {
  return ((word >> f.shift) & 1n) === 1n;
}

/**
 * Return `word` with field `f` replaced by `value`.
 * @throws VsvaError EINVAL when the value does not fit the field.
 */
export function setField(word: bigint, f: Field, value: bigint | number | boolean): bigint {
  const v = toFieldValue('field', f, value);
  return (BigInt.asUintN(64, word) & ~f.mask) | (v << f.shift);
}

/** Read `count` little-endian 64-bit words from `bytes` at byte `offset` (as laid out in guest memory). */
export function wordsFromBytes(bytes: Uint8Array, offset: number, count: number): bigint[] {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + count * 8 > bytes.length) {
    fail('EINVAL', `${count} words at byte ${offset} exceed a ${bytes.length}-byte buffer`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Array<bigint>(count);
  for (let i = 0; i < count; i++) out[i] = view.getBigUint64(offset + i * 8, true);
  return out;
}

/** Little-endian bytes of 64-bit words, as they are stored in guest memory. */
export function wordsToBytes(words: readonly bigint[]): Uint8Array {
  const out = new Uint8Array(words.length * 8);
  const view = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) view.setBigUint64(i * 8, BigInt.asUintN(64, words[i]!), true);
  return out;
}

/** Hex of a 64-bit word, zero-padded to 16 digits: for messages and traces. */
export function hex64(word: bigint): string {
  return '0x' + BigInt.asUintN(64, word).toString(16).padStart(16, '0');
}
