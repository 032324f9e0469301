/**
 * Typed access to vsva's native addon (native/vsva_native.c): memfd_create, MAP_SHARED mappings
 * as ArrayBuffers, and Unix stream socket I/O carrying file descriptors as SCM_RIGHTS ancillary
 * data (unix(7)) — what vhost-user's SET_MEM_TABLE needs (docs/protocol.md). Node has none of
 * these. The addon is our own small C file, not a package: mmap-io needs CXXFLAGS and node-gyp
 * (which downloads headers), usocket and shm-typed-array each cover only half.
 *
 * Loading never throws. When native/build/vsva_native.node is missing (no compiler at install
 * time, not Linux) or VSVA_NATIVE=off, `nativeAvailable()` is false, `loadError` says why, the
 * wrappers throw EOPNOTSUPP, and callers fall back to positioned I/O after one
 * `warnNativeUnavailable()`. Build it with `node scripts/build-native.mjs` (the install script).
 *
 * Errors from the addon are plain Errors with `code` = errno name ('EBADF'), `errno` (positive
 * Linux value) and `syscall` — see `NativeError`; argument errors are TypeErrors with code EINVAL.
 *
 * Sockets shared with libuv (`socketFd(socket)` is the fd of a net.Socket):
 *  - libuv allows one watcher per fd. Start a reader only on a socket libuv does not read: accept
 *    with `pauseOnConnect: true` and never resume it or add a 'data' listener (libuv would then
 *    watch the fd too). startReader on an fd libuv already watches fails with EEXIST.
 *  - On an fd with a reader, write with `sendFds` (fds may be []), not `socket.write`: a write
 *    that would block makes libuv watch the fd for POLLOUT, and the reader's watcher takes its
 *    events. Mixing `sendFds` with `socket.write` keeps order only while
 *    `socket.writableLength === 0`.
 *  - Close order: `stopReader(h)` (stops polling synchronously), then `socket.destroy()`. Never
 *    `closeFd()` an fd a net.Socket owns: libuv closes it again later, by then possibly another
 *    file's descriptor.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VsvaError } from '../errors.js';
import { childLogger } from '../log.js';

/** fstat(2) of a descriptor; 64-bit fields are bigint. */
export interface NativeStat {
  readonly mode: number;
  readonly size: bigint;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly dev: bigint;
  readonly ino: bigint;
  readonly isReg: boolean;
  readonly isDir: boolean;
  readonly isSock: boolean;
  readonly isFifo: boolean;
  readonly isChr: boolean;
}

/** What the addon throws for a failed system call. */
export interface NativeError extends Error {
  /** errno name, e.g. 'EBADF' (TypeErrors for bad arguments carry 'EINVAL'). */
  readonly code: string;
  /** Positive Linux errno (absent on argument TypeErrors). */
  readonly errno?: number;
  /** The failing call, e.g. 'sendmsg'. */
  readonly syscall?: string;
  /** sendFds only: bytes already sent before the failure (more than 0 breaks the stream). */
  readonly bytesSent?: number;
}

/**
 * One read of a reader: data and the fds that came with it, or the end. EOF is (null, [], 0);
 * an error is (null, [], errno) — after either the reader has stopped itself.
 *
 * Ownership: every fd in `fds` belongs to the callback from the moment it is called. Close each
 * one you do not keep (also when you reject the data), or it leaks. The fds arrive with the read
 * holding the first byte of the sendmsg that carried them, and one read never carries the fds of
 * two sends (Linux net/unix/af_unix.c, unix_stream_read_generic). They are close-on-exec.
 */
export type ReadCallback = (data: Buffer | null, fds: number[], errno: number) => void;

declare const readerBrand: unique symbol;
/** Opaque handle of a running reader. */
export interface ReaderHandle {
  readonly [readerBrand]: true;
}

/** memfd seal bits (fcntl(2), F_ADD_SEALS; linux/fcntl.h). */
export const Seal = { SEAL: 0x1, SHRINK: 0x2, GROW: 0x4, WRITE: 0x8 } as const;
/** SCM_MAX_FD (include/net/scm.h): most fds in one message. */
export const MAX_FDS = 253;

interface Addon {
  memfdCreate(name: string, size: number | bigint): number;
  openNoFollow(dirfd: number, path: string, writable: boolean): number;
  openDirectory(path: string): number;
  peerCredentials(sockfd: number): PeerCredentials;
  fstat(fd: number): NativeStat;
  getSeals(fd: number): number;
  addSeals(fd: number, seals: number): void;
  close(fd: number): void;
  mmap(fd: number, size: number | bigint, offset: number | bigint, writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
  mappingCount(): number;
  sendFds(sockfd: number, data: Uint8Array, fds: readonly number[], timeoutMs?: number): number;
  startReader(sockfd: number, onRead: ReadCallback): object;
  stopReader(handle: object): boolean;
  setTimerSlack(ns: number): number;
  getTimerSlack(): number;
  readonly pageSize: number;
}

/** The directory holding vsva's package.json, from src/native/ or a compiled dist/ copy alike. */
export function findPackageRoot(start: string): string | undefined {
  for (let dir = start; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    try {
      if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'vsva') return dir;
    } catch {
      /* no package.json here, or not ours */
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

function load(): { addon?: Addon; error?: string } {
  if (process.env.VSVA_NATIVE === 'off') return { error: 'disabled by VSVA_NATIVE=off' };
  if (process.platform !== 'linux') return { error: `the native addon is Linux-only (this is ${process.platform})` };
  const root = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));
  if (root === undefined) return { error: 'package root (package.json named vsva) not found' };
  const file = path.join(root, 'native', 'build', 'vsva_native.node');
  if (!fs.existsSync(file)) return { error: `${file} is not built (run: node scripts/build-native.mjs)` };
  try {
    return { addon: createRequire(import.meta.url)(file) as Addon };
  } catch (e) {
    return { error: `loading ${file} failed: ${(e as Error).message}` };
  }
}

const loaded = load();
const addon = loaded.addon;
/** Why the addon is unavailable; undefined when it loaded. */
export const loadError: string | undefined = loaded.error;

export function nativeAvailable(): boolean {
  return addon !== undefined;
}

let warned = false;
/** Logs the one warning that vsva runs without the addon (later calls are silent). */
export function warnNativeUnavailable(): void {
  if (addon !== undefined || warned) return;
  warned = true;
  childLogger('native').warn({ reason: loadError }, 'native addon unavailable: guest RAM uses positioned I/O, not shared mappings');
}

function need(): Addon {
  if (addon === undefined) throw new VsvaError('EOPNOTSUPP', `native addon unavailable: ${loadError}`);
  return addon;
}

/**
 * Set the calling thread's timer slack (prctl(2) PR_SET_TIMERSLACK, ns in 1..2^31−1): how late the
 * kernel may end its timed sleeps (default 50 µs). Returns the previous slack.
 */
export function setTimerSlack(ns: number): number {
  return need().setTimerSlack(ns);
}

/** The calling thread's timer slack in ns (PR_GET_TIMERSLACK). */
export function getTimerSlack(): number {
  return need().getTimerSlack();
}

/** Page size; mmap offsets must be multiples of it. */
export function pageSize(): number {
  return need().pageSize;
}

/** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING) sized with ftruncate; returns the fd. */
export function memfdCreate(name: string, size: number | bigint): number {
  return need().memfdCreate(name, size);
}

/**
 * openat(dirfd, path, O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), read-write or read-only;
 * dirfd -1 is the working directory. O_NOFOLLOW refuses a symbolic link in the last component
 * (ELOOP); O_NONBLOCK keeps a FIFO from blocking the open (fifo(7)).
 */
export function openNoFollow(dirfd: number, filePath: string, writable: boolean): number {
  return need().openNoFollow(dirfd, filePath, writable);
}

/**
 * open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC): a handle to the directory itself for
 * `openNoFollow(dirfd, name, …)` — later renames or a symbolic link put in its place do not
 * change what it refers to (openat(2)). ENOTDIR when the path is not a directory.
 */
export function openDirectory(dirPath: string): number {
  return need().openDirectory(dirPath);
}

export function fstat(fd: number): NativeStat {
  return need().fstat(fd);
}

/** Credentials of a Unix socket's peer. */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** getsockopt(SO_PEERCRED) on a connected Unix socket's fd (unix(7)): who connected. */
export function peerCredentials(sockfd: number): PeerCredentials {
  return need().peerCredentials(sockfd);
}

/** F_GET_SEALS mask (see `Seal`); EINVAL for files that cannot carry seals. */
export function getSeals(fd: number): number {
  return need().getSeals(fd);
}

/** F_ADD_SEALS; sealing SHRINK keeps a peer from truncating RAM the other side has mapped. */
export function addSeals(fd: number, seals: number): void {
  need().addSeals(fd, seals);
}

/** close(2) an fd this process owns (not one a net.Socket owns). */
export function closeFd(fd: number): void {
  need().close(fd);
}

/**
 * MAP_SHARED mapping of [offset, offset+size) of fd as an ArrayBuffer: loads and stores reach the
 * file directly, visible to every other mapping (any process) at once. The range must lie inside
 * the file (EINVAL), offset a multiple of pageSize(). Unmapped by `munmap` or, failing that, when
 * the ArrayBuffer is garbage collected. Do not transfer it (postMessage/structuredClone): the
 * copy can then only be unmapped by garbage collection.
 */
export function mmap(fd: number, size: number | bigint, offset: number | bigint, writable: boolean): ArrayBuffer {
  return need().mmap(fd, size, offset, writable);
}

/** Detaches then unmaps (byteLength becomes 0); true if this call unmapped, false if already done. */
export function munmap(buffer: ArrayBuffer): boolean {
  return need().munmap(buffer);
}

/** Live mappings made by mmap() in this process (0 without the addon). */
export function mappingCount(): number {
  return addon === undefined ? 0 : addon.mappingCount();
}

/**
 * sendmsg all of `data` on a connected Unix stream socket, `fds` attached as SCM_RIGHTS to its
 * first bytes. Waits in poll() while the socket is full, blocking the thread up to timeoutMs
 * (ETIMEDOUT): for control frames such as SET_MEM_TABLE, not bulk data. Returns bytes sent.
 */
export function sendFds(sockfd: number, data: Uint8Array, fds: readonly number[] = [], timeoutMs = 2000): number {
  return need().sendFds(sockfd, data, fds, timeoutMs);
}

/** Reads the socket on the event loop (uv_poll_t), calling onRead per read of up to 64 KiB. */
export function startReader(sockfd: number, onRead: ReadCallback): ReaderHandle {
  return need().startReader(sockfd, onRead) as ReaderHandle;
}

/** Stops and closes a reader; true if this call stopped it (false twice, after EOF or error). */
export function stopReader(handle: ReaderHandle): boolean {
  return need().stopReader(handle);
}

/** The fd under a connected net.Socket (libuv still owns it: see the header). */
export function socketFd(socket: object): number {
  const fd = ((socket as { _handle?: { fd?: unknown } })._handle)?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new VsvaError('ENOTCONN', 'socket has no open file descriptor');
  return fd;
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

/** errno name for a reader's errno ('ECONNRESET'); 'E<number>' when unknown. */
export function errnoCode(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** True when e is an error thrown by the addon (optionally with this errno name). */
export function isNativeError(e: unknown, code?: string): e is NativeError {
  return e instanceof Error && typeof (e as NativeError).code === 'string' && (code === undefined || (e as NativeError).code === code);
}
