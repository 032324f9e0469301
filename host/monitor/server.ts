/**
 * The dashboard server (docs/design.md §6): HTTP for the page's static files, a WebSocket at /ws for
 * the live state (hub.ts, protocol.ts). Access rules are in access.ts: loopback by default,
 * a token for anything else and for control actions.
 *
 * HTTP: GET/HEAD of '/' (index.html) and of the files in public/ by exact name; any other path
 * is 404, any other method 405, a plain GET of /ws 426. Responses carry a strict
 * Content-Security-Policy (own scripts and styles only, WebSocket to the same origin).
 *
 * At most `maxClients` WebSocket clients at once (default DEFAULT_MAX_DASHBOARD_CLIENTS): one
 * more upgrade is refused with HTTP 503 and logged (docs/reliability.md §4.1).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { checkBindPolicy, checkUpgrade } from './access.js';
import { DEFAULT_CHART_INTERVAL_MS } from './chart-history.js';
import { MonitorHub } from './hub.js';
import { MAX_CLIENT_MESSAGE_BYTES } from './protocol.js';
import { StaticAssets } from './static-assets.js';
import type { MonitorHandle, MonitorOptions, MonitorSource } from './types.js';

const log = childLogger('monitor');

export const WS_PATH = '/ws';

/** WebSocket clients one dashboard serves at once by default. */
export const DEFAULT_MAX_DASHBOARD_CLIENTS = 32;

/** startMonitor's options: MonitorOptions plus the client cap. */
export interface MonitorServerOptions extends MonitorOptions {
  /** WebSocket clients at once (1–10,000; default DEFAULT_MAX_DASHBOARD_CLIENTS); one more: 503. */
  maxClients?: number;
}

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

function parsePath(rawUrl: string | undefined): URL | null {
  try {
    return new URL(rawUrl ?? '/', 'http://monitor.invalid');
  } catch {
    return null;
  }
}

function plain(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': 'text/plain; charset=utf-8', ...extra });
  res.end(text + '\n');
}

function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  const text = status === 401 ? 'Unauthorized' : status === 403 ? 'Forbidden' : status === 503 ? 'Service Unavailable' : 'Not Found';
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${reason.length + 1}\r\n\r\n${reason}\n`);
}

function checkOptions(opts: MonitorOptions): Required<Omit<MonitorOptions, 'token'>> & { token: string | undefined } {
  const port = opts.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('EINVAL', `dashboard port ${port} is not in [0, 65535]`);
  const intervals: [string, number | undefined, number, number, number][] = [
    ['summaryIntervalMs', opts.summaryIntervalMs, 500, 50, 60_000],
    ['eventIntervalMs', opts.eventIntervalMs, 200, 20, 60_000],
    ['maxEventsPerBatch', opts.maxEventsPerBatch, 200, 1, 10_000],
    ['chartIntervalMs', opts.chartIntervalMs, DEFAULT_CHART_INTERVAL_MS, 20, 60_000],
  ];
  for (const [name, v, , min, max] of intervals) {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) fail('EINVAL', `dashboard ${name} ${v} is not an integer in [${min}, ${max}]`);
  }
  const host = opts.host ?? '127.0.0.1';
  checkBindPolicy(host, opts.token);
  return {
    port,
    host,
    token: opts.token,
    summaryIntervalMs: opts.summaryIntervalMs ?? 500,
    eventIntervalMs: opts.eventIntervalMs ?? 200,
    maxEventsPerBatch: opts.maxEventsPerBatch ?? 200,
    chartIntervalMs: opts.chartIntervalMs ?? DEFAULT_CHART_INTERVAL_MS,
  };
}

/**
 * Serve the dashboard for `source`. Rejects with EACCES for a non-loopback `host` without a
 * token, EINVAL for bad options, and the listen error (e.g. EADDRINUSE) if binding fails.
 */
export async function startMonitor(source: MonitorSource, options: MonitorServerOptions = {}): Promise<MonitorHandle> {
  const { maxClients = DEFAULT_MAX_DASHBOARD_CLIENTS, ...monitorOptions } = options;
  if (!Number.isInteger(maxClients) || maxClients < 1 || maxClients > 10_000) fail('EINVAL', `dashboard maxClients ${maxClients} is not an integer in [1, 10000]`);
  const opts = checkOptions(monitorOptions);
  /** Upgrades accepted and not yet handed to the hub (they count against maxClients). */
  let upgrading = 0;
  const assets = await StaticAssets.load();

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = parsePath(req.url);
    if (url === null) return plain(res, 400, 'bad request');
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
    if (url.pathname === WS_PATH) return plain(res, 426, 'WebSocket endpoint', { Upgrade: 'websocket' });
    const asset = assets.lookup(url.pathname);
    if (asset === undefined) return plain(res, 404, 'not found');
    res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': asset.contentType, 'Content-Length': asset.body.length });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_MESSAGE_BYTES, perMessageDeflate: false });
  const hub = new MonitorHub(source, opts);

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (err) => log.debug({ err }, 'dashboard upgrade socket error'));
    const url = parsePath(req.url);
    if (url === null || url.pathname !== WS_PATH) return refuseUpgrade(socket, 404, 'not found');
    const check = checkUpgrade({
      bindHost: opts.host,
      token: opts.token,
      hostHeader: req.headers.host,
      origin: req.headers.origin,
      urlToken: url.searchParams.get('token'),
    });
    if (!check.ok) {
      log.info({ reason: check.reason, remote: req.socket.remoteAddress }, 'dashboard WebSocket refused');
      return refuseUpgrade(socket, check.status ?? 403, check.reason ?? 'forbidden');
    }
    if (hub.clientCount + upgrading >= maxClients) {
      log.warn({ clients: hub.clientCount, maxClients, remote: req.socket.remoteAddress }, 'dashboard WebSocket refused: client limit');
      return refuseUpgrade(socket, 503, 'too many dashboard clients');
    }
    upgrading++;
    let counted = true;
    const uncount = (): void => {
      if (counted) upgrading--;
      counted = false;
    };
    socket.once('close', uncount);
    wss.handleUpgrade(req, socket, head, (ws) => {
      uncount();
      hub.add(ws, check.authorized);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (err) => {
    await hub.close();
    throw err;
  });

  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port;
  const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `http://${hostForUrl}:${port}/`;
  log.info({ url }, 'dashboard listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    close() {
      closing ??= (async () => {
        await hub.close();
        wss.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closing;
    },
  };
}
