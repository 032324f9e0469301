/**
 * Memory a guest can name is its own (docs/protocol.md "SET_MEM_TABLE", path form): a hostile
 * client on a spawned `vsva host`'s socket names files that are not its RAM. Without
 * --allow-memory-paths every path-form table is EPERM; with it only a regular file directly in
 * DIR, with one link, owned by the peer's uid and large enough is mapped. Each refusal has its
 * own errno, maps nothing, and leaves the connection working (a good table is accepted after).
 * The directory-swap race: while another process keeps swapping DIR with a symbolic link to a
 * directory outside, the host never opens a file outside DIR.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { FrontendClient } from '../../../vhost/roles/frontend.js';
import { scaled, withDeadline } from '../../support/wait.js';
import type { MemTable } from '../../../vhost/messages/handshake.js';
import { asyncErrorCodeOf as errnoOf } from '../../support/error-code.js';

const PAGE = 4096;
const ZERO_TOKEN = new Uint8Array(16);
const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
const isRoot = process.getuid?.() === 0;

let dir: string; // DIR of --allow-memory-paths (0700, ours)
let outside: string; // a directory on the same filesystem, outside DIR
let strict: StartedHost; // no --allow-memory-paths
let allowing: StartedHost; // --allow-memory-paths DIR
const clients: FrontendClient[] = [];

async function vmClient(socket: string, name: string): Promise<FrontendClient> {
  const fe = await FrontendClient.connect({ path: socket });
  clients.push(fe);
  await fe.handshake();
  await fe.setupVm({ name, pasid_quota: 1, flags: 0, session_token: ZERO_TOKEN });
  return fe;
}

function table(p: string, size = 2 * PAGE): MemTable {
  return { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(size), userspace_addr: 0n, mmap_offset: 0n, path: p }] };
}


/** The VM's mapped RAM as the host reports it (the connection's own view): regions and bytes. */
async function memoryOf(fe: FrontendClient): Promise<{ regions: number; bytes: number }> {
  const s = JSON.parse((await fe.call('GET_STATE')).json) as { vms: { memory: { regions: number; bytes: number } }[] };
  return s.vms[0]!.memory;
}

function file(p: string, size = 2 * PAGE, fill = 0): string {
  fs.writeFileSync(p, Buffer.alloc(size, fill), { mode: 0o600 });
  return p;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(base, 'vsva-hostile-mem-'));
  outside = fs.mkdtempSync(path.join(base, 'vsva-hostile-out-'));
  [strict, allowing] = await Promise.all([startHost({ allowMemoryPaths: false, graceMs: 0 }), startHost({ allowMemoryPaths: dir, graceMs: 0 })]);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all([strict?.close(), allowing?.close()]);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(`${dir}.aside`, { recursive: true, force: true });
  fs.rmSync(outside, { recursive: true, force: true });
});

describe('SET_MEM_TABLE path form from a socket peer', () => {
  it('without --allow-memory-paths: EPERM for any path, nothing mapped, the connection keeps working', async () => {
    const fe = await vmClient(strict.socket, 'no-paths');
    const good = file(path.join(dir, 'strict-ram'));
    const before = await memoryOf(fe);
    expect(before).toEqual({ regions: 0, bytes: 0 });
    expect(await errnoOf(fe.call('SET_MEM_TABLE', table(good)))).toBe('EPERM');
    expect(await errnoOf(fe.call('SET_MEM_TABLE', table('/dev/shm/anything')))).toBe('EPERM');
    expect(await memoryOf(fe)).toEqual(before);
    // Still usable: other requests are served.
    expect((await fe.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
  });

  it('refuses every file that is not the peer\'s own regular file directly in DIR, each with its errno; then maps a good one', async () => {
    const fe = await vmClient(allowing.socket, 'hostile');
    const target = file(path.join(outside, 'secret'), 2 * PAGE, 0x5a);
    const cases: [string, string][] = [];
    // A symbolic link in DIR, to a file outside and to one inside: O_NOFOLLOW.
    fs.symlinkSync(target, path.join(dir, 'link-out'));
    cases.push([path.join(dir, 'link-out'), 'ELOOP']);
    file(path.join(dir, 'plain'));
    fs.symlinkSync(path.join(dir, 'plain'), path.join(dir, 'link-in'));
    cases.push([path.join(dir, 'link-in'), 'ELOOP']);
    fs.symlinkSync('/proc/self/mem', path.join(dir, 'link-mem'));
    cases.push([path.join(dir, 'link-mem'), 'ELOOP']);
    // A hard link into DIR of a file outside it.
    fs.linkSync(target, path.join(dir, 'hard'));
    cases.push([path.join(dir, 'hard'), 'EMLINK']);
    // Names that leave DIR.
    cases.push([`${dir}/../${path.basename(outside)}/secret`, 'EACCES']);
    cases.push(['..', 'EACCES']);
    cases.push([`${dir}/..`, 'EACCES']);
    cases.push([target, 'EACCES']);
    cases.push(['/proc/self/mem', 'EACCES']);
    cases.push(['/dev/zero', 'EACCES']);
    fs.mkdirSync(path.join(dir, 'sub'));
    file(path.join(dir, 'sub', 'ram'));
    cases.push([path.join(dir, 'sub', 'ram'), 'EACCES']);
    // Not regular files.
    expect(spawnSync('mkfifo', [path.join(dir, 'fifo')]).status).toBe(0);
    cases.push([path.join(dir, 'fifo'), 'EINVAL']);
    cases.push([path.join(dir, 'sub'), 'EINVAL']);
    if (isRoot && spawnSync('mknod', [path.join(dir, 'zero'), 'c', '1', '5']).status === 0) cases.push([path.join(dir, 'zero'), 'EINVAL']);
    // Another uid's file (we are root: chown makes one).
    if (isRoot) {
      fs.chownSync(file(path.join(dir, 'nobody')), 65534, 65534);
      cases.push([path.join(dir, 'nobody'), 'EACCES']);
    }
    // Too small, missing.
    file(path.join(dir, 'small'), PAGE);
    cases.push([path.join(dir, 'small'), 'EINVAL']);
    cases.push([path.join(dir, 'missing'), 'ENOENT']);

    const before = await memoryOf(fe);
    expect(before).toEqual({ regions: 0, bytes: 0 });
    const got: string[] = [];
    for (const [p] of cases) got.push(await errnoOf(fe.call('SET_MEM_TABLE', table(p))));
    expect(cases.map(([p], i) => `${p} → ${got[i]}`)).toEqual(cases.map(([p, e]) => `${p} → ${e}`));
    expect(await memoryOf(fe)).toEqual(before);
    // The secret outside was never written, and the connection still works: a good file maps.
    expect(fs.readFileSync(target).every((b) => b === 0x5a)).toBe(true);
    await fe.call('SET_MEM_TABLE', table(path.join(dir, 'plain')));
    expect(await memoryOf(fe)).toEqual({ regions: 1, bytes: 2 * PAGE });
    await fe.call('DMA_MAP', { domain: 0, flags: 3, iova: 0n, gpa: 0n, size: BigInt(2 * PAGE) });
  });

  it("another VM's announced file is EACCES; the bare name form works the same as DIR/name", async () => {
    const a = await vmClient(allowing.socket, 'owner');
    const b = await vmClient(allowing.socket, 'thief');
    file(path.join(dir, 'owned'));
    await a.call('SET_MEM_TABLE', table('owned'));
    expect(await errnoOf(b.call('SET_MEM_TABLE', table(path.join(dir, 'owned'))))).toBe('EACCES');
    expect(await errnoOf(b.call('SET_MEM_TABLE', table('owned')))).toBe('EACCES');
    file(path.join(dir, 'thief-own'));
    await b.call('SET_MEM_TABLE', table(path.join(dir, 'thief-own')));
  });

  it('directory-swap race: while DIR is swapped with a link to a directory outside, no file outside DIR is ever opened', async () => {
    const fe = await vmClient(allowing.socket, 'racer');
    const inside = file(path.join(dir, 'race'), 2 * PAGE, 1);
    const decoy = file(path.join(outside, 'race'), 2 * PAGE, 2);
    const decoyIno = fs.statSync(decoy).ino;
    const insideIno = fs.statSync(inside).ino;
    // Another process swaps DIR ↔ a symbolic link to `outside` as fast as it can.
    const swapper: ChildProcess = spawn(process.execPath, ['-e', `
      const fs = require('fs');
      const dir = ${JSON.stringify(dir)}, aside = dir + '.aside', out = ${JSON.stringify(outside)};
      let told = false;
      for (;;) {
        try { fs.renameSync(dir, aside); fs.symlinkSync(out, dir); fs.unlinkSync(dir); fs.renameSync(aside, dir); } catch { continue; }
        if (!told) { told = true; process.stdout.write('swapping\\n'); }
      }`], { stdio: ['ignore', 'pipe', 'ignore'] });
    await withDeadline(new Promise<void>((resolve) => swapper.stdout!.once('data', () => resolve())), { what: 'the swapper swapping', timeoutMs: scaled(10_000) });
    const hostFds = (): number[] => {
      const out: number[] = [];
      for (const fd of fs.readdirSync(`/proc/${allowing.pid}/fd`)) {
        try {
          out.push(fs.statSync(`/proc/${allowing.pid}/fd/${fd}`).ino);
        } catch {
          /* closed meanwhile */
        }
      }
      return out;
    };
    let attempts = 0;
    let mapped = 0;
    let outsideOpens = 0;
    const deadline = Date.now() + scaled(8_000);
    try {
      while (attempts < 400 && Date.now() < deadline) {
        attempts++;
        // Alternate sizes so that every table differs from the last and is opened anew.
        const r = await errnoOf(fe.call('SET_MEM_TABLE', table(path.join(dir, 'race'), attempts % 2 === 0 ? PAGE : 2 * PAGE)));
        if (r !== 'ok') continue;
        mapped++;
        const inos = hostFds();
        if (inos.includes(decoyIno)) outsideOpens++;
        expect(inos).toContain(insideIno);
      }
    } finally {
      swapper.kill('SIGKILL');
      await new Promise((resolve) => swapper.once('exit', resolve));
      // Put DIR back if the swapper stopped half-way.
      if (fs.lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink()) fs.unlinkSync(dir);
      if (fs.existsSync(`${dir}.aside`)) fs.renameSync(`${dir}.aside`, dir);
    }
    expect({ attempts, outsideOpens }).toEqual({ attempts, outsideOpens: 0 });
    expect(mapped).toBeGreaterThan(0);
    expect(fs.readFileSync(decoy).every((b) => b === 2)).toBe(true);
  }, 60_000);
});
