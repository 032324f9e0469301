/**
 * startHost from the package root: a spawned `vsva host` child (default) and the in-process
 * variant with the dashboard; snapshot() and a clean close().
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { startHost } from '../../../src/app/index.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('startHost', () => {
  it('spawns `vsva host`, snapshots it over GET_STATE, and closes it (process gone, socket removed)', async () => {
    const h = await startHost({ pasidBits: 8 });
    expect(h.pid).not.toBe(process.pid);
    expect(existsSync(h.socket)).toBe(true);
    const s = await h.snapshot();
    expect(s).toMatchObject({ pasidBits: 8, capacity: { total: 255, available: 255 }, vms: [] });
    // Short young-generation collections for every VM's sake (bin/young-generation.js), unless
    // NODE_OPTIONS sizes the young generation itself.
    if (!/semi-space/.test(process.env.NODE_OPTIONS ?? '') && existsSync(`/proc/${h.pid}/cmdline`)) {
      expect(readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0')).toContain('--max-semi-space-size=1');
    }
    await h.close();
    expect(alive(h.pid)).toBe(false);
    expect(existsSync(h.socket)).toBe(false);
  });

  it('runs in-process with the dashboard when spawn is false', async () => {
    const h = await startHost({ spawn: false, dashboard: { port: 0 } });
    try {
      expect(h.pid).toBe(process.pid);
      expect(h.dashboard).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const res = await fetch(h.dashboard!);
      expect(res.status).toBe(200);
      expect(await h.snapshot()).toMatchObject({ pasidBits: 20, capacity: { total: 2 ** 20 - 1, available: 2 ** 20 - 1 }, vms: [] });
    } finally {
      await h.close();
    }
    expect(existsSync(h.socket)).toBe(false);
  });
});

describe('vsva host', () => {
  it('shuts down cleanly on SIGTERM: exit status 0, socket removed', async () => {
    const { spawn } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const sock = join(tmpdir(), `vsva-sigterm-${process.pid}.sock`);
    const bin = fileURLToPath(new URL('../../../bin/vsva.js', import.meta.url));
    const child = spawn(process.execPath, [bin, 'host', '--socket', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.once('exit', (c) => reject(new Error(`exited early (${c})`)));
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')));
      });
    });
    expect(JSON.parse(line)).toMatchObject({ ready: true, socket: sock, dashboard: null });
    expect(existsSync(sock)).toBe(true);
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (c) => resolve(c));
      child.kill('SIGTERM');
    });
    expect(code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });
});
