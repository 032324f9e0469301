/**
 * The accessors of a byte store whose bytes are addressable in this process as one Buffer: the
 * in-process store (backing.ts) and the MAP_SHARED store (mapped-backing.ts). Multi-byte values
 * are little-endian (x86 guest memory). Offsets are checked as Buffer checks them.
 */
export abstract class BufferStore {
  /** The bytes of the store. */
  abstract readonly buffer: Buffer;

  read(offset: number, dst: Uint8Array): void {
    this.buffer.copy(dst, 0, offset, offset + dst.length);
  }
  write(offset: number, src: Uint8Array): void {
    this.buffer.set(src, offset);
  }
  readU32(offset: number): number {
    return this.buffer.readUInt32LE(offset);
  }
  writeU32(offset: number, value: number): void {
    this.buffer.writeUInt32LE(value >>> 0, offset);
  }
  readU64(offset: number): bigint {
    return this.buffer.readBigUInt64LE(offset);
  }
  writeU64(offset: number, value: bigint): void {
    this.buffer.writeBigUInt64LE(BigInt.asUintN(64, value), offset);
  }
}
