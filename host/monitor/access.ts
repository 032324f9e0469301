/**
 * Who may use the dashboard (issue 11). The rules:
 *  - The monitor binds 127.0.0.1 unless told otherwise. Binding anything that is not loopback
 *    without a token is refused (EACCES): the state of every VM would be open to the network.
 *  - A token, when given, is at least MIN_TOKEN_LENGTH printable ASCII characters.
 *  - With a token, control actions need it — in the control message or in the WebSocket URL
 *    (`/ws?token=…`, which authorizes the whole connection). Without one the monitor is
 *    read-only and refuses every control action (EPERM).
 *  - On a non-loopback bind the WebSocket (the only place data flows) needs the token in its
 *    URL; the static page holds no data and is served to anyone who can reach the port.
 *  - On a loopback bind, WebSocket upgrades must name a loopback Host (DNS-rebinding guard),
 *    and a browser's Origin, when sent, must be the page's own origin (so another web site
 *    open in the same browser cannot read the stream).
 *  Tokens are compared in constant time. `vsva host` takes the token from a file
 *  (--dashboard-token-file), the environment ($VSVA_DASHBOARD_TOKEN) or its command line
 *  (--dashboard-token, readable by any local user in /proc/PID/cmdline): docs/reliability.md §4.1.
 *  The host's monitor token (GET_STATE of every VM, docs/protocol.md §10.9) is checked with
 *  tokenMatches too.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { fail } from '../../src/errors.js';

export const MIN_TOKEN_LENGTH = 16;

export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '[::1]') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::ffff:127.0.0.1';
}

/** Check the bind address and token before anything listens; throws EACCES / EINVAL. */
export function checkBindPolicy(host: string, token: string | undefined): void {
  if (token !== undefined) {
    if (token.length < MIN_TOKEN_LENGTH || token.length > 256 || !/^[\x21-\x7e]+$/.test(token)) {
      fail('EINVAL', `dashboard token must be ${MIN_TOKEN_LENGTH}..256 printable ASCII characters without spaces`);
    }
  }
  if (!isLoopbackHost(host) && token === undefined) {
    fail('EACCES', `dashboard bind to non-loopback address '${host}' requires an access token`);
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time comparison of a presented token with the expected one. */
export function tokenMatches(expected: string | undefined, presented: string | null | undefined): boolean {
  if (expected === undefined || presented === undefined || presented === null) return false;
  return timingSafeEqual(digest(expected), digest(presented));
}

/** Host name part of a Host header value ('127.0.0.1:8080' → '127.0.0.1', '[::1]:80' → '::1'). */
function hostnameOf(hostHeader: string): string {
  if (hostHeader.startsWith('[')) {
    const end = hostHeader.indexOf(']');
    return end < 0 ? hostHeader : hostHeader.slice(1, end);
  }
  const colon = hostHeader.lastIndexOf(':');
  return colon < 0 ? hostHeader : hostHeader.slice(0, colon);
}

export interface UpgradeCheck {
  ok: boolean;
  /** HTTP status to refuse with when !ok. */
  status?: 401 | 403;
  reason?: string;
  /** The URL carried a valid token: the connection may perform control actions. */
  authorized: boolean;
}

/** Decide whether a WebSocket upgrade may proceed. */
export function checkUpgrade(opts: {
  bindHost: string;
  token: string | undefined;
  hostHeader: string | undefined;
  origin: string | undefined;
  urlToken: string | null;
}): UpgradeCheck {
  const { bindHost, token, hostHeader, origin, urlToken } = opts;
  const authorized = tokenMatches(token, urlToken);
  if (urlToken !== null && !authorized) return { ok: false, status: 401, reason: 'bad token', authorized: false };
  if (!isLoopbackHost(bindHost) && !authorized) return { ok: false, status: 401, reason: 'token required', authorized: false };
  if (hostHeader === undefined) return { ok: false, status: 403, reason: 'missing Host header', authorized };
  if (isLoopbackHost(bindHost) && !isLoopbackHost(hostnameOf(hostHeader))) {
    return { ok: false, status: 403, reason: 'Host is not a loopback name', authorized };
  }
  if (origin !== undefined) {
    let originHost: string;
    try {
      originHost = new URL(origin).host;
    } catch {
      return { ok: false, status: 403, reason: 'malformed Origin', authorized };
    }
    if (originHost.toLowerCase() !== hostHeader.toLowerCase()) return { ok: false, status: 403, reason: 'cross-origin request', authorized };
  }
  return { ok: true, authorized };
}
