/**
 * Child process of reconnect-keepalive.test.ts: a HostLink whose host is gone (connect always
 * fails) and one request waiting for it, nothing else alive in the process. Prints the request's
 * outcome; the process must live until then (not exit 13 with the await unsettled).
 */
import { HostLink } from '../../../guest/reconnect.js';
import { logger } from '../../../src/log.js';
import type { FrontendClient } from '../../../vhost/roles/frontend.js';

const dead = { closed: true, onClose: () => undefined, close: () => undefined, call: () => Promise.reject(new Error('unused')) } as unknown as FrontendClient;
const link = new HostLink(dead, {
  connect: () => Promise.reject(Object.assign(new Error('no host'), { code: 'ECONNREFUSED' })),
  establish: () => Promise.resolve(),
  policy: { initialDelayMs: 20, maxDelayMs: 50, outageWaitMs: 400 },
  log: logger,
});
try {
  await link.call('GET_STATE');
  process.stdout.write('resolved\n');
} catch (e) {
  process.stdout.write(`${(e as { code?: string }).code ?? String(e)} after ${link.counters.attempts > 0 ? 'attempts' : 'no attempt'}\n`);
}
link.close();
