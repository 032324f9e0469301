/**
 * startHost (docs/design.md §7): run the host half and return a handle.
 *
 * - spawn: true (default): `node bin/vsva.js host --socket … --exit-on-stdin-close` as a child
 *   process; resolves once its ready line arrives (rejects if it exits or stays silent for 30 s).
 *   snapshot() asks GET_STATE over a connection of its own, presenting the host's monitor token
 *   (docs/protocol.md §10.9: without it a connection sees only its own VM); close() sends SIGTERM, then SIGKILL
 *   after 5 s, and removes the socket. If this process dies the child sees stdin close and exits.
 * - spawn: false: the HostServer runs in this process (snapshot() reads it directly).
 *
 * The handle also carries `pid` (the host's process), `dashboard` (the page URL, or null) and
 * `monitorToken` (given, or a fresh random one; the child gets it through VSVA_MONITOR_TOKEN,
 * never on its command line).
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
import { nativeAvailable } from '../../native/native.js';
import { harnessMemoryDir } from './harness-memory-dir.js';
import { checkMonitorToken } from '../../../vhost/messages/vm.js';
import type { ConnectionLimits } from '../../../vhost/roles/connection-limits.js';

/** The environment variable `vsva host` reads its monitor token from (src/app/cli/commands/host.ts). */
const MONITOR_TOKEN_ENV = 'VSVA_MONITOR_TOKEN';

export interface StartedHost extends HostHandle {
  /** The host's process id (this process when spawn is false). */
  readonly pid: number;
  /** Dashboard URL, or null without a dashboard. */
  readonly dashboard: string | null;
  /** The host's monitor token: GET_STATE page requests that present it see every VM. */
  readonly monitorToken: string;
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
  /** The host's monitor token (16–63 printable ASCII characters; default: a fresh random one). */
  monitorToken?: string;
  /** VMs created from one peer uid before VM_SETUP fails with EUSERS (`vsva host --max-vms-per-uid`). */
  maxVmsPerUid?: number;
  /** The quota VM_SETUP's quota 0 stands for (`vsva host --default-vm-quota`). */
  defaultVmQuota?: number;
  /** Connection limits (vhost/roles/connection-limits.ts; `vsva host --max-connections` etc.). */
  connectionLimits?: Partial<ConnectionLimits>;
  /**
   * `vsva host --allow-memory-paths DIR`: guests may name RAM files in DIR (owned by the host's
   * user, mode 0700). Default: $VSVA_ALLOW_MEMORY_PATHS when set, else — without the native
   * addon or with memoryBackend 'pread' — this process's private harness directory, which
   * startGuest uses too; false: never (descriptors only).
   */
  allowMemoryPaths?: string | false;
  /**
   * `vsva host --state-dir`: the VM registry kept across host restarts. Spawned hosts default to
   * `<socket>.state`, which close() removes (a restart through close() then starts afresh);
   * in-process hosts keep none unless given.
   */
  stateDir?: string;
  /** `vsva host --reservation-ms`: how long a restarted host keeps the previous VMs' names for them. */
  reservationMs?: number;
}

/** The environment variable `vsva host` reads --allow-memory-paths from (src/app/cli/commands/host.ts). */
const ALLOW_MEMORY_PATHS_ENV = 'VSVA_ALLOW_MEMORY_PATHS';

/**
 * allowMemoryPaths as the host gets it: the option, else the environment variable, else — when
 * guest RAM will be announced by path (no native addon, or the 'pread' backend asked for) — this
 * process's private harness directory (harness-memory-dir.ts), where startGuest puts it; false:
 * none.
 */
function memoryPathsDir(opts: StartHostExtraOptions): string | undefined {
  if (opts.allowMemoryPaths === false) return undefined;
  const given = opts.allowMemoryPaths ?? (process.env[ALLOW_MEMORY_PATHS_ENV] || undefined);
  if (given !== undefined) return given;
  return !nativeAvailable() || opts.memoryBackend === 'pread' ? harnessMemoryDir() : undefined;
}

/** `vsva host` options for each connection limit. */
const LIMIT_OPTIONS: Record<keyof ConnectionLimits, string | null> = {
  maxConnections: '--max-connections',
  maxConnectionsPerUid: '--max-connections-per-uid',
  idleTimeoutMs: '--idle-timeout-ms',
  setupTimeoutMs: '--setup-timeout-ms',
  halfFrameTimeoutMs: '--half-frame-timeout-ms',
  maxIncomingBytes: null,
  maxOutgoingBytes: '--max-outgoing-bytes',
};

/** A fresh monitor token: 32 characters of base64url (192 random bits). */
export function freshMonitorToken(): string {
  return randomBytes(24).toString('base64url');
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
  const allowPaths = memoryPathsDir(opts);
  if (allowPaths !== undefined) serverOpts.allowMemoryPaths = allowPaths;
  if (opts.stateDir !== undefined) serverOpts.stateDir = opts.stateDir;
  if (opts.reservationMs !== undefined) serverOpts.reservationMs = opts.reservationMs;
  const monitorToken = opts.monitorToken ?? freshMonitorToken();
  serverOpts.monitorToken = monitorToken;
  if (opts.maxVmsPerUid !== undefined) serverOpts.maxVmsPerUid = opts.maxVmsPerUid;
  if (opts.defaultVmQuota !== undefined) serverOpts.defaultVmQuota = opts.defaultVmQuota;
  if (opts.connectionLimits !== undefined) serverOpts.connectionLimits = opts.connectionLimits;
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
    monitorToken,
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
  const monitorToken = opts.monitorToken ?? freshMonitorToken();
  checkMonitorToken(monitorToken);
  host.env[MONITOR_TOKEN_ENV] = monitorToken;
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
  if (opts.maxVmsPerUid !== undefined) args.push('--max-vms-per-uid', String(opts.maxVmsPerUid));
  if (opts.defaultVmQuota !== undefined) args.push('--default-vm-quota', String(opts.defaultVmQuota));
  for (const [key, value] of Object.entries(opts.connectionLimits ?? {}) as [keyof ConnectionLimits, number | undefined][]) {
    const flag = LIMIT_OPTIONS[key];
    if (value === undefined) continue;
    if (flag === null) fail('EINVAL', `startHost: connection limit ${key} has no \`vsva host\` option (in-process hosts only)`);
    args.push(flag, String(value));
  }
  delete host.env[ALLOW_MEMORY_PATHS_ENV];
  const allowPaths = memoryPathsDir(opts);
  if (allowPaths !== undefined) args.push('--allow-memory-paths', allowPaths);
  const stateDir = opts.stateDir ?? `${socket}.state`;
  args.push('--state-dir', stateDir);
  if (opts.reservationMs !== undefined) args.push('--reservation-ms', String(opts.reservationMs));
  // A process group of its own: a terminal's Ctrl-C reaches the caller only, which then shuts
  // its guests down before the host (close() or, if it dies, the end of the host's stdin).
  const child = spawn(process.execPath, [...youngGenerationFlags(host.env), ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: host.env, detached: true });
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
    monitorToken,
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
      return readSnapshotPages(fe, SNAPSHOT_PAGE_VMS, monitorToken);
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
      if (opts.stateDir === undefined) fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * The node flag that keeps the host's young generation at 1 MiB a semi-space, so that one
 * scavenge stops every VM for ≈ 0.2–1 ms, not the 3–7 ms of V8's grown default (bin/
 * young-generation.js, which `vsva host` applies at start, says why). On the command line it
 * holds for the process's life (the flag that bin/vsva.js sets at run time is undone when a
 * worker thread starts, as the tsx loader of a run from source does). None when NODE_OPTIONS
 * sizes the young generation itself.
 */
function youngGenerationFlags(env: NodeJS.ProcessEnv): string[] {
  return /--(max|min)-semi-space-size\b|--semi-space-growth-factor\b/.test(env.NODE_OPTIONS ?? '') ? [] : ['--max-semi-space-size=1'];
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
 * The HostSnapshot, read page by page (GET_STATE with a page request, docs/protocol.md §10.9)
 * so that no single reply holds the whole host; host fields are those of the last page. With
 * the host's monitor token it holds every VM; without, only the VM of `fe`'s connection (EPERM
 * before its VM_SETUP).
 */
export async function readSnapshotPages(fe: FrontendClient, pageVms = SNAPSHOT_PAGE_VMS, monitorToken?: string): Promise<HostSnapshot> {
  const vms: HostSnapshot['vms'] = [];
  let cursor = 0;
  for (;;) {
    const { json } = await fe.call('GET_STATE', monitorToken === undefined ? { cursor, max_vms: pageVms } : { cursor, max_vms: pageVms, monitor_token: monitorToken });
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
