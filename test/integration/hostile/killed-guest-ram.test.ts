/**
 * Killed guests leave no RAM behind (docs/reliability.md "Guest RAM files"): `vsva guest`
 * processes are SIGKILLed once their VM is up — with default RAM (a memfd: never a file; without
 * the native addon a file in VSVA_MEM_DIR, announced by path),
 * and with RAM as a file in a memory directory (`--memory-path DIR`: the name is removed as soon
 * as both halves hold the file). Neither DIR, /dev/shm nor the temporary directories get a RAM
 * file of theirs, and the host releases their VMs.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { scaled, waitFor, withDeadline } from '../../support/wait.js';

const bin = fileURLToPath(new URL('../../../bin/vsva.js', import.meta.url));
const KILLS = 3;
const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
let dir: string;
let host: StartedHost;
const children: ChildProcess[] = [];

/** Directories a guest could have left RAM files in. */
function ramDirs(): string[] {
  return [...new Set([dir, base, os.tmpdir(), process.env.VSVA_MEM_DIR].filter((d): d is string => d !== undefined))];
}

/** RAM files (vsva-ram-<pid>-…) of the given processes in those directories. */
function ramFilesOf(pids: readonly number[]): string[] {
  const out: string[] = [];
  for (const d of ramDirs()) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) if (pids.some((pid) => n.startsWith(`vsva-ram-${pid}-`))) out.push(path.join(d, n));
  }
  return out;
}

/** Start a `vsva guest` and resolve with its pid once its VM is up. */
function startGuestProcess(name: string, extra: string[]): Promise<number> {
  const child = spawn(process.execPath, [bin, 'guest', '--socket', host.socket, '--name', name, '--memory', '8', '--workload', 'idle', ...extra], {
    stdio: ['ignore', 'pipe', 'ignore'],
    // Without the native addon the default RAM is a file in VSVA_MEM_DIR: the directory the host allows.
    env: { ...process.env, VSVA_MEM_DIR: dir },
  });
  children.push(child);
  const up = new Promise<number>((resolve, reject) => {
    let buf = '';
    child.once('exit', (code, signal) => reject(new Error(`guest ${name} exited before its VM was up (${String(code)}, ${String(signal)})`)));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (/\bup with\b/.test(buf)) resolve(child.pid!);
    });
  });
  return withDeadline(up, { what: `guest ${name} up`, timeoutMs: scaled(30_000) });
}

async function killAll(pids: readonly number[]): Promise<void> {
  const exits = children.filter((c) => pids.includes(c.pid!)).map((c) => new Promise((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve(null) : c.once('exit', resolve))));
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  await Promise.all(exits);
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(base, 'vsva-killed-ram-'));
  host = await startHost({ allowMemoryPaths: dir, graceMs: 200 });
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await host?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('SIGKILLed guest processes', () => {
  for (const variant of [
    { label: 'default RAM (a memfd; without the native addon a file in VSVA_MEM_DIR)', extra: [] as string[] },
    { label: 'RAM as a file in --memory-path DIR', extra: ['--memory-path', '<dir>'] },
  ]) {
    it(`leave no RAM file behind: ${variant.label}`, async () => {
      const before = fs.readdirSync(dir).length;
      const extra = variant.extra.map((a) => (a === '<dir>' ? dir : a));
      const tag = variant.extra.length === 0 ? 'memfd' : 'file';
      const pids = await Promise.all(Array.from({ length: KILLS }, (_, i) => startGuestProcess(`killed-${tag}-${i}`, extra)));
      // Up and running: the names are already gone (fd form: at once; path form: after SET_MEM_TABLE's reply).
      expect(ramFilesOf(pids)).toEqual([]);
      await killAll(pids);
      expect(ramFilesOf(pids)).toEqual([]);
      expect(fs.readdirSync(dir).length).toBe(before);
      // The host lets the VMs go after their grace period.
      await waitFor(async () => (await host.snapshot()).vms.every((v) => !v.name.startsWith(`killed-${tag}-`)), { what: 'the killed VMs released', timeoutMs: scaled(20_000) });
    }, 90_000);
  }
});
