/**
 * `vsva` reports a user's mistake in one line with the errno that names it, not a stack:
 * `trace export` of a missing or foreign file, `host --socket` in a missing directory (ENOENT,
 * where listen(2) says EACCES) or on a regular file (EEXIST, where it says EADDRINUSE). The
 * same socket checks apply to startHost.
 */
import { describe, it, expect } from 'vitest';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost } from '../../../../../src/app/index.js';
import { checkSocketPath } from '../../../../../src/app/harness/socket-path.js';
import { scaled } from '../../../../support/wait.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../..');
const BIN = path.join(ROOT, 'bin/vsva.js');

function vsva(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: scaled(30_000) }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

function expectOneLine(stderr: string, re: RegExp): void {
  const lines = stderr.split('\n').filter((l) => l !== '');
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(re);
  expect(stderr).not.toMatch(/\n\s+at /);
}

describe('vsva error lines', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-cli-'));

  it('trace export of a missing file: one ENOENT line, exit 1', async () => {
    const r = await vsva(['trace', 'export', path.join(dir, 'missing.jsonl')]);
    expect(r.code).toBe(1);
    expectOneLine(r.stderr, /^vsva: ENOENT: .*missing\.jsonl/);
  }, scaled(40_000));

  it('trace export of a file that is not a vsva trace: one EINVAL line, exit 1', async () => {
    const foreign = path.join(dir, 'foreign.jsonl');
    fs.writeFileSync(foreign, '{"hello":"world"}\n');
    const notJson = path.join(dir, 'notes.txt');
    fs.writeFileSync(notJson, 'just some text\n');
    const a = await vsva(['trace', 'export', foreign]);
    expect(a.code).toBe(1);
    expectOneLine(a.stderr, /^vsva: EINVAL: .*not a vsva trace/);
    const b = await vsva(['trace', 'export', notJson]);
    expect(b.code).toBe(1);
    expectOneLine(b.stderr, /^vsva: EINVAL: .*not JSON/);
  }, scaled(60_000));

  it('host --socket in a missing directory: ENOENT naming the directory', async () => {
    const r = await vsva(['host', '--socket', path.join(dir, 'no-such-dir', 'host.sock')]);
    expect(r.code).toBe(1);
    expectOneLine(r.stderr, /^vsva: ENOENT: .*no-such-dir does not exist/);
  }, scaled(40_000));

  it('host --socket on a regular file: EEXIST, and the file is left alone', async () => {
    const file = path.join(dir, 'regular.sock');
    fs.writeFileSync(file, 'keep me');
    const r = await vsva(['host', '--socket', file]);
    expect(r.code).toBe(1);
    expectOneLine(r.stderr, /^vsva: EEXIST: .*not a socket/);
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  }, scaled(40_000));

  it('startHost applies the same checks, spawned or in-process', async () => {
    const missing = path.join(dir, 'nowhere', 'h.sock');
    await expect(startHost({ socket: missing })).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(startHost({ socket: missing, spawn: false })).rejects.toMatchObject({ code: 'ENOENT' });
    const file = path.join(dir, 'file.sock');
    fs.writeFileSync(file, '');
    await expect(startHost({ socket: file, spawn: false })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(() => checkSocketPath(path.join(dir, 'fresh.sock'))).not.toThrow();
    expect(() => checkSocketPath(path.join(file, 'under-a-file.sock'))).toThrow(/ENOENT: .*not a directory/);
  });
});
