/**
 * A guest process whose only work is a request waiting for a host that restarts must stay alive
 * while it waits (guest/reconnect.ts: the waiter's timer is ref'd; the backoff timers are not):
 * the child ends with the request's ENOTCONN at the outage bound, after reconnect attempts —
 * not with exit code 13 (Node's "unsettled top-level await") as soon as the event loop empties.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { withDeadline } from '../../support/wait.js';

const child = fileURLToPath(new URL('./reconnect-keepalive-child.ts', import.meta.url));

describe('reconnect keeps a waiting guest process alive', () => {
  it('a request waiting for the link ends with ENOTCONN at its bound; the process does not exit early', async () => {
    const p = spawn(process.execPath, ['--import', 'tsx', child], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, VSVA_LOG: 'silent' } });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await withDeadline(new Promise<number | null>((resolve) => p.once('exit', (c) => resolve(c))), { what: 'child exit', timeoutMs: 30_000 });
    expect({ code, out: out.trim() }).toEqual({ code: 0, out: 'ENOTCONN after attempts' });
  }, 60_000);
});
