/**
 * The suite's own waiting helpers (docs/testing.md): the slowdown factor's parsing, waitFor's
 * deadline (also when the condition never settles), withDeadline, and makeDirOutside.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { slowdownFrom, SLOWDOWN } from './slowdown.js';
import { scaled, waitFor, withDeadline } from './wait.js';
import { makeDirOutside } from './outside-dir.js';

describe('slowdown factor', () => {
  it('is VSVA_TEST_SLOWDOWN when given, else 3 under CI, else 1', () => {
    expect(slowdownFrom({})).toBe(1);
    expect(slowdownFrom({ CI: 'true' })).toBe(3);
    expect(slowdownFrom({ CI: '1' })).toBe(3);
    expect(slowdownFrom({ CI: 'false' })).toBe(1);
    expect(slowdownFrom({ CI: '0' })).toBe(1);
    expect(slowdownFrom({ CI: '' })).toBe(1);
    expect(slowdownFrom({ VSVA_TEST_SLOWDOWN: '2.5', CI: 'true' })).toBe(2.5);
    expect(slowdownFrom({ VSVA_TEST_SLOWDOWN: ' ' })).toBe(1);
  });

  it('refuses a factor that is not a number ≥ 1', () => {
    for (const bad of ['0', '0.5', '-2', 'fast', 'Infinity', 'NaN']) {
      expect(() => slowdownFrom({ VSVA_TEST_SLOWDOWN: bad }), bad).toThrow(/VSVA_TEST_SLOWDOWN must be a number ≥ 1/);
    }
  });

  it('scales and rounds up', () => {
    expect(scaled(1000)).toBe(Math.ceil(1000 * SLOWDOWN));
    expect(scaled(0)).toBe(0);
  });
});

describe('waitFor / withDeadline', () => {
  it('resolves once the condition holds, sync or async', async () => {
    let n = 0;
    await waitFor(() => ++n >= 3, { what: 'three checks', intervalMs: 1 });
    expect(n).toBe(3);
    await waitFor(async () => true, { what: 'async condition' });
  });

  it('rejects at the deadline, naming what was awaited', async () => {
    await expect(waitFor(() => false, { what: 'never', timeoutMs: 30 })).rejects.toThrow(`never not reached within ${scaled(30)} ms`);
  });

  it('ends at the deadline even when the condition never settles', async () => {
    await expect(waitFor(() => new Promise<boolean>(() => {}), { what: 'hung check', timeoutMs: 30 })).rejects.toThrow(/hung check not reached/);
  });

  it("passes the condition's own error on", async () => {
    await expect(waitFor(() => { throw new Error('boom'); }, { what: 'x' })).rejects.toThrow('boom');
  });

  it('withDeadline settles with the promise, or rejects at the deadline', async () => {
    await expect(withDeadline(Promise.resolve(7), { what: 'seven', timeoutMs: 30 })).resolves.toBe(7);
    await expect(withDeadline(new Promise(() => {}), { what: 'forever', timeoutMs: 30 })).rejects.toThrow(/forever not reached/);
  });
});

describe('makeDirOutside', () => {
  it('creates a fresh directory inside none of the excluded ones', () => {
    const dir = makeDirOutside(['/dev/shm', os.tmpdir()]);
    try {
      expect(fs.statSync(dir).isDirectory()).toBe(true);
      for (const ex of ['/dev/shm', fs.realpathSync(os.tmpdir())]) expect(path.relative(ex, fs.realpathSync(dir)).startsWith('..')).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('throws when every candidate is excluded', () => {
    expect(() => makeDirOutside(['/'])).toThrow(/no writable directory outside/);
  });
});
