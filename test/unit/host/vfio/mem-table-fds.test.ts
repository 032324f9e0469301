/**
 * SET_MEM_TABLE's fd form on the host side (host/vfio/mem-table.ts; docs/protocol.md §10.1):
 * checks before anything is mapped, descriptor ownership, mapped vs positioned I/O.
 */
import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { MemTableMap } from '../../../../host/vfio/mem-table.js';
import { FrontendMessages } from '../../../../vhost/messages/catalogue.js';
import { encodePayload } from '../../../../vhost/messages/codec.js';
import type { MemoryRegion } from '../../../../vhost/messages/handshake.js';
import { Seal, addSeals, closeFd, fstat, loadError, mappingCount, memfdCreate, nativeAvailable, openNoFollow } from '../../../../src/native/native.js';
import { errorCodeOf } from '../../../support/error-code.js';

const MiB = 1024 * 1024;
const region = (gpa: bigint, size: bigint, off = 0n): MemoryRegion => ({ guest_phys_addr: gpa, memory_size: size, userspace_addr: 0n, mmap_offset: off, path: '' });

/** Whether fd is open in this process. */
function open(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

describe('SET_MEM_TABLE codec: the two forms', () => {
  const codec = FrontendMessages.SET_MEM_TABLE.request;
  it('the path form needs a path in every region; the fd form one descriptor per region', () => {
    expect(errorCodeOf(() => encodePayload(codec, { regions: [region(0n, 4096n)] }))).toBe('EINVAL');
    expect(errorCodeOf(() => encodePayload(codec, { regions: [region(0n, 4096n)], fds: [3, 4] }))).toBe('EINVAL');
    expect(errorCodeOf(() => encodePayload(codec, { regions: [region(0n, 4096n)], fds: [3] }))).toBe('ok');
    // Decoding cannot know whether descriptors came: an empty path decodes, the host checks it.
    expect(errorCodeOf(() => codec.decode(encodePayload(codec, { regions: [region(0n, 4096n)], fds: [3] })))).toBe('ok');
  });
  it('SET_MEM_TABLE is the message that carries descriptors', () => {
    expect(FrontendMessages.SET_MEM_TABLE.fds).toBe(true);
    expect(Object.values(FrontendMessages).filter((m) => (m as { fds?: boolean }).fds === true).map((m) => m.name)).toEqual(['SET_MEM_TABLE']);
  });
});

describe.skipIf(!nativeAvailable())(`MemTableMap fd form${nativeAvailable() ? '' : ` (skipped: ${loadError})`}`, () => {
  const made: number[] = [];
  afterEach(() => {
    for (const fd of made.splice(0)) if (open(fd)) try { closeFd(fd); } catch { /* gone */ }
  });
  function memfd(size: number, sealed = true): number {
    const fd = memfdCreate('t', size);
    if (sealed) addSeals(fd, Seal.SHRINK | Seal.GROW);
    made.push(fd);
    return fd;
  }

  it('a sealed memfd is mapped (mapped backend); the table owns the descriptor until clear', () => {
    const mem = new HostMemory();
    const t = new MemTableMap(mem, 'vm', new Map(), {}, 'mapped');
    const fd = memfd(2 * MiB);
    const second = fs.openSync(`/proc/self/fd/${fd}`, 'r+'); // the same file, as SCM_RIGHTS delivers it twice
    const maps = mappingCount();
    expect(errorCodeOf(() => t.replace({ regions: [region(0n, BigInt(MiB)), region(0x4000_0000_0000n, BigInt(MiB), BigInt(MiB))], fds: [fd, fd] }))).toBe('EINVAL');
    expect(open(fd)).toBe(false); // refused tables close what they were given
    made.length = 0;
    const fd2 = memfd(2 * MiB);
    const fd3 = fs.openSync(`/proc/self/fd/${fd2}`, 'r+');
    fs.closeSync(second);
    t.replace({ regions: [region(0n, BigInt(MiB)), region(0x4000_0000_0000n, BigInt(MiB), BigInt(MiB))], fds: [fd2, fd3] });
    expect(t.list.map((r) => r.backing.kind)).toEqual(['mapped', 'mapped']);
    expect(mappingCount()).toBe(maps + 2);
    expect(open(fd)).toBe(true);
    t.list[0]!.backing.writeU32(16, 0xdeadbeef);
    const b = Buffer.alloc(4);
    fs.readSync(fd2, b, 0, 4, 16);
    expect(b.readUInt32LE(0)).toBe(0xdeadbeef);
    t.clear();
    expect(mappingCount()).toBe(maps);
    expect(open(fd2) || open(fd3)).toBe(false);
    made.length = 0;
    expect(mem.listRegions()).toEqual([]);
  });

  it('pread backend, unsealed memfds and plain files: positioned I/O, never mapped', () => {
    const mem = new HostMemory();
    const pread = new MemTableMap(mem, 'a', new Map(), {}, 'pread');
    pread.replace({ regions: [region(0n, BigInt(MiB))], fds: [memfd(MiB)] });
    expect(pread.list[0]!.backing.kind).toBe('file');
    const mapped = new MemTableMap(mem, 'b', new Map(), {}, 'mapped');
    mapped.replace({ regions: [region(0n, BigInt(MiB))], fds: [memfd(MiB, false)] });
    expect(mapped.list[0]!.backing.kind).toBe('file');
    const file = path.join(os.tmpdir(), `vsva-memtable-${process.pid}`);
    fs.writeFileSync(file, Buffer.alloc(MiB));
    const c = new MemTableMap(mem, 'c', new Map(), {}, 'mapped');
    c.replace({ regions: [region(0n, BigInt(MiB))], fds: [openNoFollow(-1, file, true)] });
    fs.rmSync(file);
    expect(c.list[0]!.backing.kind).toBe('file');
    for (const t of [pread, mapped, c]) t.clear();
    made.length = 0;
  });

  it('every check precedes any mapping; on failure every descriptor is closed and the old table stays', () => {
    const mem = new HostMemory();
    const t = new MemTableMap(mem, 'vm', new Map(), {}, 'mapped');
    const keep = memfd(MiB);
    t.replace({ regions: [region(0n, BigInt(MiB))], fds: [keep] });
    const dirFd = openNoFollow(-1, os.tmpdir(), false);
    const cases: [string, () => { regions: MemoryRegion[]; fds: number[] }, string][] = [
      ['too few', () => ({ regions: [region(0n, 4096n), region(0x10_0000n, 4096n)], fds: [memfd(MiB)] }), 'EINVAL'],
      ['too many', () => ({ regions: [region(0n, 4096n)], fds: [memfd(MiB), memfd(MiB)] }), 'EINVAL'],
      ['too small', () => ({ regions: [region(0n, BigInt(2 * MiB))], fds: [memfd(MiB)] }), 'EINVAL'],
      ['offset', () => ({ regions: [region(0n, BigInt(MiB), 4096n)], fds: [memfd(MiB)] }), 'EINVAL'],
      ['a directory (second of two)', () => ({ regions: [region(0n, 4096n), region(0x10_0000n, 4096n)], fds: [memfd(MiB), dirFd] }), 'EBADF'],
      ['unaligned', () => ({ regions: [region(0x800n, 4096n)], fds: [memfd(MiB)] }), 'EINVAL'],
    ];
    const maps = mappingCount();
    for (const [what, make, want] of cases) {
      const table = make();
      expect(`${what}: ${errorCodeOf(() => t.replace(table))}`).toBe(`${what}: ${want}`);
      for (const fd of table.fds) expect(open(fd)).toBe(false);
      expect(mappingCount()).toBe(maps);
      expect(t.list.length).toBe(1);
      expect(mem.listRegions().length).toBe(1);
    }
    made.length = 0;
    made.push(keep);
    t.clear();
  });

  it('a file another VM mapped is EACCES (same inode), and same() recognises a re-announcement', () => {
    const mem = new HostMemory();
    const owners = new Map<string, string>();
    const a = new MemTableMap(mem, 'a', owners, {}, 'mapped');
    const b = new MemTableMap(mem, 'b', owners, {}, 'mapped');
    const fd = memfd(MiB);
    a.replace({ regions: [region(0n, BigInt(MiB))], fds: [fd] });
    const again = memfdCreate('dup-of-other', 1); // a different file: not the same table
    made.push(again);
    expect(a.same({ regions: [region(0n, BigInt(MiB))], fds: [again] })).toBe(false);
    // The kept descriptor is the table's; a second descriptor of the same file, via /proc:
    const dup = fs.openSync(`/proc/self/fd/${fd}`, 'r+');
    made.push(dup);
    expect(fstat(dup).ino).toBe(fstat(fd).ino);
    expect(a.same({ regions: [region(0n, BigInt(MiB))], fds: [dup] })).toBe(true);
    const dup2 = fs.openSync(`/proc/self/fd/${fd}`, 'r+');
    expect(errorCodeOf(() => b.replace({ regions: [region(0n, BigInt(MiB))], fds: [dup2] }))).toBe('EACCES');
    expect(open(dup2)).toBe(false);
    a.clear();
    made.splice(made.indexOf(fd), 1);
  });
});
