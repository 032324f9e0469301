/**
 * A VM's memory table (SET_MEM_TABLE): guest RAM regions, each a file (or an in-process store)
 * placed in the emulated host physical address space. It answers GPA → HPA for DMA_MAP and
 * keeps the host from touching anything outside what the guest announced.
 *
 * Rules (docs/protocol.md §5.1, host service):
 * - Region files must lie inside the memory directories (/dev/shm, VSVA_MEM_DIR, the OS temp
 *   dir), also after following symbolic links — anything else is EACCES; `inproc:` stores are
 *   allowed (in-process mode).
 * - guest_phys_addr, memory_size and mmap_offset must be 4 KiB aligned (EINVAL); regions must
 *   not overlap in GPA (EINVAL); the file must hold mmap_offset + memory_size bytes (EINVAL);
 *   a missing file is ENOENT.
 * - Opening is all-or-nothing: a failure closes what was opened and changes nothing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fail } from '../../src/errors.js';
import { openBacking, type MemoryBacking } from '../../src/memory/backing.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import type { MemTable, MemoryRegion } from '../../vhost/messages/handshake.js';
import type { HostMemory, HostRegion } from '../memory/host-memory.js';

/** Directories SET_MEM_TABLE paths may name. */
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
  readonly kind: 'file' | 'inproc';
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

function toNum(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail('EINVAL', `${what} 0x${v.toString(16)} is beyond the emulated address space`);
  return Number(v);
}

/** Which VM has each memory file mapped (real path → VM name), shared by a host's VMs. */
export type MemoryFileOwners = Map<string, string>;

export class MemTableMap {
  private regions: MappedRegion[] = [];

  constructor(
    private readonly mem: HostMemory,
    private readonly vmName: string,
    /** A file one VM mapped is refused to every other VM (EACCES): no VM reaches another's RAM. */
    private readonly owners: MemoryFileOwners = new Map(),
    private readonly allowedDirs: string[] = memoryDirs(),
  ) {}

  get list(): readonly MappedRegion[] {
    return this.regions;
  }

  get totalBytes(): number {
    return this.regions.reduce((n, r) => n + r.size, 0);
  }

  /** True when `t` describes exactly the regions already mapped (a re-announcement). */
  same(t: MemTable): boolean {
    if (t.regions.length !== this.regions.length) return false;
    return t.regions.every((r, i) => {
      const m = this.regions[i]!;
      return BigInt(m.gpa) === r.guest_phys_addr && BigInt(m.size) === r.memory_size && m.path === r.path && BigInt(m.mmapOffset) === r.mmap_offset;
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

  /**
   * Check `t` without opening anything: alignment and overlap (EINVAL), each path confined to
   * the memory directories (EACCES) and existing (ENOENT), no file another VM has mapped (EACCES).
   */
  check(t: MemTable): void {
    MemTableMap.validate(t);
    for (const r of t.regions) {
      const real = confinePath(r.path, this.allowedDirs);
      const owner = this.owners.get(real);
      if (owner !== undefined && owner !== this.vmName) fail('EACCES', `memory file '${r.path}' is mapped by another VM`);
    }
  }

  /** Replace the table with `t` (all-or-nothing). The old regions are unmapped afterwards. */
  replace(t: MemTable): void {
    MemTableMap.validate(t);
    const opened: { r: MemoryRegion; backing: MemoryBacking; inner: MemoryBacking }[] = [];
    const reals: string[] = [];
    const placed: MappedRegion[] = [];
    try {
      for (const r of t.regions) {
        const size = toNum(r.memory_size, 'memory_size');
        const off = toNum(r.mmap_offset, 'mmap_offset');
        toNum(r.guest_phys_addr + r.memory_size, 'guest_phys_addr + memory_size');
        const real = confinePath(r.path, this.allowedDirs);
        const owner = this.owners.get(real);
        if (owner !== undefined && owner !== this.vmName) fail('EACCES', `memory file '${r.path}' is mapped by another VM`);
        const inner = openBacking(real, off + size);
        reals.push(real);
        const backing = off === 0 && inner.size === size ? inner : new WindowBacking(inner, off, size);
        opened.push({ r, backing, inner });
      }
      for (const { r, backing } of opened) {
        const size = backing.size;
        const hpa = this.mem.findFree(size);
        const host = this.mem.addRegion(`${this.vmName} ram@0x${r.guest_phys_addr.toString(16)}`, hpa, backing, size);
        placed.push({ gpa: Number(r.guest_phys_addr), size, hpa, path: r.path, realPath: reals[placed.length]!, mmapOffset: Number(r.mmap_offset), host, backing });
      }
    } catch (e) {
      for (const p of placed) this.mem.removeRegion(p.host);
      for (const o of opened) if (o.inner.kind === 'file') o.inner.close();
      throw e;
    }
    const old = this.regions;
    this.regions = placed.sort((a, b) => a.gpa - b.gpa);
    this.release(old);
    for (const r of this.regions) this.owners.set(r.realPath, this.vmName);
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
      if (r.backing.kind === 'file') r.backing.close();
      if (this.owners.get(r.realPath) === this.vmName) this.owners.delete(r.realPath);
    }
  }
}
