/**
 * One host per socket, private by default (`vsva host`): a second host on a live host's socket
 * exits 1 with EADDRINUSE and leaves the first reachable; a stale socket is replaced; the socket
 * is 0600 even under umask 000; a host exits without removing a socket that is not its own; the
 * monitor token comes from a file (not the command line) and works over GET_STATE.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withDeadline } from '../../support/wait.js';
import { errnoOf, handshaken, vmClient } from './limits-client.js';

const BIN = fileURLToPath(new URL('../../../bin/vsva.js', import.meta.url));
const TOKEN = 'socket-owner-monitor-token-01';

let dir: string;
const children: ChildProcess[] = [];

interface Run {
  child: ChildProcess;
  /** The ready line, or null when the process exited first. */
  ready: Promise<Record<string, unknown> | null>;
  exit: Promise<number | null>;
  stderr: () => string;
}

/** `vsva host` under `sh` with umask 000 (so the socket's mode cannot come from the umask). */
function runHost(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const cmd = ['umask 000;', 'exec', JSON.stringify(process.execPath), JSON.stringify(BIN), 'host', ...args.map((a) => JSON.stringify(a))].join(' ');
  const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VSVA_FROM_SOURCE: '1', ...env } });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const ready = new Promise<Record<string, unknown> | null>((resolve) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
    });
    void exit.then(() => resolve(null));
  });
  return { child, ready: withDeadline(ready, { what: 'vsva host ready or exited', timeoutMs: 30_000 }), exit, stderr: () => err };
}

async function stop(r: Run): Promise<number | null> {
  if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGTERM');
  return withDeadline(r.exit, { what: 'vsva host exit', timeoutMs: 10_000 });
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-own-'));
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('vsva host socket ownership', () => {
  it('a second host on a live socket exits 1 with EADDRINUSE; the first keeps serving, 0600, token from a file', async () => {
    const sock = path.join(dir, 'a.sock');
    const tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const first = runHost(['--socket', sock, '--monitor-token-file', tokenFile]);
    expect(await first.ready).toMatchObject({ ready: true, socket: sock });
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(`/proc/${first.child.pid}/cmdline`, 'utf8')).not.toContain(TOKEN);
    const ino = fs.statSync(sock).ino;

    const second = runHost(['--socket', sock]);
    expect(await second.ready).toBeNull();
    expect(await second.exit).toBe(1);
    expect(second.stderr()).toContain('EADDRINUSE');
    expect(fs.statSync(sock).ino).toBe(ino);

    const vm = await vmClient(sock, 'still-served');
    expect((await vm.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
    const mon = await handshaken(sock);
    const page = JSON.parse((await mon.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: TOKEN })).json) as { vms: { name: string }[] };
    expect(page.vms.map((v) => v.name)).toEqual(['still-served']);
    expect(await errnoOf(mon.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: 'x'.repeat(20) }))).toBe('EACCES');
    vm.close();
    mon.close();
    expect(await stop(first)).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
  }, 90_000);

  it('replaces a stale socket, and on exit leaves a socket that is not its own', async () => {
    const sock = path.join(dir, 'b.sock');
    // A stale socket: bound, hard-linked to the path, listener gone.
    const tmp = path.join(dir, 'tmp.sock');
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(tmp, r));
    fs.linkSync(tmp, sock);
    await new Promise<void>((r) => s.close(() => r()));
    const host = runHost(['--socket', sock, '--socket-group', String(process.getgid!())]);
    expect(await host.ready).toMatchObject({ ready: true });
    expect(fs.statSync(sock).mode & 0o777).toBe(0o660);
    (await handshaken(sock)).close();
    // Another listener takes the path while the host runs; the host's exit must not remove it.
    fs.unlinkSync(sock);
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(sock, r));
    const otherIno = fs.statSync(sock).ino;
    expect(await stop(host)).toBe(0);
    expect(fs.statSync(sock).ino).toBe(otherIno);
    await new Promise<void>((r) => other.close(() => r()));
  }, 90_000);

  it('a path that is not a socket: exit 1 with EEXIST, the file untouched', async () => {
    const f = path.join(dir, 'plain');
    fs.writeFileSync(f, 'data');
    const host = runHost(['--socket', f]);
    expect(await host.ready).toBeNull();
    expect(await host.exit).toBe(1);
    expect(host.stderr()).toContain('EEXIST');
    expect(fs.readFileSync(f, 'utf8')).toBe('data');
  }, 60_000);
});
