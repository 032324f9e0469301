/**
 * Ctrl-C in a terminal signals the whole foreground process group: `vsva demo` and the host it
 * spawned. The demo must still stop in order — workloads, guests, then the host — and exit 0
 * with its summary line, without the guests first seeing the host vanish ("connection to the
 * host lost") and without an unsettled exit (status 13).
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { scaled, sleep, withDeadline } from '../../support/wait.js';

describe('vsva demo and Ctrl-C at a terminal', () => {
  it('exits 0 with one summary line when SIGINT reaches its whole process group', async () => {
    const child = spawn(process.execPath, ['bin/vsva.js', 'demo', '--dashboard-port', '0'], {
      env: { ...process.env, VSVA_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // a process group of its own, as a shell gives a foreground job
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        /* already gone */
      }
    };
    try {
      await withDeadline(
        (async () => {
          while (!stderr.includes('press Ctrl-C to stop')) await sleep(50);
        })(),
        { what: 'demo ready', timeoutMs: scaled(20_000) },
      );
      await sleep(1000);
      killGroup('SIGINT');
      const code = await withDeadline(exited, { what: 'demo exit after SIGINT', timeoutMs: scaled(15_000) });
      expect(code, `stderr: ${stderr}`).toBe(0);
    } finally {
      killGroup('SIGKILL');
    }
    expect(stderr).toContain('stopping');
    expect(stderr).not.toContain('connection to the host lost');
    expect(stderr, 'progress redraws (\\r) only on a terminal').not.toContain('\r');
    const summary = stdout.split('\n').filter((l) => l.startsWith('ran '));
    expect(summary).toHaveLength(1);
    expect(summary[0]).toMatch(/^ran \d+\.\d s with 2 VMs: \d+ processes, \d+ binds, \d+ DMA jobs, 0 check failures, \d+ errors; everything released$/);
  }, scaled(40_000));
});
