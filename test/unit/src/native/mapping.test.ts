/**
 * The addon's memory half: memfd_create, fstat, seals, openat(O_NOFOLLOW) and MAP_SHARED
 * mappings as ArrayBuffers — coherent across mappings, positioned I/O and processes (mmap(2)).
 */
import { describe, expect, it, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import {
  Seal, addSeals, closeFd, findPackageRoot, fstat, getSeals, isNativeError, loadError, mappingCount, memfdCreate,
  mmap, munmap, nativeAvailable, openNoFollow, pageSize,
} from '../../../../src/native/native.js';
import { errnoCodeOf as code, openFdCount } from './socket-pair.js';

const ADDON = path.join(findPackageRoot(import.meta.dirname) ?? '.', 'native/build/vsva_native.node');
const opened: number[] = [];
function memfd(size: number | bigint, name = 'vsva-test'): number {
  const fd = memfdCreate(name, size);
  opened.push(fd);
  return fd;
}
afterEach(() => {
  for (const fd of opened.splice(0)) try { closeFd(fd); } catch { /* closed by the test */ }
});

describe.skipIf(!nativeAvailable())(`native mappings${nativeAvailable() ? '' : ` (skipped: native addon unavailable: ${loadError})`}`, () => {
  it('memfd_create sizes the file; fstat reports a regular, unlinked file with bigint fields', () => {
    const fd = memfd(3n * 4096n);
    const st = fstat(fd);
    expect(st.isReg).toBe(true);
    expect([st.isDir, st.isSock, st.isFifo, st.isChr]).toEqual([false, false, false, false]);
    expect(st.size).toBe(12288n);
    expect(st.nlink).toBe(0);
    expect(st.uid).toBe(process.getuid!());
    expect(typeof st.ino).toBe('bigint');
    expect(typeof st.dev).toBe('bigint');
    expect(st.mode & 0o170000).toBe(0o100000);
    // close-on-exec (fdinfo flags are octal; O_CLOEXEC = 02000000)
    const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
    expect(parseInt(flags, 8) & 0o2000000).not.toBe(0);
  });

  it('a store through one mapping is seen at once through a second mapping and by pread, and pwrite by the mapping', () => {
    const fd = memfd(2 * pageSize());
    const a = new Uint8Array(mmap(fd, 2 * pageSize(), 0, true));
    const b = new DataView(mmap(fd, pageSize(), pageSize(), false));
    expect(a.byteLength).toBe(2 * pageSize());
    a.set([1, 2, 3, 4, 5, 6, 7, 8], pageSize());
    expect(b.getBigUint64(0, true)).toBe(0x0807060504030201n);
    const got = Buffer.alloc(8);
    fs.readSync(fd, got, 0, 8, pageSize());
    expect([...got]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    fs.writeSync(fd, Buffer.from([0xaa, 0xbb]), 0, 2, pageSize() + 2);
    expect(b.getUint16(2, true)).toBe(0xbbaa);
    expect(a[pageSize() + 3]).toBe(0xbb);
    munmap(a.buffer);
    munmap(b.buffer);
  });

  it('another process mapping the same memfd sees our stores and we see its stores, with no flush', async () => {
    const size = 64 * 1024;
    const fd = memfd(size);
    const mine = new Uint8Array(mmap(fd, size, 0, true));
    // The child gets the fd as its fd 3 and maps it with the addon directly (no TypeScript needed).
    const child = spawn(process.execPath, ['-e', `
      const a = require(process.argv[1]);
      const u = new Uint8Array(a.mmap(3, ${size}, 0, true));
      for (let i = 0; i < u.length; i++) u[i] = (i * 7 + 3) & 255;
      process.stdout.write('written\\n');
      process.stdin.once('data', () => {
        let bad = -1;
        for (let i = 0; i < u.length; i++) if (u[i] !== ((i * 13 + 1) & 255)) { bad = i; break; }
        process.stdout.write(bad < 0 ? 'seen\\n' : 'mismatch at ' + bad + '\\n');
        process.exit(0);
      });`, ADDON], { stdio: ['pipe', 'pipe', 'inherit', fd] });
    const lines: string[] = [];
    const waitLine = (): Promise<string> => new Promise((resolve, reject) => {
      if (lines.length) return resolve(lines.shift()!);
      child.stdout!.once('data', (d: Buffer) => { lines.push(...d.toString().trim().split('\n')); resolve(lines.shift()!); });
      child.once('exit', c => reject(new Error(`child exited ${c}`)));
    });
    try {
      expect(await waitLine()).toBe('written');
      // The child is still running and never flushed: its stores are in the shared pages.
      let bad = -1;
      for (let i = 0; i < size; i++) if (mine[i] !== ((i * 7 + 3) & 255)) { bad = i; break; }
      expect(bad).toBe(-1);
      for (let i = 0; i < size; i++) mine[i] = (i * 13 + 1) & 255;
      child.stdin!.write('go\n');
      expect(await waitLine()).toBe('seen');
    } finally {
      child.kill();
      munmap(mine.buffer);
    }
  });

  it('munmap detaches the buffer (views read as empty), is idempotent, and mappingCount returns to baseline', () => {
    const base = mappingCount();
    const fd = memfd(4096);
    const ab = mmap(fd, 4096, 0, true);
    const view = new Uint32Array(ab);
    view[0] = 0xdeadbeef;
    expect(mappingCount()).toBe(base + 1);
    expect(munmap(ab)).toBe(true);
    expect(ab.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(mappingCount()).toBe(base);
    expect(munmap(ab)).toBe(false);
    expect(mappingCount()).toBe(base);
  });

  it('a mapping dropped without munmap is unmapped when collected', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const base = mappingCount();
    const fd = memfd(4096);
    (() => { for (let i = 0; i < 5; i++) new Uint8Array(mmap(fd, 4096, 0, true))[i] = i; })();
    expect(mappingCount()).toBe(base + 5);
    for (let i = 0; i < 50 && mappingCount() !== base; i++) {
      gc();
      await new Promise(r => setTimeout(r, 5)); // the finalizer runs on the loop after the GC
    }
    expect(mappingCount()).toBe(base);
  });

  it('mmap refuses a range past the end of the file, an unaligned offset, size 0, a write mapping of a read-only fd', () => {
    const fd = memfd(8192);
    expect(code(() => mmap(fd, 8193, 0, true))).toBe('EINVAL');
    expect(code(() => mmap(fd, 4096, 8192, true))).toBe('EINVAL');
    expect(code(() => mmap(fd, 4096, 1, true))).toBe('EINVAL');
    expect(code(() => mmap(fd, 0, 0, true))).toBe('EINVAL');
    expect(code(() => mmap(fd, -1, 0, true))).toBe('EINVAL');
    // A read-only descriptor of the same memfd, through its /proc magic link (which O_NOFOLLOW refuses).
    expect(code(() => openNoFollow(-1, `/proc/self/fd/${fd}`, false))).toBe('ELOOP');
    const base = mappingCount();
    const ro = fs.openSync(`/proc/self/fd/${fd}`, 'r');
    opened.push(ro);
    expect(code(() => mmap(ro, 4096, 0, true))).toBe('EACCES');
    expect(mappingCount()).toBe(base);
    munmap(mmap(ro, 4096, 0, false));
    expect(mappingCount()).toBe(base);
  });

  it('mmap and fstat on a closed fd are EBADF; a directory cannot be mapped (ENODEV)', () => {
    const fd = memfdCreate('closed', 4096);
    closeFd(fd);
    expect(code(() => fstat(fd))).toBe('EBADF');
    expect(code(() => mmap(fd, 4096, 0, false))).toBe('EBADF');
    expect(code(() => closeFd(fd))).toBe('EBADF');
    const dir = openNoFollow(-1, os.tmpdir(), false);
    opened.push(dir);
    expect(fstat(dir).isDir).toBe(true);
    expect(code(() => mmap(dir, 4096, 0, false))).toBe('ENODEV');
  });

  it('munmap refuses an ArrayBuffer it did not map (EINVAL) and anything else (TypeError)', () => {
    expect(code(() => munmap(new ArrayBuffer(16)))).toBe('EINVAL');
    expect(() => munmap({} as ArrayBuffer)).toThrow(TypeError);
  });

  it('errors name the call and carry errno and syscall', () => {
    try {
      fstat(1 << 30);
      expect.unreachable();
    } catch (e) {
      expect(isNativeError(e, 'EBADF')).toBe(true);
      expect((e as Error).message).toMatch(/^fstat: /);
      expect(e).toMatchObject({ errno: 9, syscall: 'fstat' });
    }
  });

  it('memfdCreate validates its arguments', () => {
    expect(() => memfdCreate('', 4096)).toThrow(TypeError);
    expect(() => memfdCreate('x'.repeat(250), 4096)).toThrow(TypeError);
    expect(() => memfdCreate('x', -1)).toThrow(TypeError);
    expect(() => memfdCreate('x', 1.5)).toThrow(TypeError);
    expect(() => memfdCreate('x', 1n << 63n)).toThrow(TypeError);
    expect(() => memfdCreate('x', Number.NaN)).toThrow(TypeError);
    expect(() => memfdCreate('a\0b', 4096)).toThrow(TypeError);
    expect(() => closeFd(Number.POSITIVE_INFINITY)).toThrow(TypeError);
  });

  it('seals: SHRINK|GROW fix the size (a peer cannot truncate pages we have mapped)', () => {
    const fd = memfd(8192);
    expect(getSeals(fd)).toBe(0);
    addSeals(fd, Seal.SHRINK | Seal.GROW);
    expect(getSeals(fd)).toBe(Seal.SHRINK | Seal.GROW);
    expect(() => fs.ftruncateSync(fd, 0)).toThrow(/EPERM/);
    expect(() => fs.ftruncateSync(fd, 16384)).toThrow(/EPERM/);
    expect(fstat(fd).size).toBe(8192n);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-seal-'));
    try {
      expect(code(() => openNoFollow(-1, path.join(tmp, 'f'), true))).toBe('ENOENT'); // never creates
      fs.writeFileSync(path.join(tmp, 'f'), 'x');
      const plain = openNoFollow(-1, path.join(tmp, 'f'), true);
      opened.push(plain);
      expect(code(() => getSeals(plain))).toBe('EINVAL');
    } finally {
      fs.rmSync(tmp, { recursive: true });
    }
  });

  it('openNoFollow opens relative to a directory fd and refuses a symbolic link as the last component (ELOOP)', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-open-'));
    try {
      fs.writeFileSync(path.join(tmp, 'ram'), Buffer.alloc(4096, 7));
      fs.symlinkSync('ram', path.join(tmp, 'link'));
      const dir = openNoFollow(-1, tmp, false);
      opened.push(dir);
      const fd = openNoFollow(dir, 'ram', true);
      opened.push(fd);
      expect(fstat(fd).ino).toBe(BigInt(fs.statSync(path.join(tmp, 'ram')).ino));
      expect(code(() => openNoFollow(dir, 'link', true))).toBe('ELOOP');
      expect(code(() => openNoFollow(-1, path.join(tmp, 'link'), false))).toBe('ELOOP');
      expect(code(() => openNoFollow(dir, 'missing', false))).toBe('ENOENT');
      expect(code(() => openNoFollow(fd, 'ram', false))).toBe('ENOTDIR');
      expect(() => openNoFollow(-2, 'ram', false)).toThrow(TypeError);
      const view = new Uint8Array(mmap(fd, 4096, 0, true));
      expect(view[4095]).toBe(7);
      munmap(view.buffer);
    } finally {
      fs.rmSync(tmp, { recursive: true });
    }
  });

  it('50 create/map/write/unmap/close cycles leave fd and mapping counts at baseline', () => {
    const fds = openFdCount();
    const maps = mappingCount();
    for (let i = 0; i < 50; i++) {
      const fd = memfdCreate(`cycle-${i}`, 65536);
      const a = new Float64Array(mmap(fd, 65536, 0, true));
      const b = new Float64Array(mmap(fd, 4096, 61440, false));
      a[a.length - 1] = i;
      expect(b[b.length - 1]).toBe(i);
      munmap(a.buffer);
      munmap(b.buffer);
      closeFd(fd);
    }
    expect(openFdCount()).toBe(fds);
    expect(mappingCount()).toBe(maps);
  });
});
