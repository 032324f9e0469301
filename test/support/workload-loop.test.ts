/**
 * The background workload loop (workload-loop.ts): against a dead link (guest/reconnect.ts
 * HostLink whose host is gone and that gave up) every request fails at once, yet the loop
 * yields to the event loop — a timer fires while it runs — and ends on its bound; a failing
 * round ends it at once and fails the test's main steps; stop() ends it after the round.
 */
import { describe, expect, it } from 'vitest';
import { HostLink } from '../../guest/reconnect.js';
import { logger } from '../../src/log.js';
import type { FrontendClient } from '../../vhost/roles/frontend.js';
import { sleep, withDeadline } from './wait.js';
import { WorkloadLoop } from './workload-loop.js';

/** A client whose connection is already gone: every call is ECONNRESET. */
function deadClient(): FrontendClient {
  return {
    closed: true,
    onClose: () => undefined,
    close: () => undefined,
    call: () => Promise.reject(Object.assign(new Error('gone'), { code: 'ECONNRESET' })),
  } as unknown as FrontendClient;
}

function deadLink(): HostLink {
  return new HostLink(deadClient(), {
    connect: () => Promise.reject(new Error('no host')),
    establish: () => Promise.resolve(),
    policy: { enabled: false },
    log: logger,
  });
}

describe('workload loop', () => {
  it('against a dead link: every round fails at once, a timer still fires while it runs, and it ends on its bound', async () => {
    const link = deadLink();
    const codes = new Set<string>();
    let fired = 0;
    const timer = setInterval(() => fired++, 2);
    let firedAtRound = -1;
    const loop = new WorkloadLoop({
      what: 'dead-link workload',
      maxRounds: 200,
      deadlineMs: 10_000,
      pauseMs: 0,
      round: async () => {
        await link.call('GET_STATE').catch((e: { code?: string }) => codes.add(String(e.code)));
        if (fired > 0 && firedAtRound < 0) firedAtRound = loop.rounds;
      },
    });
    const end = await withDeadline(loop.done, { what: 'loop ended', timeoutMs: 10_000 });
    clearInterval(timer);
    expect(end).toEqual({ reason: 'bound', rounds: 200 });
    expect([...codes]).toEqual(['ENOTCONN']);
    expect(link.state).toBe('failed');
    expect(firedAtRound).toBeGreaterThanOrEqual(0);
    expect(firedAtRound).toBeLessThan(200); // the timer ran during the loop, not only after it
  });

  it('ends at its deadline when no round bound is given', async () => {
    const loop = new WorkloadLoop({ what: 'deadline', deadlineMs: 50, round: () => Promise.resolve() });
    const end = await withDeadline(loop.done, { what: 'loop ended', timeoutMs: 5000 });
    expect(end.reason).toBe('bound');
    expect(end.rounds).toBeGreaterThan(0);
  });

  it('a failing round ends the loop at once and rejects the main steps and stop() with its error', async () => {
    let n = 0;
    const loop = new WorkloadLoop({
      what: 'failing',
      deadlineMs: 60_000,
      round: () => {
        n++;
        return n === 3 ? Promise.reject(new Error('wrong DMA data')) : Promise.resolve();
      },
    });
    const started = Date.now();
    await expect(loop.guard(() => sleep(30_000))).rejects.toThrow('wrong DMA data');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await loop.done).toMatchObject({ reason: 'failed', rounds: 2 });
    expect(n).toBe(3); // no round after the failing one
    await expect(loop.stop()).rejects.toThrow('wrong DMA data');
  });

  it('stop() ends the loop after the current round; guard passes the steps\' result through', async () => {
    const loop = new WorkloadLoop({ what: 'stopped', deadlineMs: 60_000, round: () => sleep(2) });
    expect(await loop.guard(async () => {
      await sleep(20);
      return 'steps done';
    })).toBe('steps done');
    const end = await withDeadline(loop.stop(), { what: 'loop stopped', timeoutMs: 5000 });
    expect(end.reason).toBe('stopped');
    expect(end.rounds).toBeGreaterThan(0);
  });
});
