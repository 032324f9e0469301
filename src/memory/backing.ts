/**
 * Byte stores behind guest RAM and host physical memory.
 *
 * A file-backed store reads and writes the file with positioned I/O on every access — the
 * fallback when the native addon is unavailable (docs/architecture.md "Memory model"; the mapped
 * store is mapped-backing.ts): two processes that open the same path always see each other's
 * writes (no caching on either side), which is what the guest/host split needs. An
 * in-process store keeps the bytes in a Buffer and is registered under an `inproc:` path so
 * that the host half, when it runs in the same process, maps the very same bytes.
 *
 * Contract: offsets and lengths are checked by the caller (PhysMemory); a backing only
 * performs whole accesses — it never writes part of a request.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fail } from '../errors.js';
import { defaultMemoryDir } from './memory-dir.js';
import { BufferStore } from './buffer-store.js';
import { copyPages, createNamed } from './ram-file.js';

export interface MemoryBacking {
  /** Bytes in the store. */
  readonly size: number;
  /** What the other half opens: a file path, or `inproc:<id>`. */
  readonly path: string;
  /** 'file': positioned I/O on a descriptor; 'mapped': a MAP_SHARED mapping (mapped-backing.ts); 'inproc': a Buffer. */
  readonly kind: 'file' | 'inproc' | 'mapped';
  /** Direct view of the bytes when they are addressable in this process (in-process and mapped stores). */
  readonly buffer: Buffer | undefined;
  read(offset: number, dst: Uint8Array): void;
  write(offset: number, src: Uint8Array): void;
  readU32(offset: number): number;
  writeU32(offset: number, value: number): void;
  readU64(offset: number): bigint;
  writeU64(offset: number, value: bigint): void;
  close(): void;
}

const INPROC_PREFIX = 'inproc:';
const inprocRegistry = new Map<string, InProcessBacking>();

/** A store in a Buffer of this process (accessors: buffer-store.ts). */
export class InProcessBacking extends BufferStore implements MemoryBacking {
  readonly kind = 'inproc' as const;
  readonly buffer: Buffer;
  readonly path: string;
  private closed = false;

  constructor(readonly size: number, name?: string) {
    super();
    this.buffer = Buffer.alloc(size);
    this.path = INPROC_PREFIX + (name ?? randomBytes(8).toString('hex'));
    if (inprocRegistry.has(this.path)) fail('EEXIST', `in-process memory '${this.path}' already exists`);
    inprocRegistry.set(this.path, this);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    inprocRegistry.delete(this.path);
  }
}

/** A store in a file (normally on a memory filesystem such as /dev/shm). */
export class FileBacking implements MemoryBacking {
  readonly kind = 'file' as const;
  readonly buffer = undefined;
  private fd: number;
  private readonly scratch = Buffer.alloc(8);

  private constructor(private filePath: string, readonly size: number, fd: number, private owner: boolean) {
    this.fd = fd;
  }

  /** The file's path (what the path form announces); it changes when `relink` moves the store. */
  get path(): string {
    return this.filePath;
  }

  /** True while a file this store created still has its name (until `unlink`). */
  get named(): boolean {
    return this.owner;
  }

  /**
   * Remove the name of a file this store created; the store keeps the file open (the host half
   * holds its own descriptor). Afterwards close() unlinks nothing. No-op when not the creator.
   */
  unlink(): void {
    if (!this.owner) return;
    this.owner = false;
    fs.rmSync(this.filePath, { force: true });
  }

  /**
   * Give the store a name again after `unlink`: a new file in `dir` (default: the old one's
   * directory) receives every non-zero page, and the store moves to it (the old file is closed
   * and, having no name, freed). For the path form's announcement to a host that has not opened
   * the file yet (after a host restart). Synchronous, so no access interleaves with the move.
   */
  relink(dir = path.dirname(this.filePath)): void {
    if (this.fd < 0) fail('EBADF', `memory file '${this.filePath}' is closed`);
    const { fd, p } = createNamed(dir, 'vsva-ram-', this.size);
    try {
      copyPages(this.fd, fd, this.size);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(p, { force: true });
      throw e;
    }
    fs.closeSync(this.fd);
    this.fd = fd;
    this.filePath = p;
    this.owner = true;
  }

  /**
   * Positioned I/O on a descriptor this store takes over (closed by close()): a file received in
   * SET_MEM_TABLE's fd form when the host does not map it. `label` names it in errors.
   */
  static fromFd(fd: number, size: number, label: string): FileBacking {
    return new FileBacking(label, size, fd, false);
  }

  /** Create (truncate) a file of `size` zero bytes; the creator unlinks it on close. */
  static create(size: number, dir = defaultMemoryDir(), prefix = 'vsva-ram-'): FileBacking {
    const { fd, p } = createNamed(dir, prefix, size);
    return new FileBacking(p, size, fd, true);
  }

  /** Open an existing file for read/write; it must hold at least `size` bytes. */
  static open(p: string, size: number): FileBacking {
    let fd: number;
    try {
      fd = fs.openSync(p, 'r+');
    } catch (e) {
      fail('ENOENT', `cannot open memory file '${p}': ${(e as Error).message}`);
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size < size) {
      fs.closeSync(fd);
      fail('EINVAL', `memory file '${p}' is ${st.isFile() ? `${st.size} bytes, ${size} needed` : 'not a regular file'}`);
    }
    return new FileBacking(p, size, fd, false);
  }

  read(offset: number, dst: Uint8Array): void {
    let done = 0;
    while (done < dst.length) {
      const n = fs.readSync(this.fd, dst, done, dst.length - done, offset + done);
      if (n <= 0) fail('EFAULT', `short read of memory file '${this.path}' at ${offset + done}`);
      done += n;
    }
  }
  write(offset: number, src: Uint8Array): void {
    let done = 0;
    while (done < src.length) {
      done += fs.writeSync(this.fd, src, done, src.length - done, offset + done);
    }
  }
  readU32(offset: number): number {
    this.read(offset, this.scratch.subarray(0, 4));
    return this.scratch.readUInt32LE(0);
  }
  writeU32(offset: number, value: number): void {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(value >>> 0, 0);
    this.write(offset, b);
  }
  readU64(offset: number): bigint {
    this.read(offset, this.scratch);
    return this.scratch.readBigUInt64LE(0);
  }
  writeU64(offset: number, value: bigint): void {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, value), 0);
    this.write(offset, b);
  }
  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
    if (this.owner) fs.rmSync(this.path, { force: true });
  }
}

/**
 * Open the store another half announced. `inproc:` paths resolve to a live in-process store;
 * file paths are opened with positioned I/O. Callers that take paths from a peer confine them
 * first (the host does, with symbolic links resolved: host/vfio/mem-table.ts confinePath).
 */
export function openBacking(p: string, size: number): MemoryBacking {
  if (p.startsWith(INPROC_PREFIX)) {
    const b = inprocRegistry.get(p);
    if (!b) fail('ENOENT', `no in-process memory named '${p}'`);
    if (b.size < size) fail('EINVAL', `in-process memory '${p}' is ${b.size} bytes, ${size} needed`);
    return b;
  }
  return FileBacking.open(p, size);
}
