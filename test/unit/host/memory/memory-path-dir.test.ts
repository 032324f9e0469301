/**
 * The memory-path directory (host/memory/memory-path-dir.ts): the host refuses to start on a
 * directory that is not its own with mode 0700; a region file is checked on its opened
 * descriptor — one component, no symbolic link, regular, one link, the expected owner, large
 * enough — with nothing left open on a refusal.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MemoryPathDir } from '../../../../host/memory/memory-path-dir.js';
import { expectedErrnoOf } from '../../../support/error-code.js';

const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
const me = process.geteuid?.() ?? 0;
let dir: string;

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(base, 'vsva-mpd-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('MemoryPathDir.open (host start)', () => {
  it('accepts a 0700 directory of the host user; refuses a missing one (ENOENT), a file (EINVAL), a wider mode (EACCES)', () => {
    MemoryPathDir.open(dir).close();
    expect(expectedErrnoOf(() => MemoryPathDir.open(path.join(dir, 'missing')))).toBe('ENOENT');
    fs.writeFileSync(path.join(dir, 'f'), '');
    expect(expectedErrnoOf(() => MemoryPathDir.open(path.join(dir, 'f')))).toBe('EINVAL');
    fs.chmodSync(dir, 0o755);
    expect(() => MemoryPathDir.open(dir)).toThrow(/must be owned by the host's user \(uid \d+\) with mode 0700.*mode 0755/);
    fs.chmodSync(dir, 0o700);
  });

  it.runIf(me === 0)("refuses a directory another user owns (EACCES), even with mode 0700", () => {
    fs.chownSync(dir, 65534, 65534);
    expect(expectedErrnoOf(() => MemoryPathDir.open(dir))).toBe('EACCES');
  });
});

describe('MemoryPathDir.openRegion', () => {
  it('opens a good file by DIR/name or bare name and reports its identity', () => {
    const d = MemoryPathDir.open(dir);
    try {
      fs.writeFileSync(path.join(dir, 'ram'), Buffer.alloc(8192));
      for (const p of [path.join(dir, 'ram'), 'ram']) {
        const f = d.openRegion(p, 8192n, me);
        expect(f.name).toBe('ram');
        expect(f.key).toBe(`inode:${fs.statSync(path.join(dir, 'ram')).dev}:${fs.statSync(path.join(dir, 'ram')).ino}`);
        fs.closeSync(f.fd);
      }
    } finally {
      d.close();
    }
  });

  it('refuses (and leaves nothing open): forged owner EACCES, symlink ELOOP, hard link EMLINK, directory EINVAL, small EINVAL, names leaving DIR EACCES', () => {
    const d = MemoryPathDir.open(dir);
    try {
      fs.writeFileSync(path.join(dir, 'ram'), Buffer.alloc(8192));
      fs.symlinkSync(path.join(dir, 'ram'), path.join(dir, 'sym'));
      fs.writeFileSync(path.join(dir, 'two'), Buffer.alloc(8192));
      fs.linkSync(path.join(dir, 'two'), path.join(dir, 'two-b'));
      fs.mkdirSync(path.join(dir, 'sub'));
      const fds = openFds();
      // The peer's uid is not the file's owner (a peer of another user naming our file).
      expect(expectedErrnoOf(() => d.openRegion('ram', 8192n, me + 1))).toBe('EACCES');
      expect(expectedErrnoOf(() => d.openRegion('sym', 8192n, me))).toBe('ELOOP');
      expect(expectedErrnoOf(() => d.openRegion('two', 8192n, me))).toBe('EMLINK');
      expect(expectedErrnoOf(() => d.openRegion('sub', 8192n, me))).toBe('EINVAL');
      expect(expectedErrnoOf(() => d.openRegion('ram', 8193n, me))).toBe('EINVAL');
      expect(expectedErrnoOf(() => d.openRegion('missing', 1n, me))).toBe('ENOENT');
      for (const bad of ['..', '.', '', 'sub/x', `${dir}/../x`, `${dir}/sub/x`, '/etc/passwd', `${dir}x/ram`]) {
        expect(expectedErrnoOf(() => d.openRegion(bad, 1n, me))).toBe('EACCES');
      }
      expect(openFds()).toBe(fds);
    } finally {
      d.close();
    }
  });

  it('keeps opening inside the directory it opened after DIR is renamed and replaced by a symbolic link', () => {
    const outside = fs.mkdtempSync(path.join(base, 'vsva-mpd-out-'));
    const d = MemoryPathDir.open(dir);
    try {
      fs.writeFileSync(path.join(dir, 'ram'), Buffer.alloc(8192, 1));
      fs.writeFileSync(path.join(outside, 'ram'), Buffer.alloc(8192, 2));
      fs.renameSync(dir, `${dir}.moved`);
      fs.symlinkSync(outside, dir);
      const f = d.openRegion(path.join(dir, 'ram'), 8192n, me);
      const b = Buffer.alloc(1);
      fs.readSync(f.fd, b, 0, 1, 0);
      fs.closeSync(f.fd);
      expect(b[0]).toBe(1);
    } finally {
      d.close();
      fs.rmSync(dir, { force: true });
      fs.renameSync(`${dir}.moved`, dir);
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });
});
