/**
 * The path form of SET_MEM_TABLE as the memory table applies it (host/vfio/mem-table.ts): a
 * socket peer without --allow-memory-paths is EPERM with nothing opened; with it, files come
 * from the memory-path directory only, keyed by inode, and another VM's file is EACCES; an
 * in-process peer keeps the memory directories; `inproc:` stores stay nameable.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { MemoryPathDir } from '../../../../host/memory/memory-path-dir.js';
import { MemTableMap, type MemoryPeer } from '../../../../host/vfio/mem-table.js';
import { InProcessBacking } from '../../../../src/memory/backing.js';
import { expectedErrnoOf } from '../../../support/error-code.js';

const SOCKET_PEER: MemoryPeer = { inProcess: false, uid: process.geteuid?.() ?? 0 };
const region = (p: string, size = 0x2000n) => ({ guest_phys_addr: 0n, memory_size: size, userspace_addr: 0n, mmap_offset: 0n, path: p });
let dir: string;
let fds: number;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-mtp-'));
  fs.writeFileSync(path.join(dir, 'ram'), Buffer.alloc(0x2000));
  fds = fs.readdirSync('/proc/self/fd').length;
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('MemTableMap path form', () => {
  it('socket peer without a memory-path directory: EPERM on check and replace, nothing opened or mapped', () => {
    const mem = new HostMemory();
    const t = new MemTableMap(mem, 'vm', new Map(), { peer: () => SOCKET_PEER });
    const tbl = { regions: [region(path.join(dir, 'ram'))] };
    expect(expectedErrnoOf(() => t.check(tbl))).toBe('EPERM');
    expect(expectedErrnoOf(() => t.replace(tbl))).toBe('EPERM');
    expect(t.list).toHaveLength(0);
    expect(mem.listRegions()).toHaveLength(0);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
    // In-process stores are not files: still nameable.
    const b = new InProcessBacking(0x2000);
    try {
      t.replace({ regions: [region(b.path)] });
      expect(t.list).toHaveLength(1);
    } finally {
      t.clear();
      b.close();
    }
  });

  it('socket peer with the directory: maps its file (keyed by inode); another VM naming it is EACCES; release frees it', () => {
    const d = MemoryPathDir.open(dir);
    const owners = new Map<string, string>();
    const mem = new HostMemory();
    const a = new MemTableMap(mem, 'a', owners, { dir: d, peer: () => SOCKET_PEER });
    const b = new MemTableMap(mem, 'b', owners, { dir: d, peer: () => SOCKET_PEER });
    try {
      a.replace({ regions: [region(path.join(dir, 'ram'))] });
      const st = fs.statSync(path.join(dir, 'ram'));
      expect([...owners]).toEqual([[`inode:${st.dev}:${st.ino}`, 'a']]);
      expect(expectedErrnoOf(() => b.replace({ regions: [region('ram')] }))).toBe('EACCES');
      expect(b.list).toHaveLength(0);
      a.clear();
      expect(owners.size).toBe(0);
      b.replace({ regions: [region('ram')] });
      b.clear();
    } finally {
      d.close();
    }
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
  });

  it('in-process peer: paths confined to the memory directories as before (the directory here is under the temp dir)', () => {
    const mem = new HostMemory();
    const t = new MemTableMap(mem, 'vm');
    t.replace({ regions: [region(path.join(dir, 'ram'))] });
    expect(t.list).toHaveLength(1);
    t.clear();
    expect(expectedErrnoOf(() => t.check({ regions: [region('/etc/passwd')] }))).toBe('EACCES');
  });
});
