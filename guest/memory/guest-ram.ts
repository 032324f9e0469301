/**
 * Guest RAM: guest-physical memory from GPA 0 to `size`, backed by a shared file (the path is
 * what SET_MEM_TABLE announces and the host maps) or by an in-process buffer.
 */
import { FileBacking, InProcessBacking, openBacking, type MemoryBacking } from '../../src/memory/backing.js';
import { checkRange, type PhysAccess } from '../../src/memory/phys-memory.js';
import { fail } from '../../src/errors.js';

export interface GuestRamOptions {
  /** 'file' (default): a file under the memory directory; 'inproc': a buffer in this process. */
  backing?: 'file' | 'inproc';
  dir?: string;
}

export class GuestRam implements PhysAccess {
  readonly size: number;

  private constructor(readonly backing: MemoryBacking) {
    this.size = backing.size;
  }

  /** Allocate fresh zeroed RAM. Size must be a positive multiple of 4 KiB. */
  static create(size: number, opts: GuestRamOptions = {}): GuestRam {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) {
      fail('EINVAL', `guest RAM size ${size} must be a positive multiple of 4096`);
    }
    const backing = opts.backing === 'inproc' ? new InProcessBacking(size) : FileBacking.create(size, opts.dir);
    return new GuestRam(backing);
  }

  /** Open RAM another object created (same path), as the host half does. */
  static open(path: string, size: number): GuestRam {
    return new GuestRam(openBacking(path, size));
  }

  get path(): string {
    return this.backing.path;
  }

  /**
   * The backing store, once [gpa, gpa + length) is known to lie inside guest RAM: every access
   * is bounds-checked as a whole before any byte moves (EFAULT otherwise).
   */
  private within(gpa: number, length: number): MemoryBacking {
    checkRange(gpa, length, this.size, 'guest RAM');
    return this.backing;
  }

  readU8(gpa: number): number {
    const b = new Uint8Array(1);
    this.within(gpa, 1).read(gpa, b);
    return b[0]!;
  }
  writeU8(gpa: number, value: number): void {
    this.within(gpa, 1).write(gpa, Uint8Array.of(value & 0xff));
  }
  readU32(gpa: number): number {
    return this.within(gpa, 4).readU32(gpa);
  }
  writeU32(gpa: number, value: number): void {
    this.within(gpa, 4).writeU32(gpa, value);
  }
  readU64(gpa: number): bigint {
    return this.within(gpa, 8).readU64(gpa);
  }
  writeU64(gpa: number, value: bigint): void {
    this.within(gpa, 8).writeU64(gpa, value);
  }
  read(gpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.within(gpa, length).read(gpa, out);
    return out;
  }
  readInto(gpa: number, dst: Uint8Array): void {
    this.within(gpa, dst.length).read(gpa, dst);
  }
  write(gpa: number, data: Uint8Array): void {
    this.within(gpa, data.length).write(gpa, data);
  }

  close(): void {
    this.backing.close();
  }
}
