/**
 * `npm start` runs the demo: it prints the dashboard URL, the URL serves the page and live data
 * (both VMs, PASIDs bound by the workload, counters moving), and with --duration it ends by
 * itself, releases everything and exits 0.
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { WsClient } from '../../unit/host/monitor/ws-client.js';

function waitForLine(stream: NodeJS.ReadableStream, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs} ms; got: ${buf}`)), timeoutMs);
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
    const child = spawn('npm', ['start', '--silent', '--', '--duration', '8', '--dashboard-port', '0', '--rate', '8'], {
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
    const code = await exited;
    expect(code, `stderr: ${stderr}`).toBe(0);
    expect(stdout).toContain('everything released');
    expect(stdout).toMatch(/vtd-vm0 \(vtd\): \d+ processes, [1-9]\d* binds/);
    expect(stdout).toMatch(/virtio-vm1 \(virtio\): \d+ processes, [1-9]\d* binds/);
    expect(stdout).not.toMatch(/[1-9]\d* check failures/);
  }, 40_000);

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
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGINT');
    expect(await exited, `stderr: ${stderr}`).toBe(0);
    expect(stderr).toContain('stopping');
    expect(stdout).toContain('everything released');
  }, 40_000);
});
