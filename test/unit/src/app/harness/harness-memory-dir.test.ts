/**
 * A program that runs both halves through the harness needs no configuration for guest RAM
 * announced by path (src/app/harness/harness-memory-dir.ts): with the 'pread' backend (or no
 * native addon) and no VSVA_ALLOW_MEMORY_PATHS / VSVA_MEM_DIR, startHost allows a private 0700
 * directory and startGuest creates RAM there; the RAM file's name is gone once the VM is up.
 * With allowMemoryPaths false the same guest is refused (EPERM).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startHost } from '../../../../../src/app/harness/start-host.js';
import { startGuest } from '../../../../../src/app/harness/start-guest.js';
import { existingHarnessMemoryDir } from '../../../../../src/app/harness/harness-memory-dir.js';
import { isVsvaError } from '../../../../../src/errors.js';

const saved = { mem: process.env.VSVA_MEM_DIR, allow: process.env.VSVA_ALLOW_MEMORY_PATHS };
beforeAll(() => {
  delete process.env.VSVA_MEM_DIR;
  delete process.env.VSVA_ALLOW_MEMORY_PATHS;
});
afterAll(() => {
  if (saved.mem !== undefined) process.env.VSVA_MEM_DIR = saved.mem;
  if (saved.allow !== undefined) process.env.VSVA_ALLOW_MEMORY_PATHS = saved.allow;
});

describe('harness memory directory', () => {
  it("startHost + startGuest on the 'pread' backend: RAM by path in a private directory, its name gone once up", async () => {
    const host = await startHost({ spawn: false, graceMs: 0, memoryBackend: 'pread' });
    try {
      const dir = existingHarnessMemoryDir();
      expect(dir).toBeDefined();
      expect(fs.statSync(dir!).mode & 0o777).toBe(0o700);
      expect(host.server!.memoryPaths?.path).toBe(dir);
      const vm = await startGuest({ socket: host.socket, viommu: 'vtd', memory: 4 << 20, memoryBackend: 'pread' });
      try {
        expect(path.dirname(vm.ram.path)).toBe(dir);
        expect(fs.readdirSync(dir!)).toEqual([]);
        const r = await vm.dma('00:03.0', { addr: 0x1000n, data: Uint8Array.of(1, 2, 3) });
        expect(r.ok).toBe(true);
      } finally {
        await vm.close();
      }
    } finally {
      await host.close();
    }
  });

  it('allowMemoryPaths: false refuses the same guest (EPERM)', async () => {
    const host = await startHost({ spawn: false, graceMs: 0, memoryBackend: 'pread', allowMemoryPaths: false });
    try {
      let code = 'ok';
      try {
        await startGuest({ socket: host.socket, viommu: 'vtd', memory: 4 << 20, memoryBackend: 'pread', reconnect: { enabled: false } });
      } catch (e) {
        code = isVsvaError(e) ? e.code : String(e);
      }
      expect(code).toBe('EPERM');
    } finally {
      await host.close();
    }
  });
});
