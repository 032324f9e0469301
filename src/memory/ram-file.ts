/**
 * Guest-RAM files on a memory filesystem (/dev/shm, or any directory the user names):
 * exclusive creation under a fresh random name, and a sparse copy for moving a store to a new
 * file (src/memory/backing.ts FileBacking.relink).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fail } from '../errors.js';

/**
 * A new file of `size` zero bytes under `dir` with a fresh random name, created exclusively
 * (O_CREAT | O_EXCL: never an existing file or a symbolic link planted under the name), mode
 * 0600. Returns its descriptor and path.
 */
export function createNamed(dir: string, prefix: string, size: number): { fd: number; p: string } {
  fs.mkdirSync(dir, { recursive: true });
  const p = path.join(dir, `${prefix}${process.pid}-${randomBytes(6).toString('hex')}`);
  const fd = fs.openSync(p, 'wx+', 0o600);
  try {
    fs.ftruncateSync(fd, size);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(p, { force: true });
    throw e;
  }
  return { fd, p };
}

const COPY_CHUNK = 1 << 20;
const COPY_PAGE = 4096;

/** Copy `size` bytes between descriptors, skipping all-zero pages (the target is sparse and zero). */
export function copyPages(from: number, to: number, size: number): void {
  const buf = Buffer.allocUnsafe(COPY_CHUNK);
  const zero = Buffer.alloc(COPY_PAGE);
  for (let off = 0; off < size; off += COPY_CHUNK) {
    const n = Math.min(COPY_CHUNK, size - off);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(from, buf, got, n - got, off + got);
      if (r <= 0) fail('EFAULT', `short read while copying guest RAM at ${off + got}`);
      got += r;
    }
    for (let p = 0; p < n; p += COPY_PAGE) {
      const len = Math.min(COPY_PAGE, n - p);
      const page = buf.subarray(p, p + len);
      if (page.equals(zero.subarray(0, len))) continue;
      let done = 0;
      while (done < len) done += fs.writeSync(to, page, done, len - done, off + p + done);
    }
  }
}
