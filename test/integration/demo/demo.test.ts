/**
 * `npm start` runs the demo: it prints the dashboard URL, the URL serves the page and live data
 * (both VMs, PASIDs bound by the workload, counters moving), and with --duration it ends by
 * itself, releases everything and exits 0.
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { WsClient } from '../../unit/host/monitor/ws-client.js';
import { scaled, sleep, withDeadline } from '../../support/wait.js';

/** The first match of `re` in the stream's output; `timeoutMs` is the idle-machine deadline (scaled). */
function waitForLine(stream: NodeJS.ReadableStream, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const limit = scaled(timeoutMs);
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${limit} ms; got: ${buf}`)), limit);
    stream.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      const m = re.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
}

describe('npm start (vsva demo)', () => {
  it('prints the dashboard URL, serves live data, and exits 0 after --duration', async () => {
    // The run's length includes start-up, so it scales with the machine's slowdown too.
    const child = spawn('npm', ['start', '--silent', '--', '--duration', String(scaled(8000) / 1000), '--dashboard-port', '0', '--rate', '8'], {
      env: { ...process.env, VSVA_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const [, url] = await waitForLine(child.stdout, /dashboard: (http:\/\/127\.0\.0\.1:\d+\/)\n/, 20_000);
      const page = await fetch(url!);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<html');

      const ws = await WsClient.open(url!.replace('http:', 'ws:') + 'ws', { origin: new URL(url!).origin });
      const first = await ws.next('summary', () => true, 5000);
      expect(first.summary.vms.map((v: { name: string }) => v.name).sort()).toEqual(['virtio-vm1', 'vtd-vm0']);
      // Live: the workload binds processes (PASIDs in use) and the counters move.
      const live = await ws.next('summary', (m) => m.summary.vms.every((v: { used: number }) => v.used > 0) && m.summary.totals.binds > 0, 6000);
      expect(live.summary.connectedCount).toBe(2);
      ws.ws.close();
    } catch (e) {
      child.kill('SIGKILL');
      throw new Error(`${(e as Error).message}\nstdout: ${stdout}\nstderr: ${stderr}`);
    }
    const code = await withDeadline(exited, { what: 'demo exit after --duration', timeoutMs: 20_000 }).catch((e: unknown) => {
      child.kill('SIGKILL');
      throw e;
    });
    expect(code, `stderr: ${stderr}`).toBe(0);
    expect(stdout).toContain('everything released');
    expect(stdout).toMatch(/vtd-vm0 \(vtd\): \d+ processes, [1-9]\d* binds/);
    expect(stdout).toMatch(/virtio-vm1 \(virtio\): \d+ processes, [1-9]\d* binds/);
    expect(stdout).not.toMatch(/[1-9]\d* check failures/);
  }, scaled(40_000));

  it('stops cleanly on Ctrl-C (SIGINT) and exits 0', async () => {
    const child = spawn(process.execPath, ['bin/vsva.js', 'demo', '--dashboard-port', '0', '--in-process'], { env: { ...process.env, VSVA_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitForLine(child.stdout, /dashboard: http/, 20_000);
      await waitForLine(child.stderr, /press Ctrl-C to stop/, 5000);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    await sleep(1500);
    child.kill('SIGINT');
    const code = await withDeadline(exited, { what: 'demo exit after SIGINT', timeoutMs: 15_000 }).catch((e: unknown) => {
      child.kill('SIGKILL');
      throw e;
    });
    expect(code, `stderr: ${stderr}`).toBe(0);
    expect(stderr).toContain('stopping');
    expect(stdout).toContain('everything released');
  }, scaled(40_000));
});
