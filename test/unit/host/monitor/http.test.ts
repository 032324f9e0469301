import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { connect } from 'node:net';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import { isVsvaError } from '../../../../src/errors.js';
import { FakeSource } from './fake-source.js';

/** Send a raw request line (no client-side path normalisation) and return status and body. */
function rawGet(port: number, path: string, method = 'GET'): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
    let buf = '';
    sock.on('data', (d) => (buf += d.toString('latin1')));
    sock.on('end', () => resolve({ status: Number(buf.split(' ')[1]), text: buf }));
    sock.on('error', reject);
  });
}

describe('dashboard HTTP', () => {
  let monitor: MonitorHandle;

  beforeAll(async () => {
    monitor = await startMonitor(new FakeSource());
  });
  afterAll(() => monitor.close());

  it('listens on 127.0.0.1 on an ephemeral port by default', () => {
    expect(monitor.port).toBeGreaterThan(0);
    expect(monitor.url).toBe(`http://127.0.0.1:${monitor.port}/`);
  });

  it('serves the page with a strict content security policy', async () => {
    const res = await fetch(monitor.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await res.text();
    expect(html).toContain('<script type="module" src="/dashboard.js">');
  });

  it('serves the page’s script and stylesheet with their types', async () => {
    const js = await fetch(monitor.url + 'dashboard.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await js.text()).toContain('data-testid=pasid-row');
    const css = await fetch(monitor.url + 'dashboard.css');
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
  });

  it('answers HEAD without a body', async () => {
    const res = await fetch(monitor.url + 'index.html', { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });

  it('is 404 for unknown paths', async () => {
    for (const p of ['nope', 'index.htm', 'public/index.html', 'dashboard.js/x', 'ws/x']) {
      expect((await fetch(monitor.url + p)).status, p).toBe(404);
    }
  });

  it('never serves files outside the page folder', async () => {
    const attempts = [
      '/../package.json',
      '/../../package.json',
      '/%2e%2e/%2e%2e/package.json',
      '/..%2f..%2fpackage.json',
      '/..%5c..%5cpackage.json',
      '//etc/passwd',
      '/types.ts',
      '/server.ts',
      '/./../server.ts',
      '/%2fetc%2fpasswd',
      '/index.html%00.js',
    ];
    for (const p of attempts) {
      const r = await rawGet(monitor.port, p);
      expect(r.status, p).toBe(404);
      expect(r.text).not.toContain('"name": "vsva"');
      expect(r.text).not.toContain('root:');
    }
  });

  it('refuses other methods (405) and a plain GET of the socket path (426)', async () => {
    expect((await fetch(monitor.url, { method: 'POST', body: 'x' })).status).toBe(405);
    expect((await fetch(monitor.url, { method: 'DELETE' })).status).toBe(405);
    expect((await fetch(monitor.url + 'ws')).status).toBe(426);
  });
});

describe('dashboard start-up rules', () => {
  async function startCode(opts: Parameters<typeof startMonitor>[1]): Promise<string | undefined> {
    try {
      const m = await startMonitor(new FakeSource(), opts);
      await m.close();
      return undefined;
    } catch (e) {
      return isVsvaError(e) ? e.code : String(e);
    }
  }

  it('refuses a non-loopback bind without a token, before listening', async () => {
    expect(await startCode({ host: '0.0.0.0' })).toBe('EACCES');
  });

  it('accepts a non-loopback bind with a token', async () => {
    expect(await startCode({ host: '0.0.0.0', token: 'a-long-enough-token-1' })).toBeUndefined();
  });

  it('refuses bad options with EINVAL', async () => {
    expect(await startCode({ port: 70000 })).toBe('EINVAL');
    expect(await startCode({ port: -1 })).toBe('EINVAL');
    expect(await startCode({ token: 'short' })).toBe('EINVAL');
    expect(await startCode({ summaryIntervalMs: 1 })).toBe('EINVAL');
    expect(await startCode({ chartIntervalMs: 5 })).toBe('EINVAL');
    expect(await startCode({ chartIntervalMs: 1.5 })).toBe('EINVAL');
    expect(await startCode({ maxEventsPerBatch: 0 })).toBe('EINVAL');
  });

  it('reports a port already in use', async () => {
    const first = await startMonitor(new FakeSource());
    try {
      await expect(startMonitor(new FakeSource(), { port: first.port })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    } finally {
      await first.close();
    }
  });

  it('stops listening on close, and close is idempotent', async () => {
    const m = await startMonitor(new FakeSource());
    await m.close();
    await m.close();
    await expect(fetch(m.url)).rejects.toThrow();
  });
});
