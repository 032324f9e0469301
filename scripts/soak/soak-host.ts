/**
 * The soak's host: one `vsva host` process on a fixed socket and state directory, started with
 * --expose-gc (NODE_OPTIONS) so that its dashboard pong reports heap in use right after a full
 * collection (host/monitor/host-figures.ts). `restart()` kills it with SIGKILL and starts a new
 * one on the same socket (guests reconnect by themselves); an exit the soak did not cause is
 * counted as a crash.
 */
import * as fs from 'node:fs';
import { WebSocket } from 'ws';
import { startHost, freshMonitorToken, type StartedHost } from '../../src/app/harness/start-host.js';
import type { HostFigures } from '../../host/monitor/types.js';

const PONG_TIMEOUT_MS = 10_000;

export class SoakHost {
  private handle!: StartedHost;
  private ws: WebSocket | null = null;
  private pings = 0;
  private readonly waiting = new Map<number, (f: HostFigures | null) => void>();
  private readonly monitorToken = freshMonitorToken();
  /** Host processes started (1 + restarts). */
  instances = 0;
  /** Host processes that exited without the soak killing them. */
  crashes = 0;
  private expectingExit = false;

  constructor(
    readonly socket: string,
    readonly stateDir: string,
    private readonly graceMs: number,
  ) {}

  get pid(): number {
    return this.handle.pid;
  }

  get current(): StartedHost {
    return this.handle;
  }

  async start(): Promise<void> {
    const prev = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = [prev, '--expose-gc'].filter((s) => s !== undefined && s !== '').join(' ');
    try {
      this.handle = await startHost({ socket: this.socket, stateDir: this.stateDir, graceMs: this.graceMs, dashboard: { port: 0 }, monitorToken: this.monitorToken });
    } finally {
      if (prev === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = prev;
    }
    this.instances++;
    this.expectingExit = false;
    this.watchExit(this.handle.pid);
    await this.openDashboard();
  }

  /** SIGKILL the host and start a new one on the same socket. */
  async restart(): Promise<void> {
    this.expectingExit = true;
    this.closeDashboard();
    const pid = this.handle.pid;
    process.kill(pid, 'SIGKILL');
    await waitGone(pid);
    await this.handle.close().catch(() => undefined);
    await this.start();
  }

  /** The host's own figures (dashboard pong), or null when it does not answer in time. */
  figures(): Promise<HostFigures | null> {
    const ws = this.ws;
    if (ws === null || ws.readyState !== WebSocket.OPEN) return Promise.resolve(null);
    const id = ++this.pings;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(null);
      }, PONG_TIMEOUT_MS);
      this.waiting.set(id, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      ws.send(JSON.stringify({ type: 'ping', id }));
    });
  }

  async close(): Promise<void> {
    this.expectingExit = true;
    this.closeDashboard();
    await this.handle.close();
    fs.rmSync(this.stateDir, { recursive: true, force: true });
  }

  private watchExit(pid: number): void {
    const timer = setInterval(() => {
      if (pid !== this.handle.pid) return clearInterval(timer);
      if (alive(pid)) return;
      clearInterval(timer);
      if (!this.expectingExit) {
        this.crashes++;
        process.stderr.write(`[soak] host ${pid} exited on its own\n`);
      }
    }, 500);
    timer.unref();
  }

  private openDashboard(): Promise<void> {
    const url = this.handle.dashboard!.replace(/^http/, 'ws') + 'ws';
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString()) as { type: string; id?: number; host?: HostFigures };
        if (m.type !== 'pong' || m.id === undefined) return;
        this.waiting.get(m.id)?.(m.host ?? null);
        this.waiting.delete(m.id);
      });
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error('dashboard: no WebSocket connection within 15 s'));
      }, 15_000);
      ws.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      ws.once('open', () => {
        clearTimeout(timer);
        this.ws = ws;
        resolve();
      });
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`dashboard: HTTP ${res.statusCode}`));
      });
    });
  }

  private closeDashboard(): void {
    this.ws?.close();
    this.ws = null;
    for (const fn of this.waiting.values()) fn(null);
    this.waiting.clear();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie (killed, not yet reaped) still answers signal 0: read its state.
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 500 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
}
