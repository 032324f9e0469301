/**
 * A byte store mapped MAP_SHARED (mmap(2)) through the native addon (src/native/native.ts):
 * loads and stores reach the file directly and are seen at once by every other mapping of it,
 * in this process or another — the memory model of vhost-user, where the front-end creates guest
 * RAM as memfd/shm and the back-end maps the fds SET_MEM_TABLE passes (QEMU
 * docs/interop/vhost-user.rst, "Memory region description"; docs/architecture.md "Memory model").
 *
 * `buffer` is a Buffer over the mapping, so every user that already reads in-process stores
 * directly (the translation engine's PhysPort, DMA data moves, HostMemory) reads a mapping the
 * same way, with no system call per access.
 *
 * Descriptor and mapping ownership: the store owns its fd and its mapping; close() unmaps, then
 * closes the fd (and unlinks the file when this store created it under a path). Callers check
 * fds (type, size, seals) before handing them over: a mapping of a file that a peer later
 * shrinks raises SIGBUS on access (memfd_create(2), "File sealing"), so the host maps only
 * memfds sealed against shrinking.
 */
import * as fs from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { fail } from '../errors.js';
import { Seal, addSeals, closeFd, memfdCreate, mmap, munmap } from '../native/native.js';
import type { MemoryBacking } from './backing.js';
import { BufferStore } from './buffer-store.js';
import { createNamed } from './ram-file.js';

/**
 * Largest mapping one Buffer can view (buffer.constants.MAX_LENGTH): a store beyond it is refused
 * with E2BIG, and the caller keeps positioned I/O for it.
 */
export const MAX_MAPPED_BYTES = bufferConstants.MAX_LENGTH;

export class MappedBacking extends BufferStore implements MemoryBacking {
  readonly kind = 'mapped' as const;
  readonly buffer: Buffer;
  private mapping: ArrayBuffer;
  private fdOpen = true;

  private constructor(
    readonly path: string,
    readonly size: number,
    /** The descriptor of the mapped file (what SET_MEM_TABLE's fd form sends). */
    readonly fd: number,
    mapping: ArrayBuffer,
    private unlinkOnClose: boolean,
  ) {
    super();
    this.mapping = mapping;
    this.buffer = Buffer.from(mapping, 0, size);
  }

  /**
   * Fresh zeroed guest RAM in a memfd of `fileSize` bytes (≥ size), sealed against shrinking and
   * growing so that no holder of the fd can make the other side's mapping fault; the first
   * `size` bytes are mapped.
   */
  static createMemfd(size: number, fileSize = size, name = 'vsva-guest-ram'): MappedBacking {
    checkSize(size);
    const fd = memfdCreate(name, fileSize);
    try {
      addSeals(fd, Seal.SHRINK | Seal.GROW);
      return new MappedBacking(`memfd:${name}`, size, fd, mmap(fd, size, 0, true), false);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** Fresh zeroed RAM in a file under `dir` (a memory filesystem such as /dev/shm), unlinked at close. */
  static createFile(size: number, dir: string, fileSize = size, prefix = 'vsva-ram-'): MappedBacking {
    checkSize(size);
    const { fd, p } = createNamed(dir, prefix, fileSize);
    try {
      return new MappedBacking(p, size, fd, mmap(fd, size, 0, true), true);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(p, { force: true });
      throw e;
    }
  }

  /** True while a file this store created still has its name (until `unlink`). */
  get named(): boolean {
    return this.unlinkOnClose;
  }

  /**
   * Remove the name of a file this store created (the mapping and descriptor stay): once both
   * halves hold the file, a killed process leaves no RAM file behind. No-op for memfds.
   */
  unlink(): void {
    if (!this.unlinkOnClose) return;
    this.unlinkOnClose = false;
    fs.rmSync(this.path, { force: true });
  }

  /**
   * Map [offset, offset + size) of a descriptor this store takes over (the host side of
   * SET_MEM_TABLE). On failure the fd is left to the caller.
   */
  static fromFd(fd: number, size: number, offset: number, label: string): MappedBacking {
    checkSize(size);
    return new MappedBacking(label, size, fd, mmap(fd, size, offset, true), false);
  }

  /** Unmap, close the fd, unlink a file this store created. Idempotent. */
  close(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    munmap(this.mapping);
    this.mapping = new ArrayBuffer(0);
    closeFd(this.fd);
    if (this.unlinkOnClose) fs.rmSync(this.path, { force: true });
  }
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) fail('EINVAL', `mapped store size ${size} is not a positive integer`);
  if (size > MAX_MAPPED_BYTES) fail('E2BIG', `mapped store of ${size} bytes exceeds the ${MAX_MAPPED_BYTES}-byte view limit`);
}
