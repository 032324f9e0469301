/**
 * A VM's memory table (SET_MEM_TABLE): guest RAM regions, each a file (or an in-process store)
 * placed in the emulated host physical address space. It answers GPA → HPA for DMA_MAP and
 * keeps the host from touching anything outside what the guest announced.
 *
 * Fd form (the message carried descriptors, as vhost-user; docs/protocol.md SET_MEM_TABLE):
 * - one descriptor per region (EINVAL otherwise); each must be a regular file or memfd (fstat;
 *   EBADF for a socket, directory, pipe, device or a descriptor fstat refuses) holding
 *   mmap_offset + memory_size bytes (EINVAL); a file another VM has mapped is EACCES;
 * - a memfd sealed against shrinking (F_SEAL_SHRINK, memfd_create(2)) is mapped MAP_SHARED when
 *   the host's memory backend is 'mapped': loads and stores, no system call per access. Any other
 *   file is read with positioned I/O — a peer that truncates a mapped file would make the host's
 *   next access SIGBUS;
 * - every check is made before anything is mapped; on any failure every received descriptor is
 *   closed. Kept descriptors are closed when the regions are released (clear, replace).
 *
 * Path form (no descriptors; docs/protocol.md "SET_MEM_TABLE"):
 * - a socket peer may use it only when the operator enabled it (`--allow-memory-paths DIR`):
 *   otherwise EPERM, nothing is opened. With it, each path must name a file directly in DIR,
 *   opened once with O_NOFOLLOW relative to DIR's descriptor and checked on the opened
 *   descriptor — regular, one link, owned by the peer's uid, large enough
 *   (host/memory/memory-path-dir.ts: EACCES, ELOOP, EMLINK, EINVAL, ENOENT);
 * - an in-process peer (in-memory transport: the host's own process) may name `inproc:` stores
 *   and files inside the memory directories (/dev/shm, VSVA_MEM_DIR, the OS temp dir), also
 *   after following symbolic links (EACCES otherwise; ENOENT when missing);
 * - guest_phys_addr, memory_size and mmap_offset must be 4 KiB aligned (EINVAL); regions must
 *   not overlap in GPA (EINVAL); the file must hold mmap_offset + memory_size bytes (EINVAL);
 *   a file another VM has mapped (or that a VM announced before a host restart and has not
 *   reclaimed yet) is EACCES.
 * - Opening is all-or-nothing: a failure closes what was opened and changes nothing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fail } from '../../src/errors.js';
import { FileBacking, openBacking, type MemoryBacking } from '../../src/memory/backing.js';
import { MappedBacking } from '../../src/memory/mapped-backing.js';
import type { MemoryBackend } from '../../src/memory/memory-backend.js';
import { Seal, closeFd, fstat, getSeals, isNativeError } from '../../src/native/native.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import type { MemTable, MemoryRegion } from '../../vhost/messages/handshake.js';
import type { HostMemory, HostRegion } from '../memory/host-memory.js';
import type { MemoryPathDir } from '../memory/memory-path-dir.js';

/** Directories an in-process peer's SET_MEM_TABLE paths may name. */
export function memoryDirs(): string[] {
  const dirs = ['/dev/shm', os.tmpdir()];
  if (process.env.VSVA_MEM_DIR) dirs.push(process.env.VSVA_MEM_DIR);
  return dirs;
}

function inside(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/**
 * The real path of a region file, confined to `dirs`: EACCES when the path — as written, or
 * after following symbolic links (a link in /dev/shm to /etc/… is refused) — leaves them;
 * ENOENT when it does not exist. `inproc:` names pass unchanged.
 */
export function confinePath(p: string, dirs: string[]): string {
  if (p.startsWith('inproc:')) return p;
  const lexical = path.resolve(p);
  if (!dirs.some((d) => inside(path.resolve(d), lexical))) fail('EACCES', `memory file '${p}' is outside the memory directories`);
  let real: string;
  try {
    real = fs.realpathSync(lexical);
  } catch {
    fail('ENOENT', `memory file '${p}' does not exist`);
  }
  const ok = dirs.some((d) => {
    try {
      return inside(fs.realpathSync(d), real);
    } catch {
      return false;
    }
  });
  if (!ok) fail('EACCES', `memory file '${p}' resolves to '${real}', outside the memory directories`);
  return real;
}

/** A window of a backing: bytes [offset, offset + size) of the store (mmap_offset). */
class WindowBacking implements MemoryBacking {
  readonly kind: MemoryBacking['kind'];
  readonly path: string;
  readonly buffer: Buffer | undefined;

  constructor(private readonly inner: MemoryBacking, private readonly offset: number, readonly size: number) {
    this.kind = inner.kind;
    this.path = inner.path;
    this.buffer = inner.buffer?.subarray(offset, offset + size);
  }
  read(o: number, dst: Uint8Array): void {
    this.inner.read(this.offset + o, dst);
  }
  write(o: number, src: Uint8Array): void {
    this.inner.write(this.offset + o, src);
  }
  readU32(o: number): number {
    return this.inner.readU32(this.offset + o);
  }
  writeU32(o: number, v: number): void {
    this.inner.writeU32(this.offset + o, v);
  }
  readU64(o: number): bigint {
    return this.inner.readU64(this.offset + o);
  }
  writeU64(o: number, v: bigint): void {
    this.inner.writeU64(this.offset + o, v);
  }
  close(): void {
    this.inner.close();
  }
}

export interface MappedRegion {
  readonly gpa: number;
  readonly size: number;
  readonly hpa: number;
  readonly path: string;
  /** The path after following symbolic links (what the ownership registry is keyed by). */
  readonly realPath: string;
  readonly mmapOffset: number;
  readonly host: HostRegion;
  readonly backing: MemoryBacking;
}

/** What the fd form's checks learned about one received descriptor. */
interface FdInfo {
  fd: number;
  /** Owner-registry key: the file's identity (device and inode), not a path. */
  key: string;
  /** A memfd sealed against shrinking: safe to map. */
  sealed: boolean;
}

/** Who sends SET_MEM_TABLE on the VM's connection. */
export interface MemoryPeer {
  /** An in-memory connection from the host's own process (not a socket peer). */
  readonly inProcess: boolean;
  /** The socket peer's uid (SO_PEERCRED), when known. */
  readonly uid: number | undefined;
}

/** What the path form may name (see the header). */
export interface MemoryPathPolicy {
  /** `--allow-memory-paths DIR`: the one directory socket peers may name; absent: descriptors only. */
  readonly dir?: MemoryPathDir;
  /** Directories an in-process peer's paths are confined to (default memoryDirs()). */
  readonly inProcessDirs?: readonly string[];
  /** The peer sending SET_MEM_TABLE now (default: in-process). */
  peer?(): MemoryPeer;
}

const IN_PROCESS_PEER: MemoryPeer = { inProcess: true, uid: undefined };

/** How the host reaches guest RAM received as descriptors: mapped (sealed memfds) or positioned I/O. */
export type MemoryAccess = MemoryBackend;

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      /* already closed */
    }
  }
}

function toNum(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail('EINVAL', `${what} 0x${v.toString(16)} is beyond the emulated address space`);
  return Number(v);
}

/**
 * Which VM has each memory file mapped (file identity `inode:<dev>:<ino>`, or an in-process
 * peer's real path → VM name), shared by a host's VMs; a restarted host puts the files of the
 * VMs it expects back here first (host/server/vm-reservations.ts).
 */
export type MemoryFileOwners = Map<string, string>;

/** Registry key of the file behind a descriptor (device and inode). */
function fileKey(fd: number): string {
  const st = fstat(fd);
  return `inode:${st.dev}:${st.ino}`;
}

export class MemTableMap {
  private regions: MappedRegion[] = [];

  constructor(
    private readonly mem: HostMemory,
    private readonly vmName: string,
    /** A file one VM mapped is refused to every other VM (EACCES): no VM reaches another's RAM. */
    private readonly owners: MemoryFileOwners = new Map(),
    /** What the path form may name, and who the peer is. */
    private readonly paths: MemoryPathPolicy = {},
    /** Fd form: map sealed memfds ('mapped') or use positioned I/O for everything ('pread'). */
    private readonly access: MemoryAccess = 'pread',
  ) {}

  get list(): readonly MappedRegion[] {
    return this.regions;
  }

  get totalBytes(): number {
    return this.regions.reduce((n, r) => n + r.size, 0);
  }

  /**
   * True when `t` describes exactly the regions already mapped (a re-announcement): the same
   * paths, or in the fd form descriptors of the same files. Never takes the descriptors.
   */
  same(t: MemTable): boolean {
    if (t.regions.length !== this.regions.length) return false;
    const fds = t.fds ?? [];
    if (fds.length !== 0 && fds.length !== t.regions.length) return false;
    return t.regions.every((r, i) => {
      const m = this.regions[i]!;
      if (BigInt(m.gpa) !== r.guest_phys_addr || BigInt(m.size) !== r.memory_size || BigInt(m.mmapOffset) !== r.mmap_offset) return false;
      if (fds.length === 0) return m.path === r.path;
      try {
        return fileKey(fds[i]!) === m.realPath;
      } catch {
        return false;
      }
    });
  }

  /**
   * The fd form's checks, none of which maps anything: one descriptor per region (EINVAL), each
   * a regular file or memfd (EBADF) large enough for its region (EINVAL), none mapped by another
   * VM (EACCES). Does not take the descriptors.
   */
  private inspectFds(t: MemTable, fds: readonly number[]): FdInfo[] {
    if (fds.length !== t.regions.length) fail('EINVAL', `SET_MEM_TABLE: ${fds.length} file descriptors for ${t.regions.length} regions`);
    // Received descriptors are distinct (SCM_RIGHTS installs each anew); one number twice would be closed twice.
    if (new Set(fds).size !== fds.length) fail('EINVAL', 'SET_MEM_TABLE: the same descriptor number is given for two regions');
    return t.regions.map((r, i) => {
      const fd = fds[i]!;
      let st: ReturnType<typeof fstat>;
      try {
        st = fstat(fd);
      } catch (e) {
        fail('EBADF', `SET_MEM_TABLE region ${i}: descriptor cannot be inspected (${isNativeError(e) ? e.code : String(e)})`);
      }
      if (!st.isReg) fail('EBADF', `SET_MEM_TABLE region ${i}: descriptor is not a regular file or memfd (mode 0o${st.mode.toString(8)})`);
      if (st.size < r.mmap_offset + r.memory_size) {
        fail('EINVAL', `SET_MEM_TABLE region ${i}: file holds ${st.size} bytes, mmap_offset + memory_size needs ${r.mmap_offset + r.memory_size}`);
      }
      const key = `inode:${st.dev}:${st.ino}`;
      const owner = this.owners.get(key);
      if (owner !== undefined && owner !== this.vmName) fail('EACCES', `SET_MEM_TABLE region ${i}: the file is mapped by another VM`);
      let sealed = false;
      try {
        sealed = (getSeals(fd) & Seal.SHRINK) !== 0;
      } catch {
        sealed = false; // not a memfd: files without seals are never mapped
      }
      return { fd, key, sealed };
    });
  }

  /** Check `t` and open its files; throws without changing anything. */
  static validate(t: MemTable): void {
    const sorted = [...t.regions].sort((a, b) => (a.guest_phys_addr < b.guest_phys_addr ? -1 : 1));
    for (const [i, r] of t.regions.entries()) {
      if (r.guest_phys_addr % PAGE_SIZE !== 0n || r.memory_size % PAGE_SIZE !== 0n || r.mmap_offset % PAGE_SIZE !== 0n) {
        fail('EINVAL', `SET_MEM_TABLE region ${i}: guest_phys_addr, memory_size and mmap_offset must be 4 KiB aligned`);
      }
    }
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1]!;
      const b = sorted[i]!;
      if (a.guest_phys_addr + a.memory_size > b.guest_phys_addr) fail('EINVAL', `SET_MEM_TABLE: regions at 0x${a.guest_phys_addr.toString(16)} and 0x${b.guest_phys_addr.toString(16)} overlap`);
    }
  }

  /** The peer sending SET_MEM_TABLE now. */
  private peer(): MemoryPeer {
    return this.paths.peer?.() ?? IN_PROCESS_PEER;
  }

  /**
   * The path form's gate for a socket peer: EPERM unless `--allow-memory-paths` is set (then
   * each path must name a file directly in DIR: EACCES). `inproc:` names are this process's
   * in-process stores, never files.
   */
  private checkSocketPaths(t: MemTable): MemoryPathDir | undefined {
    const files = t.regions.filter((r) => !r.path.startsWith('inproc:'));
    if (files.length === 0) return undefined;
    const dir = this.paths.dir;
    if (dir === undefined) {
      fail('EPERM', 'SET_MEM_TABLE: this host takes guest RAM from a socket peer only as file descriptors (SCM_RIGHTS); path-form regions need the host started with --allow-memory-paths DIR');
    }
    for (const r of files) dir.nameOf(r.path);
    return dir;
  }

  /**
   * Check `t`: alignment and overlap (EINVAL); fd form: the descriptors (inspectFds); path form
   * from a socket peer: allowed at all (EPERM), naming files in the memory-path directory
   * (EACCES) that pass the opened-file checks (memory-path-dir.ts); path form from an
   * in-process peer: each path confined to the memory directories (EACCES) and existing
   * (ENOENT). No file another VM has mapped (EACCES).
   */
  check(t: MemTable): void {
    MemTableMap.validate(t);
    for (const r of t.regions) {
      toNum(r.memory_size, 'memory_size');
      toNum(r.mmap_offset, 'mmap_offset');
      toNum(r.guest_phys_addr + r.memory_size, 'guest_phys_addr + memory_size');
    }
    if ((t.fds?.length ?? 0) > 0) {
      this.inspectFds(t, t.fds!);
      return;
    }
    for (const [i, r] of t.regions.entries()) {
      if (r.path.length === 0) fail('EINVAL', `SET_MEM_TABLE region ${i}: path is empty and no file descriptor came with the message`);
    }
    const peer = this.peer();
    if (!peer.inProcess) {
      // An early answer only (before the caller's other checks): `replace` opens and checks
      // the files again, and what it opened is what gets mapped.
      const dir = this.checkSocketPaths(t);
      for (const r of t.regions) {
        if (r.path.startsWith('inproc:')) continue;
        const size = r.mmap_offset + r.memory_size;
        const { inner } = this.openPath(r, Number(size), dir, peer);
        inner.close();
      }
      return;
    }
    for (const r of t.regions) {
      const real = confinePath(r.path, [...(this.paths.inProcessDirs ?? memoryDirs())]);
      const owner = this.owners.get(real);
      if (owner !== undefined && owner !== this.vmName) fail('EACCES', `memory file '${r.path}' is mapped by another VM`);
    }
  }

  /**
   * Open one path-form region's store: an `inproc:` store; for a socket peer the file in the
   * memory-path directory, checked on its opened descriptor; for an in-process peer the
   * confined path. Returns the store and its owner-registry key.
   */
  private openPath(r: MemoryRegion, size: number, dir: MemoryPathDir | undefined, peer: MemoryPeer): { inner: MemoryBacking; key: string } {
    if (r.path.startsWith('inproc:') || peer.inProcess) {
      const real = confinePath(r.path, [...(this.paths.inProcessDirs ?? memoryDirs())]);
      const owner = this.owners.get(real);
      if (owner !== undefined && owner !== this.vmName) fail('EACCES', `memory file '${r.path}' is mapped by another VM`);
      return { inner: openBacking(real, size), key: real };
    }
    const file = dir!.openRegion(r.path, BigInt(size), peer.uid);
    const owner = this.owners.get(file.key);
    if (owner !== undefined && owner !== this.vmName) {
      fs.closeSync(file.fd); // (not closeFd: without the native addon the fd came from fs)
      fail('EACCES', `memory file '${file.name}' belongs to another VM`);
    }
    return { inner: FileBacking.fromFd(file.fd, size, `${this.vmName} ${file.name}`), key: file.key };
  }

  /**
   * Replace the table with `t` (all-or-nothing). The old regions are unmapped afterwards. In the
   * fd form this takes over `t.fds`: kept ones are closed when their region is released, the
   * rest (and all of them on failure) before it returns.
   */
  replace(t: MemTable): void {
    const fds = t.fds ?? [];
    if (fds.length > 0) {
      this.replaceFromFds(t, fds);
      return;
    }
    MemTableMap.validate(t);
    const peer = this.peer();
    const dir = peer.inProcess ? undefined : this.checkSocketPaths(t);
    const opened: { r: MemoryRegion; backing: MemoryBacking; inner: MemoryBacking }[] = [];
    const keys: string[] = [];
    const placed: MappedRegion[] = [];
    try {
      for (const r of t.regions) {
        const size = toNum(r.memory_size, 'memory_size');
        const off = toNum(r.mmap_offset, 'mmap_offset');
        toNum(r.guest_phys_addr + r.memory_size, 'guest_phys_addr + memory_size');
        const { inner, key } = this.openPath(r, off + size, dir, peer);
        keys.push(key);
        const backing = off === 0 && inner.size === size ? inner : new WindowBacking(inner, off, size);
        opened.push({ r, backing, inner });
      }
      for (const { r, backing } of opened) {
        const size = backing.size;
        const hpa = this.mem.findFree(size);
        const host = this.mem.addRegion(`${this.vmName} ram@0x${r.guest_phys_addr.toString(16)}`, hpa, backing, size);
        placed.push({ gpa: Number(r.guest_phys_addr), size, hpa, path: r.path, realPath: keys[placed.length]!, mmapOffset: Number(r.mmap_offset), host, backing });
      }
    } catch (e) {
      for (const p of placed) this.mem.removeRegion(p.host);
      for (const o of opened) if (o.inner.kind !== 'inproc') o.inner.close();
      throw e;
    }
    this.install(placed);
  }

  private install(placed: MappedRegion[]): void {
    const old = this.regions;
    this.regions = placed.sort((a, b) => a.gpa - b.gpa);
    this.release(old);
    for (const r of this.regions) this.owners.set(r.realPath, this.vmName);
  }

  /** The fd form of replace: check everything, then map (or open for positioned I/O), then place. */
  private replaceFromFds(t: MemTable, fds: readonly number[]): void {
    let infos: FdInfo[];
    try {
      this.check(t);
      infos = this.inspectFds(t, fds);
    } catch (e) {
      closeAll(fds);
      throw e;
    }
    const backings: MemoryBacking[] = [];
    const placed: MappedRegion[] = [];
    let next = 0; // descriptors from here on are not owned by a backing yet
    try {
      for (const [i, r] of t.regions.entries()) {
        const size = Number(r.memory_size);
        const off = Number(r.mmap_offset);
        const info = infos[i]!;
        const label = `${this.vmName} region ${i} (fd)`;
        let b: MemoryBacking;
        if (this.access === 'mapped' && info.sealed) {
          b = MappedBacking.fromFd(info.fd, size, off, label);
        } else {
          const whole = FileBacking.fromFd(info.fd, off + size, label);
          b = off === 0 ? whole : new WindowBacking(whole, off, size);
        }
        backings.push(b);
        next = i + 1;
      }
      for (const [i, r] of t.regions.entries()) {
        const backing = backings[i]!;
        const size = backing.size;
        const hpa = this.mem.findFree(size);
        const host = this.mem.addRegion(`${this.vmName} ram@0x${r.guest_phys_addr.toString(16)}`, hpa, backing, size);
        placed.push({ gpa: Number(r.guest_phys_addr), size, hpa, path: r.path, realPath: infos[i]!.key, mmapOffset: Number(r.mmap_offset), host, backing });
      }
    } catch (e) {
      for (const p of placed) this.mem.removeRegion(p.host);
      for (const b of backings) b.close();
      closeAll(fds.slice(next));
      throw e;
    }
    this.install(placed);
  }

  /**
   * HPA of [gpa, gpa + size): the range must lie inside one region (EFAULT otherwise — the
   * guest named memory it did not announce).
   */
  gpaToHpa(gpa: bigint, size: bigint): number {
    for (const r of this.regions) {
      const start = BigInt(r.gpa);
      if (gpa >= start && gpa + size <= start + BigInt(r.size)) return r.hpa + Number(gpa - start);
    }
    fail('EFAULT', `GPA range 0x${gpa.toString(16)}+0x${size.toString(16)} is not inside ${this.vmName}'s memory table`);
  }

  /** The GPA of an HPA inside this VM's RAM, or undefined. */
  hpaToGpa(hpa: number): number | undefined {
    for (const r of this.regions) if (hpa >= r.hpa && hpa < r.hpa + r.size) return r.gpa + (hpa - r.hpa);
    return undefined;
  }

  /** Unmap every region and close the files (in-process stores belong to their creator). */
  clear(): void {
    const old = this.regions;
    this.regions = [];
    this.release(old);
  }

  private release(rs: MappedRegion[]): void {
    for (const r of rs) {
      this.mem.removeRegion(r.host);
      if (r.backing.kind !== 'inproc') r.backing.close();
      if (this.owners.get(r.realPath) === this.vmName) this.owners.delete(r.realPath);
    }
  }
}
