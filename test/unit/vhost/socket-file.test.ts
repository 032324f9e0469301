/**
 * The socket file of a listener (vhost/transport/socket-file.ts): a live listener's path is
 * EADDRINUSE, a stale socket is replaced, anything else at the path is EEXIST, the socket is
 * created 0600 (0660 with a group) whatever the umask, and release unlinks only our own socket.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { bindSocketFile, clearStaleSocket, probeSocket, releaseSocketFile } from '../../../vhost/transport/socket-file.js';
import { listenUnix } from '../../../vhost/transport/unix.js';

let dir: string;
const servers: net.Server[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-sockfile-'));
});

afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

/** A socket file nobody listens on: bound, hard-linked, then the listener closed (libuv unlinks its own name only). */
async function staleSocket(p: string): Promise<void> {
  const tmp = path.join(dir, 'tmp.sock');
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(tmp, r));
  fs.linkSync(tmp, p);
  await new Promise<void>((r) => s.close(() => r()));
}

describe('socket file', () => {
  it('a live listener keeps its path: EADDRINUSE, and its socket stays', async () => {
    const p = path.join(dir, 'h.sock');
    const a = net.createServer();
    servers.push(a);
    const own = await bindSocketFile(a, p);
    expect(await probeSocket(p)).toBe('live');
    const b = net.createServer();
    expect(await errnoOf(bindSocketFile(b, p))).toBe('EADDRINUSE');
    expect(await errnoOf(clearStaleSocket(p))).toBe('EADDRINUSE');
    const st = fs.statSync(p);
    expect([st.dev, st.ino]).toEqual([own.dev, own.ino]);
    expect(await probeSocket(p)).toBe('live');
    expect(fs.readdirSync(dir)).toEqual(['h.sock']); // no private name left behind
  });

  it('a stale socket is replaced; a path that is not a socket is EEXIST and left alone', async () => {
    const p = path.join(dir, 's.sock');
    await staleSocket(p);
    expect(await probeSocket(p)).toBe('stale');
    const a = net.createServer();
    servers.push(a);
    const own = await bindSocketFile(a, p);
    expect(fs.statSync(p).ino).toBe(own.ino);
    expect(await probeSocket(p)).toBe('live'); // stale before: this listener's now
    const f = path.join(dir, 'file');
    fs.writeFileSync(f, 'keep');
    expect(await errnoOf(bindSocketFile(net.createServer(), f))).toBe('EEXIST');
    expect(fs.readFileSync(f, 'utf8')).toBe('keep');
  });

  it('is created 0600 under umask 000, 0660 with a group', async () => {
    const old = process.umask(0);
    try {
      const p = path.join(dir, 'm.sock');
      const a = net.createServer();
      servers.push(a);
      await bindSocketFile(a, p);
      expect(fs.statSync(p).mode & 0o777).toBe(0o600);
      const q = path.join(dir, 'g.sock');
      const b = net.createServer();
      servers.push(b);
      const gid = process.getgid!();
      await bindSocketFile(b, q, { gid });
      expect(fs.statSync(q).mode & 0o777).toBe(0o660);
      expect(fs.statSync(q).gid).toBe(gid);
    } finally {
      process.umask(old);
    }
  });

  it('release unlinks only our own socket; the listener closes without touching a replacement', async () => {
    const p = path.join(dir, 'r.sock');
    const l = await listenUnix(p, (t) => t.close());
    expect(fs.statSync(p).mode & 0o777).toBe(0o600);
    // Someone else's socket at the path now (e.g. an operator's replacement host).
    fs.unlinkSync(p);
    const other = net.createServer();
    servers.push(other);
    await new Promise<void>((r) => other.listen(p, r));
    const otherIno = fs.statSync(p).ino;
    await l.close();
    expect(fs.statSync(p).ino).toBe(otherIno);
    expect(await probeSocket(p)).toBe('live');
    expect(releaseSocketFile(p, { dev: 0, ino: 0 })).toBe(false);
    // Our own socket is removed on close.
    const q = path.join(dir, 'q.sock');
    const m = await listenUnix(q, (t) => t.close());
    await m.close();
    expect(fs.existsSync(q)).toBe(false);
  });
});
