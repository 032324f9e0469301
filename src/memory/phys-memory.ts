/**
 * Bounds-checked physical memory access, shared by guest RAM (GPA) and host memory (HPA).
 *
 * Addresses are JavaScript numbers (physical addresses here stay below 2^53; anything larger
 * is out of range by construction). Every access is checked as a whole before any byte moves,
 * so an out-of-range access throws EFAULT and changes nothing — never a wrap, never a partial
 * write.
 */
import { fail } from '../errors.js';

export interface PhysAccess {
  readU8(addr: number): number;
  writeU8(addr: number, value: number): void;
  readU32(addr: number): number;
  writeU32(addr: number, value: number): void;
  readU64(addr: number): bigint;
  writeU64(addr: number, value: bigint): void;
  read(addr: number, length: number): Uint8Array;
  readInto(addr: number, dst: Uint8Array): void;
  write(addr: number, data: Uint8Array): void;
}

export function checkRange(addr: number, length: number, size: number, what: string): void {
  if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || addr < 0 || length < 0 || addr + length > size) {
    fail('EFAULT', `${what}: access of ${length} bytes at 0x${Number.isFinite(addr) ? addr.toString(16) : String(addr)} is outside 0..0x${size.toString(16)}`);
  }
}
