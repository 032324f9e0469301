/**
 * Mapped guest RAM (guest/memory/guest-ram.ts with src/memory/mapped-backing.ts): a sealed memfd
 * or a file, MAP_SHARED, with the DMA staging area after RAM.
 */
import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { DmaStaging } from '../../../../guest/memory/dma-staging.js';
import { Seal, fstat, getSeals, loadError, mappingCount, nativeAvailable } from '../../../../src/native/native.js';
import { resolveMemoryBackend } from '../../../../src/memory/memory-backend.js';
import { errorCodeOf } from '../../../support/error-code.js';

describe('memory backend option', () => {
  it("accepts 'mapped' and 'pread' only; 'pread' is always honoured", () => {
    expect(resolveMemoryBackend('pread')).toBe('pread');
    expect(resolveMemoryBackend('mapped')).toBe(nativeAvailable() ? 'mapped' : 'pread');
    expect(resolveMemoryBackend()).toBe(nativeAvailable() ? 'mapped' : 'pread');
    expect(errorCodeOf(() => resolveMemoryBackend('mmap'))).toBe('EINVAL');
  });

  it('a staging area needs mapped RAM (EINVAL), in 4 KiB multiples', () => {
    expect(errorCodeOf(() => GuestRam.create(8192, { backing: 'file', access: 'pread', stagingBytes: 4096 }))).toBe('EINVAL');
    expect(errorCodeOf(() => GuestRam.create(8192, { backing: 'inproc', stagingBytes: 4096 }))).toBe('EINVAL');
    expect(errorCodeOf(() => GuestRam.create(8192, { backing: 'memfd', stagingBytes: 100 }))).toBe('EINVAL');
  });

  it('one staging slot: a second acquire waits for release', () => {
    const s = new DmaStaging(Buffer.alloc(16));
    expect(s.acquire()).toBeDefined();
    expect(s.acquire()).toBeUndefined();
    s.release();
    expect(s.acquire()).toBeDefined();
  });
});

describe.skipIf(!nativeAvailable())(`mapped guest RAM${nativeAvailable() ? '' : ` (skipped: ${loadError})`}`, () => {
  it('a memfd sealed against shrink and grow, with the staging area after RAM in the same file', () => {
    const maps = mappingCount();
    const ram = GuestRam.create(64 * 1024, { backing: 'memfd', stagingBytes: 8192 });
    expect(mappingCount()).toBe(maps + 1);
    const fd = ram.fd!;
    expect(getSeals(fd) & (Seal.SHRINK | Seal.GROW)).toBe(Seal.SHRINK | Seal.GROW);
    expect(fstat(fd).size).toBe(BigInt(64 * 1024 + 8192));
    expect(ram.size).toBe(64 * 1024);
    expect(ram.staging!.length).toBe(8192);
    ram.staging!.writeUInt32LE(0x11223344, 0);
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 64 * 1024);
    expect(b.readUInt32LE(0)).toBe(0x11223344);
    // GPA accesses stop at RAM's end: the staging area is not guest RAM.
    expect(errorCodeOf(() => ram.readU32(64 * 1024))).toBe('EFAULT');
    ram.writeU64(0x1000, 0x0102030405060708n);
    fs.readSync(fd, b, 0, 4, 0x1000);
    expect(b.readUInt32LE(0)).toBe(0x05060708);
    ram.close();
    expect(mappingCount()).toBe(maps);
    expect(fs.existsSync(`/proc/self/fd/${fd}`)).toBe(false);
  });

  it('a mapped file is coherent with a positioned-I/O opener of the same path, and removed at close', () => {
    const ram = GuestRam.create(16384, { backing: 'file', access: 'mapped' });
    expect(ram.backing.kind).toBe('mapped');
    const other = GuestRam.open(ram.path, 16384);
    ram.writeU32(8, 77);
    expect(other.readU32(8)).toBe(77);
    other.writeU32(12, 99);
    expect(ram.readU32(12)).toBe(99);
    other.close();
    const p = ram.path;
    ram.close();
    expect(fs.existsSync(p)).toBe(false);
  });
});
