/**
 * The socket file of a listening Unix socket: one listener per path, private by default
 * (docs/reliability.md §4.1).
 *
 * - A path held by a live listener (a connect(2) to it succeeds, or is refused for any reason
 *   but ECONNREFUSED) is EADDRINUSE; a path holding something that is not a socket is EEXIST.
 *   A stale socket file (connect is ECONNREFUSED: nobody listens, unix(7)) is removed, after
 *   checking that it is still the same file (device + inode) that was probed.
 * - The socket is bound under a short private name in the same directory with umask 0177 (so
 *   it never exists with a wider mode), given its mode (0600, or 0660 and its group), and then
 *   hard-linked to the path: link(2) fails with EEXIST when another listener took the path
 *   meanwhile, so two hosts starting at once cannot both win. The private name is unlinked.
 * - libuv unlinks the name it bound when the server closes (uv__pipe_close); that is the private
 *   name, already gone. `release` unlinks the path only while it still is this socket (same
 *   device + inode), so a host never removes a socket another host put there.
 * Paths too long for a private name beside them (sockaddr_un holds 108 bytes) are bound
 * directly: same mode rules, but libuv's unlink at close then applies to the path itself.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { VsvaError, fail } from '../../src/errors.js';

/** How long a liveness probe waits for connect(2) to settle (ms). */
const PROBE_TIMEOUT_MS = 1000;
/** Bytes of sun_path, NUL included (unix(7)). */
const SUN_PATH_MAX = 108;

export interface SocketFileOptions {
  /** Group id to give the socket; its mode is then 0660 (default: 0600, the owner's group). */
  gid?: number;
}

export interface SocketIdentity {
  dev: number;
  ino: number;
}

/** Whether a listener accepts on the socket file at `p`: 'live', 'stale' (ECONNREFUSED) or 'absent'. */
export function probeSocket(p: string): Promise<'live' | 'stale' | 'absent'> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: p });
    const done = (v: 'live' | 'stale' | 'absent'): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done('live'), PROBE_TIMEOUT_MS);
    s.once('connect', () => done('live'));
    s.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED' ? 'stale' : err.code === 'ENOENT' ? 'absent' : 'live'));
  });
}

function identity(st: fs.Stats): SocketIdentity {
  return { dev: st.dev, ino: st.ino };
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch {
    return null;
  }
}

/** Make the path free for a new listener: EADDRINUSE (live listener) / EEXIST (not a socket). */
export async function clearStaleSocket(p: string): Promise<void> {
  const before = lstatOrNull(p);
  if (before === null) return;
  if (!before.isSocket()) fail('EEXIST', `${p} exists and is not a socket`);
  const state = await probeSocket(p);
  if (state === 'live') fail('EADDRINUSE', `${p}: another process is listening on this socket`);
  if (state === 'absent') return;
  const now = lstatOrNull(p);
  if (now === null) return;
  if (now.dev !== before.dev || now.ino !== before.ino) fail('EADDRINUSE', `${p}: replaced by another process while it was probed`);
  fs.unlinkSync(p);
}

/** A short unused name beside `p` for the private bind, or null when none fits in sun_path. */
function privateName(p: string): string | null {
  const q = path.join(path.dirname(p), `.vsva-${randomBytes(4).toString('hex')}`);
  return Buffer.byteLength(q) < SUN_PATH_MAX ? q : null;
}

/** Call `fn` with the process umask set to `mask` (no change where umask cannot be set, e.g. in a worker). */
function withUmask<T>(mask: number, fn: () => T): T {
  let old: number | null = null;
  try {
    old = process.umask(mask);
  } catch {
    old = null;
  }
  try {
    return fn();
  } finally {
    if (old !== null) process.umask(old);
  }
}

/**
 * Bind `server` to the path `p` with the rules above; resolves to the socket file's identity.
 * EADDRINUSE: a live listener has the path; EEXIST: something else is there; EPERM: the group
 * cannot be given (not a member of it).
 */
export async function bindSocketFile(server: net.Server, p: string, opts: SocketFileOptions = {}): Promise<SocketIdentity> {
  await clearStaleSocket(p);
  const mode = opts.gid === undefined ? 0o600 : 0o660;
  const bindName = privateName(p) ?? p;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(err.code === 'EADDRINUSE' ? new VsvaError('EADDRINUSE', `${p}: another process is listening on this socket`) : err);
    };
    server.once('error', onError);
    // The bind happens inside listen() (libuv uv_pipe_bind): the umask covers it.
    withUmask(0o777 & ~mode, () =>
      server.listen(bindName, () => {
        server.off('error', onError);
        resolve();
      }),
    );
  });
  try {
    if (opts.gid !== undefined) fs.chownSync(bindName, -1, opts.gid);
    fs.chmodSync(bindName, mode);
    if (bindName !== p) {
      try {
        fs.linkSync(bindName, p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') fail('EADDRINUSE', `${p}: another process took the path while this one was binding`);
        throw e;
      }
      fs.unlinkSync(bindName);
    }
  } catch (e) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (bindName !== p) fs.rmSync(bindName, { force: true });
    if ((e as NodeJS.ErrnoException).code === 'EPERM') fail('EPERM', `${p}: cannot give the socket group ${String(opts.gid)}: ${(e as Error).message}`);
    throw e;
  }
  return identity(fs.statSync(p));
}

/** Unlink `p` only while it is still the socket `own` (same device and inode). */
export function releaseSocketFile(p: string, own: SocketIdentity): boolean {
  const st = lstatOrNull(p);
  if (st === null || st.dev !== own.dev || st.ino !== own.ino) return false;
  try {
    fs.unlinkSync(p);
    return true;
  } catch {
    return false;
  }
}
