/**
 * Guest RAM: guest-physical memory from GPA 0 to `size`, backed by
 * - a memfd mapped MAP_SHARED ('memfd'): its fd is what SET_MEM_TABLE's fd form sends, as a
 *   vhost-user front-end does (docs/protocol.md, SET_MEM_TABLE);
 * - a shared file on a memory filesystem ('file'), mapped MAP_SHARED (access 'mapped') or read
 *   with positioned I/O (access 'pread'); its path is what the path form announces;
 * - an in-process buffer ('inproc', for a host in the same process).
 *
 * A file has a name only until both halves hold it (`releaseName`, docs/reliability.md "Guest
 * RAM files"): a guest killed later leaves no RAM file behind. A path-form announcement needs
 * the name: `relink` gives a positioned-I/O store a new one (a host restart).
 *
 * A mapped store may hold `stagingBytes` more after RAM, in the same file: the DMA staging area
 * (docs/architecture.md "Memory model"), announced as a second region the guest never addresses
 * as RAM. GPA accesses are bounds-checked against `size` only.
 */
import { FileBacking, InProcessBacking, openBacking, type MemoryBacking } from '../../src/memory/backing.js';
import { MappedBacking } from '../../src/memory/mapped-backing.js';
import { defaultMemoryDir } from '../../src/memory/memory-dir.js';
import { checkRange, type PhysAccess } from '../../src/memory/phys-memory.js';
import { fail } from '../../src/errors.js';

export interface GuestRamOptions {
  /** 'file' (default): a file under the memory directory; 'memfd': an anonymous memfd; 'inproc': a buffer in this process. */
  backing?: 'file' | 'inproc' | 'memfd';
  dir?: string;
  /** 'file' only: map it (needs the native addon) or use positioned I/O (default). 'memfd' is always mapped. */
  access?: 'mapped' | 'pread';
  /** Mapped stores only: bytes of DMA staging area after RAM (0: none). A multiple of 4 KiB. */
  stagingBytes?: number;
}

export class GuestRam implements PhysAccess {
  readonly size: number;
  /** The DMA staging area after RAM (mapped stores created with stagingBytes), else undefined. */
  readonly staging: Buffer | undefined;

  private constructor(readonly backing: MemoryBacking, size = backing.size) {
    this.size = size;
    const extra = backing.size - size;
    this.staging = extra > 0 && backing.buffer !== undefined ? backing.buffer.subarray(size, size + extra) : undefined;
  }

  /** Allocate fresh zeroed RAM. Size must be a positive multiple of 4 KiB. */
  static create(size: number, opts: GuestRamOptions = {}): GuestRam {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) {
      fail('EINVAL', `guest RAM size ${size} must be a positive multiple of 4096`);
    }
    const staging = opts.stagingBytes ?? 0;
    if (!Number.isSafeInteger(staging) || staging < 0 || staging % 4096 !== 0) fail('EINVAL', `staging size ${staging} must be a multiple of 4096`);
    const kind = opts.backing ?? 'file';
    const mapped = kind === 'memfd' || (kind === 'file' && opts.access === 'mapped');
    if (staging > 0 && !mapped) fail('EINVAL', 'a DMA staging area needs mapped guest RAM');
    let backing: MemoryBacking;
    if (kind === 'inproc') backing = new InProcessBacking(size);
    else if (kind === 'memfd') backing = MappedBacking.createMemfd(size + staging);
    else if (mapped) backing = MappedBacking.createFile(size + staging, opts.dir ?? defaultMemoryDir());
    else backing = FileBacking.create(size, opts.dir);
    return new GuestRam(backing, size);
  }

  /** The descriptor of a mapped store (what SET_MEM_TABLE's fd form sends), else undefined. */
  get fd(): number | undefined {
    return this.backing instanceof MappedBacking ? this.backing.fd : undefined;
  }

  /** Open RAM another object created (same path), as the host half does. */
  static open(path: string, size: number): GuestRam {
    return new GuestRam(openBacking(path, size));
  }

  get path(): string {
    return this.backing.path;
  }

  /** True while RAM is a file that still has its name in the memory directory. */
  get named(): boolean {
    const b = this.backing;
    return (b instanceof FileBacking || b instanceof MappedBacking) && b.named;
  }

  /** Remove the RAM file's name (the file lives on while open). No-op for memfds and buffers. */
  releaseName(): void {
    const b = this.backing;
    if (b instanceof FileBacking || b instanceof MappedBacking) b.unlink();
  }

  /**
   * A name for a positioned-I/O file whose name was released: a fresh file in the same
   * directory takes RAM's bytes (FileBacking.relink). EOPNOTSUPP for other stores.
   */
  relink(): void {
    if (!(this.backing instanceof FileBacking)) fail('EOPNOTSUPP', 'only guest RAM in a positioned-I/O file can be given a new name');
    this.backing.relink();
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
