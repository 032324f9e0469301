/**
 * The guest link's reconnect loop (guest/reconnect.ts) waits between attempts with a capped
 * backoff: with no host at all, attempts are spaced by timers — never a retry loop — and no
 * wait exceeds maxDelayMs (+20 % jitter), the first one included even when initialDelayMs is
 * larger.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostLink } from '../../../guest/reconnect.js';
import { logger } from '../../../src/log.js';
import type { FrontendClient } from '../../../vhost/roles/frontend.js';
import { sleep, waitFor } from '../../support/wait.js';

const links: HostLink[] = [];
afterEach(() => {
  for (const l of links.splice(0)) l.close();
});

function closedClient(): FrontendClient {
  return { closed: true, onClose: () => undefined, close: () => undefined, call: () => Promise.reject(new Error('unused')) } as unknown as FrontendClient;
}

describe('reconnect backoff', () => {
  it('spaces attempts by timers and caps every wait at maxDelayMs, the first one included', async () => {
    const at: number[] = [];
    const link = new HostLink(closedClient(), {
      connect: () => {
        at.push(performance.now());
        return Promise.reject(Object.assign(new Error('no host'), { code: 'ECONNREFUSED' }));
      },
      establish: () => Promise.resolve(),
      policy: { initialDelayMs: 10_000, maxDelayMs: 30, giveUpAfterMs: 60_000, outageWaitMs: 0 },
      log: logger,
    });
    links.push(link);
    const lostAt = performance.now();
    await link.whenUp().catch(() => undefined); // finds the connection gone: reconnecting
    expect(link.state).toBe('reconnecting');
    await waitFor(() => at.length >= 4, { what: 'four reconnect attempts', timeoutMs: 5000 });
    const waits = [at[0]! - lostAt, ...at.slice(1).map((t, i) => t - at[i]!)];
    for (const w of waits.slice(1)) expect(w).toBeGreaterThanOrEqual(30 * 0.8 - 2); // a timer, not a spin
    expect(waits[0]!).toBeLessThan(5000); // capped: not the 10 s initial delay
    // Over a quiet 200 ms no more attempts than the minimum spacing allows.
    const n = at.length;
    await sleep(200);
    expect(at.length - n).toBeLessThanOrEqual(Math.ceil(200 / (30 * 0.8)) + 1);
    expect(link.counters.attempts).toBe(at.length);
  });
});
