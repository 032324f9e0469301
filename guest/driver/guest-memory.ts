/**
 * The guest-physical memory view the guest driver model works through: exactly the
 * memread/memwrite pair of the GuestHandle (docs/design.md §7), plus little-endian word helpers on top.
 * Nothing here reaches into the VM's internals, so every helper built on it acts as guest
 * software would (loads and stores to RAM).
 */
import type { GuestHandle } from '../../src/api/types.js';

/** The memory half of a GuestHandle. */
export type GuestMemory = Pick<GuestHandle, 'memread' | 'memwrite'>;

/** The register half of a GuestHandle (the vIOMMU's MMIO window). */
export type GuestRegisters = Pick<GuestHandle, 'readl' | 'readq' | 'writel' | 'writeq'>;

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

/** Read one little-endian 64-bit word at `gpa`. */
export async function readU64(mem: GuestMemory, gpa: bigint): Promise<bigint> {
  const b = await mem.memread(gpa, 8);
  return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
}

/** Write one little-endian 64-bit word at `gpa`. */
export async function writeU64(mem: GuestMemory, gpa: bigint, value: bigint): Promise<void> {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
  await mem.memwrite(gpa, b);
}

/** Read one little-endian 32-bit word at `gpa`. */
export async function readU32(mem: GuestMemory, gpa: bigint): Promise<number> {
  const b = await mem.memread(gpa, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/** Write one little-endian 32-bit word at `gpa`. */
export async function writeU32(mem: GuestMemory, gpa: bigint, value: number): Promise<void> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value >>> 0, true);
  await mem.memwrite(gpa, b);
}

/** Read `count` consecutive little-endian 64-bit words at `gpa`. */
export async function readWords(mem: GuestMemory, gpa: bigint, count: number): Promise<bigint[]> {
  const b = await mem.memread(gpa, count * 8);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: bigint[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = v.getBigUint64(i * 8, true);
  return out;
}

/** Write consecutive little-endian 64-bit words at `gpa` in one store. */
export async function writeWords(mem: GuestMemory, gpa: bigint, words: readonly bigint[]): Promise<void> {
  const b = new Uint8Array(words.length * 8);
  const v = new DataView(b.buffer);
  for (let i = 0; i < words.length; i++) v.setBigUint64(i * 8, BigInt.asUintN(64, words[i]!), true);
  await mem.memwrite(gpa, b);
}
