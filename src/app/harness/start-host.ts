/**
 * startHost (docs/design.md §7): run the host half and return a handle.
 *
 * - spawn: true (default): `node bin/vsva.js host --socket … --exit-on-stdin-close` as a child
 *   process; resolves once its ready line arrives (rejects if it exits or stays silent for 30 s).
 *   snapshot() asks GET_STATE over a connection of its own; close() sends SIGTERM, then SIGKILL
 *   after 5 s, and removes the socket. If this process dies the child sees stdin close and exits.
 * - spawn: false: the HostServer runs in this process (snapshot() reads it directly).
 *
 * The handle also carries `pid` (the host's process) and `dashboard` (the page URL, or null).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { VsvaError, fail } from '../../errors.js';
import { TraceRecorder } from '../../trace/recorder.js';
import { checkSocketPath } from './socket-path.js';
import type { HostHandle, HostSnapshot, StartHostOptions } from '../../api/types.js';
import { FrontendClient } from '../../../vhost/roles/frontend.js';
import { ProtocolFeature } from '../../../vhost/wire/features.js';
import { HostServer, type HostServerOptions } from '../../../host/server/host-server.js';
import { startMonitor, type MonitorHandle } from '../../../host/monitor/index.js';
import type { MemoryBackend } from '../../memory/memory-backend.js';

export interface StartedHost extends HostHandle {
  /** The host's process id (this process when spawn is false). */
  readonly pid: number;
  /** Dashboard URL, or null without a dashboard. */
  readonly dashboard: string | null;
  /** The in-process server (spawn: false only). */
  readonly server?: HostServer;
}

/** Options beyond docs/design.md §7's, for harnesses and tests. */
export interface StartHostExtraOptions {
  /** Grace period for a disconnected VM (ms). */
  graceMs?: number;
  pageRequestTimeoutMs?: number;
  maxPendingPageRequests?: number;
  /** VMs the host accepts before VM_SETUP fails with ENOSPC. */
  maxVms?: number;
  /** Record the host's trace events to this file (JSON lines). */
  traceFile?: string;
  /**
   * How the host reaches guest RAM passed as descriptors: 'mapped' (default when the native addon
   * loaded) or 'pread' (docs/architecture.md "Memory model"; `vsva host --memory-backend`).
   */
  memoryBackend?: MemoryBackend;
}

const READY_TIMEOUT_MS = 30_000;
const KILL_AFTER_MS = 5_000;

function freshSocketPath(): string {
  return path.join(os.tmpdir(), `vsva-host-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
}

export async function startHost(opts: StartHostOptions & StartHostExtraOptions = {}): Promise<StartedHost> {
  const socket = opts.socket ?? freshSocketPath();
  const pasidBits = opts.pasidBits ?? 20;
  if (!Number.isInteger(pasidBits) || pasidBits < 1 || pasidBits > 20) fail('EINVAL', `pasidBits ${String(pasidBits)} is not an integer in 1..20`);
  const dashboard = opts.dashboard ?? false;
  checkSocketPath(socket);
  if (opts.spawn === false) return startInProcess(socket, pasidBits, dashboard, opts);
  return startChild(socket, pasidBits, dashboard, opts);
}

async function startInProcess(
  socket: string,
  pasidBits: number,
  dashboard: StartHostOptions['dashboard'],
  opts: StartHostExtraOptions,
): Promise<StartedHost> {
  const serverOpts: HostServerOptions = { pasidBits };
  if (opts.graceMs !== undefined) serverOpts.graceMs = opts.graceMs;
  if (opts.pageRequestTimeoutMs !== undefined) serverOpts.pageRequestTimeoutMs = opts.pageRequestTimeoutMs;
  if (opts.maxPendingPageRequests !== undefined) serverOpts.maxPendingPageRequests = opts.maxPendingPageRequests;
  if (opts.maxVms !== undefined) serverOpts.maxVms = opts.maxVms;
  if (opts.memoryBackend !== undefined) serverOpts.memoryBackend = opts.memoryBackend;
  const server = new HostServer(serverOpts);
  const recorder = opts.traceFile !== undefined ? new TraceRecorder(opts.traceFile, `in-process host ${socket}`).attach(server.trace) : null;
  await server.listen(socket);
  let monitor: MonitorHandle | null = null;
  if (dashboard) {
    try {
      monitor = await startMonitor(server.monitorSource(), { port: dashboard.port, ...(dashboard.host ? { host: dashboard.host } : {}) });
    } catch (e) {
      await server.close();
      recorder?.close();
      fs.rmSync(socket, { force: true });
      throw e;
    }
  }
  let closed = false;
  return {
    socket,
    pid: process.pid,
    dashboard: monitor?.url ?? null,
    server,
    snapshot: async () => server.snapshot(),
    close: async () => {
      if (closed) return;
      closed = true;
      await monitor?.close();
      await server.close();
      recorder?.close();
      fs.rmSync(socket, { force: true });
    },
  };
}

/**
 * How to run the host command: the same form as this file. From source (src/app/harness/*.ts,
 * inside the repository, e.g. under vitest) bin/vsva.js runs the source through tsx; compiled
 * (dist/src/app/harness/*.js, an installed package) it runs dist/, and tsx need not exist.
 */
function hostCommand(): { bin: string; env: NodeJS.ProcessEnv } {
  const fromSource = import.meta.url.endsWith('.ts');
  const bin = fileURLToPath(new URL(fromSource ? '../../../bin/vsva.js' : '../../../../bin/vsva.js', import.meta.url));
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (fromSource) env.VSVA_FROM_SOURCE = '1';
  else delete env.VSVA_FROM_SOURCE;
  return { bin, env };
}

async function startChild(
  socket: string,
  pasidBits: number,
  dashboard: StartHostOptions['dashboard'],
  opts: StartHostExtraOptions,
): Promise<StartedHost> {
  const host = hostCommand();
  const args = [host.bin, 'host', '--socket', socket, '--pasid-bits', String(pasidBits), '--exit-on-stdin-close'];
  if (dashboard) {
    args.push('--dashboard-port', String(dashboard.port));
    if (dashboard.host) args.push('--dashboard-host', dashboard.host);
  }
  if (opts.graceMs !== undefined) args.push('--grace-ms', String(opts.graceMs));
  if (opts.pageRequestTimeoutMs !== undefined) args.push('--page-request-timeout-ms', String(opts.pageRequestTimeoutMs));
  if (opts.maxPendingPageRequests !== undefined) args.push('--max-page-requests', String(opts.maxPendingPageRequests));
  if (opts.maxVms !== undefined) args.push('--max-vms', String(opts.maxVms));
  if (opts.traceFile !== undefined) args.push('--trace', opts.traceFile);
  if (opts.memoryBackend !== undefined) args.push('--memory-backend', opts.memoryBackend);
  // A process group of its own: a terminal's Ctrl-C reaches the caller only, which then shuts
  // its guests down before the host (close() or, if it dies, the end of the host's stdin).
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'], env: host.env, detached: true });
  const ready = await waitReady(child);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });

  let client: Promise<FrontendClient> | null = null;
  const connect = async (): Promise<FrontendClient> => {
    const fe = await FrontendClient.connect({ path: socket });
    await fe.handshake({ require: ProtocolFeature.REPLY_ACK | ProtocolFeature.VSVA | ProtocolFeature.VSVA_STATE });
    fe.onClose(() => {
      client = null;
    });
    return fe;
  };
  let closed = false;
  return {
    socket,
    pid: child.pid!,
    dashboard: ready.dashboard,
    snapshot: async (): Promise<HostSnapshot> => {
      if (closed) fail('ENOTCONN', 'the host handle is closed');
      client ??= connect();
      let fe: FrontendClient;
      try {
        fe = await client;
      } catch (e) {
        client = null;
        throw e;
      }
      return readSnapshotPages(fe);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      if (client) {
        try {
          (await client).close();
        } catch {
          /* the connection never came up */
        }
      }
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
        await exited;
        clearTimeout(timer);
      }
      child.stdin?.destroy();
      fs.rmSync(socket, { force: true });
    },
  };
}

function waitReady(child: ChildProcess): Promise<{ dashboard: string | null }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      cleanup();
      child.kill('SIGKILL');
      reject(new VsvaError('ETIMEDOUT', `vsva host did not report ready within ${READY_TIMEOUT_MS} ms`));
    }, READY_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        try {
          const msg = JSON.parse(line) as { ready?: boolean; dashboard?: string | null };
          if (msg.ready === true) {
            cleanup();
            // Keep draining stdout so the child never blocks on a full pipe.
            child.stdout?.resume();
            resolve({ dashboard: msg.dashboard ?? null });
            return;
          }
        } catch {
          /* not our line */
        }
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      cleanup();
      reject(new VsvaError('EIO', `vsva host exited before it was ready (code ${String(code)}, signal ${String(signal)})`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}

/** VMs per GET_STATE page the harness asks for. */
const SNAPSHOT_PAGE_VMS = 8;

/**
 * The whole HostSnapshot, read page by page (GET_STATE with a page request, docs/protocol.md
 * §10.9) so that no single reply holds the whole host; host fields are those of the last page.
 */
export async function readSnapshotPages(fe: FrontendClient, pageVms = SNAPSHOT_PAGE_VMS): Promise<HostSnapshot> {
  const vms: HostSnapshot['vms'] = [];
  let cursor = 0;
  for (;;) {
    const { json } = await fe.call('GET_STATE', { cursor, max_vms: pageVms });
    const page = JSON.parse(json) as HostSnapshot & { next: number | null; vmCount: number };
    vms.push(...page.vms);
    if (page.next === null) {
      const { next, vmCount, ...host } = page;
      void next;
      void vmCount;
      return { ...host, vms };
    }
    cursor = page.next;
  }
}
