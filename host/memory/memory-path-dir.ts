/**
 * The one directory whose files a socket peer may name as guest RAM in SET_MEM_TABLE's path form
 * (`vsva host --allow-memory-paths DIR`, docs/protocol.md "SET_MEM_TABLE"). Without it the host
 * accepts guest RAM only as passed descriptors.
 *
 * The directory is opened once, when the host starts, and must be a directory the host's own
 * user owns with mode 0700 — nobody else can create, rename or link names in it — else the host
 * refuses to start (EACCES, ENOENT, EINVAL: not a directory).
 *
 * A region file is opened exactly once, and every check is made on the OPENED descriptor
 * (fstat(2)), never again by name — no check-then-reopen:
 * - the name must be one component of DIR: `DIR/<name>` as announced or a bare `<name>`, no
 *   '/', not '.' or '..' (EACCES);
 * - it is opened relative to the directory's descriptor — openat(2) with O_NOFOLLOW (native
 *   addon), or without the addon through /proc/self/fd/<dirfd>/<name> (proc(5): the magic link
 *   is the opened directory itself) — so a rename of DIR or a symbolic link put in its place
 *   after start cannot redirect it; a symbolic link as the name is ELOOP;
 * - the opened file must be a regular file (EINVAL: FIFO, device, socket, directory), on DIR's
 *   own filesystem (EACCES: something mounted over the name), with exactly one link (EMLINK:
 *   a hard link could make a file outside DIR reachable inside it), owned by the peer's uid
 *   (SO_PEERCRED, unix(7); EACCES) and large enough for the region (EINVAL).
 * Without the native addon the peer's uid cannot be read (Node has no SO_PEERCRED): the file
 * must then be owned by the host's own uid, which DIR's mode 0700 already makes the only
 * user (besides root) able to create it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, VsvaError } from '../../src/errors.js';
import { closeFd, fstat, isNativeError, nativeAvailable, openDirectory, openNoFollow } from '../../src/native/native.js';

/** What the checks learned about an opened region file. */
export interface OpenedRegionFile {
  /** The open descriptor (the caller owns it). */
  readonly fd: number;
  /** The file's identity, `inode:<dev>:<ino>` (the key of the host's memory-file owners). */
  readonly key: string;
  /** The name inside DIR. */
  readonly name: string;
}

interface FileStat {
  isReg: boolean;
  isDir: boolean;
  mode: number;
  nlink: number;
  uid: number;
  dev: bigint;
  ino: bigint;
  size: bigint;
}

function statFd(fd: number, native: boolean): FileStat {
  if (native) return fstat(fd);
  const st = fs.fstatSync(fd, { bigint: true });
  return { isReg: st.isFile(), isDir: st.isDirectory(), mode: Number(st.mode), nlink: Number(st.nlink), uid: Number(st.uid), dev: st.dev, ino: st.ino, size: st.size };
}

function closeQuietly(fd: number, native: boolean): void {
  try {
    if (native) closeFd(fd);
    else fs.closeSync(fd);
  } catch {
    /* already closed */
  }
}

/** errno name of a failed open (addon error or Node fs error). */
function openErrorCode(e: unknown): string {
  if (isNativeError(e)) return e.code;
  const code = (e as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : 'EIO';
}

export class MemoryPathDir {
  private closed = false;

  private constructor(
    /** The directory as the operator named it (absolute). */
    readonly path: string,
    private readonly dirfd: number,
    private readonly dev: bigint,
    private readonly native: boolean,
  ) {}

  /**
   * Open DIR for the host's lifetime. EACCES unless it is owned by this process's effective uid
   * with mode 0700; EINVAL when it is not a directory; ENOENT when it does not exist.
   */
  static open(dir: string): MemoryPathDir {
    const abs = path.resolve(dir);
    const native = nativeAvailable();
    let fd: number;
    try {
      fd = native ? openDirectory(abs) : fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    } catch (e) {
      const code = openErrorCode(e);
      if (code === 'ENOENT') fail('ENOENT', `--allow-memory-paths: '${abs}' does not exist (create it: mkdir -m 700 ${abs})`);
      if (code === 'ENOTDIR') fail('EINVAL', `--allow-memory-paths: '${abs}' is not a directory`);
      fail('EACCES', `--allow-memory-paths: cannot open '${abs}' (${code})`);
    }
    try {
      const st = statFd(fd, native);
      const me = process.geteuid?.() ?? 0;
      if (!st.isDir) fail('EINVAL', `--allow-memory-paths: '${abs}' is not a directory`);
      if (st.uid !== me || (st.mode & 0o777) !== 0o700) {
        fail('EACCES', `--allow-memory-paths: '${abs}' must be owned by the host's user (uid ${me}) with mode 0700; it is owned by uid ${st.uid} with mode 0${(st.mode & 0o777).toString(8)} (give the host a directory of its own, e.g. mkdir -m 700 /dev/shm/vsva-ram)`);
      }
      if (!native) {
        // The fallback opens names through /proc/self/fd/<dirfd>: it must lead to this very directory.
        let via: fs.BigIntStats;
        try {
          via = fs.statSync(`/proc/self/fd/${fd}`, { bigint: true });
        } catch {
          fail('EOPNOTSUPP', '--allow-memory-paths needs the native addon or /proc (to open names relative to the directory)');
        }
        if (via.dev !== st.dev || via.ino !== st.ino) fail('EOPNOTSUPP', '--allow-memory-paths: /proc/self/fd does not lead to the opened directory');
      }
      return new MemoryPathDir(abs, fd, st.dev, native);
    } catch (e) {
      closeQuietly(fd, native);
      throw e;
    }
  }

  /**
   * The name inside DIR a region path stands for: `DIR/<name>` exactly as the operator wrote DIR
   * (no normalisation: `DIR/../x` is refused) or a bare `<name>`. EACCES otherwise.
   */
  nameOf(p: string): string {
    const prefix = this.path.endsWith('/') ? this.path : `${this.path}/`;
    const name = p.startsWith(prefix) ? p.slice(prefix.length) : p;
    if (name.length === 0 || name.includes('/') || name.includes('\0') || name === '.' || name === '..') {
      fail('EACCES', `memory file '${p}' is not a file directly inside the memory-path directory '${this.path}'`);
    }
    return name;
  }

  /**
   * Open region file `p` read-write and check the opened descriptor (see the header): ELOOP,
   * EACCES, EMLINK, EINVAL, ENOENT as documented there. `ownerUid` is the uid the file must
   * belong to (the peer's; undefined: the host's own). Returns the descriptor, which the caller
   * owns; on any failure nothing stays open.
   */
  openRegion(p: string, minSize: bigint, ownerUid: number | undefined): OpenedRegionFile {
    if (this.closed) fail('ENOTCONN', 'the memory-path directory is closed');
    const name = this.nameOf(p);
    let fd: number;
    try {
      fd = this.native
        ? openNoFollow(this.dirfd, name, true)
        : fs.openSync(`/proc/self/fd/${this.dirfd}/${name}`, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
    } catch (e) {
      const code = openErrorCode(e);
      switch (code) {
        case 'ENOENT':
          fail('ENOENT', `memory file '${name}' does not exist in '${this.path}'`);
        case 'ELOOP':
          fail('ELOOP', `memory file '${name}' in '${this.path}' is a symbolic link (refused: O_NOFOLLOW)`);
        case 'EISDIR':
        case 'ENXIO':
          fail('EINVAL', `memory file '${name}' in '${this.path}' is not a regular file (${code})`);
        default:
          fail('EACCES', `memory file '${name}' in '${this.path}' cannot be opened (${code})`);
      }
    }
    try {
      const st = statFd(fd, this.native);
      const want = ownerUid ?? process.geteuid?.() ?? 0;
      if (!st.isReg) fail('EINVAL', `memory file '${name}' is not a regular file (mode 0o${st.mode.toString(8)})`);
      if (st.dev !== this.dev) fail('EACCES', `memory file '${name}' is on another filesystem than '${this.path}' (mounted over the name)`);
      if (st.nlink !== 1) fail('EMLINK', `memory file '${name}' has ${st.nlink} links; guest RAM must have exactly one (a hard link could lead outside '${this.path}')`);
      if (st.uid !== want) fail('EACCES', `memory file '${name}' is owned by uid ${st.uid}, not by the connecting peer's uid ${want}`);
      if (st.size < minSize) fail('EINVAL', `memory file '${name}' holds ${st.size} bytes, mmap_offset + memory_size needs ${minSize}`);
      return { fd, key: `inode:${st.dev}:${st.ino}`, name };
    } catch (e) {
      closeQuietly(fd, this.native);
      if (e instanceof VsvaError) throw e;
      fail('EACCES', `memory file '${name}' cannot be inspected (${openErrorCode(e)})`);
    }
  }

  /** Close the directory's descriptor (host shutdown). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.dirfd, this.native);
  }
}
