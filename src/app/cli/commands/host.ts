/**
 * `vsva host`: serve guests on a Unix socket (docs/design.md §8). When ready it prints one JSON line on
 * stdout — {"ready":true,"socket":…,"pid":…,"dashboard":url|null} — so a parent (startHost, a
 * harness) can wait for it. SIGTERM / SIGINT (and, with --exit-on-stdin-close, the end of
 * stdin) shut it down cleanly: connections closed, every VM released, socket removed.
 *
 * One host per socket: a path a live host listens on is EADDRINUSE (exit 1, before anything
 * else starts); a stale socket file is replaced; the socket is mode 0600 (0660 with
 * --socket-group), and on exit only this host's own socket is removed (socket-file.ts in
 * vhost/transport). Limits and tokens: docs/reliability.md §4.1.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { CommandModule } from 'yargs';
import { logger } from '../../../log.js';
import { TraceRecorder } from '../../../trace/recorder.js';
import { HostServer, DEFAULT_GRACE_MS, DEFAULT_MAX_VMS } from '../../../../host/server/index.js';
import { DEFAULT_MAX_VMS_PER_UID, DEFAULT_VM_QUOTA } from '../../../../host/server/host-server.js';
import {
  DEFAULT_HALF_FRAME_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_OUTGOING_BYTES, DEFAULT_SETUP_TIMEOUT_MS, type ConnectionLimits,
} from '../../../../vhost/roles/connection-limits.js';
import { clearStaleSocket } from '../../../../vhost/transport/socket-file.js';
import { DEFAULT_MAX_DASHBOARD_CLIENTS } from '../../../../host/monitor/server.js';
import { groupId } from './group-id.js';
import { DEFAULT_MAX_PENDING_PAGE_REQUESTS, DEFAULT_PAGE_REQUEST_TIMEOUT_MS } from '../../../../host/devices/page-requests.js';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import { checkSocketPath } from '../../harness/socket-path.js';
import type { MemoryBackend } from '../../../memory/memory-backend.js';
import { resolveSecret } from './secret-option.js';

/** Environment variables `vsva host` reads its tokens from when no option gives them. */
export const MONITOR_TOKEN_ENV = 'VSVA_MONITOR_TOKEN';
export const DASHBOARD_TOKEN_ENV = 'VSVA_DASHBOARD_TOKEN';
/** Environment variable `vsva host` reads --allow-memory-paths from when the option is absent. */
export const ALLOW_MEMORY_PATHS_ENV = 'VSVA_ALLOW_MEMORY_PATHS';

interface Args {
  socket?: string;
  'pasid-bits': number;
  'dashboard-port'?: number;
  'dashboard-host': string;
  'dashboard-token'?: string;
  'dashboard-token-file'?: string;
  'monitor-token'?: string;
  'monitor-token-file'?: string;
  'grace-ms': number;
  'page-request-timeout-ms': number;
  'max-page-requests': number;
  'max-vms': number;
  trace?: string;
  'memory-backend'?: MemoryBackend;
  'allow-memory-paths'?: string;
  'state-dir'?: string;
  'reservation-ms'?: number;
  'exit-on-stdin-close': boolean;
  'socket-group'?: string;
  'max-vms-per-uid': number;
  'default-vm-quota': number;
  'max-connections'?: number;
  'max-connections-per-uid'?: number;
  'idle-timeout-ms': number;
  'setup-timeout-ms': number;
  'half-frame-timeout-ms': number;
  'max-outgoing-bytes': number;
  'dashboard-max-clients': number;
}

export function defaultSocketPath(): string {
  return path.join(os.tmpdir(), `vsva-host-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
}

export const hostCommand: CommandModule<object, Args> = {
  command: 'host',
  builder: (y) =>
    y
      .option('socket', { type: 'string', describe: 'Unix socket path to listen on (default: a fresh path in the OS temp dir)' })
      .option('pasid-bits', { type: 'number', default: 20, describe: 'host PASID width in bits (1–20); capacity is 2^bits − 1 PASIDs' })
      .option('dashboard-port', { type: 'number', describe: 'serve the dashboard on this TCP port (0: any free port)' })
      .option('dashboard-host', { type: 'string', default: '127.0.0.1', describe: 'address the dashboard binds (non-loopback needs --dashboard-token)' })
      .option('dashboard-token', { type: 'string', describe: `dashboard access token (≥ 16 characters): control actions and non-loopback binds; visible to local users in /proc — prefer --dashboard-token-file or $${DASHBOARD_TOKEN_ENV}` })
      .option('dashboard-token-file', { type: 'string', describe: `read the dashboard token from this file (default: $${DASHBOARD_TOKEN_ENV})` })
      .option('monitor-token', { type: 'string', describe: `token (16–63 printable characters) that lets a protocol client read every VM with GET_STATE; visible to local users in /proc — prefer --monitor-token-file or $${MONITOR_TOKEN_ENV}` })
      .option('monitor-token-file', { type: 'string', describe: `read the monitor token from this file (default: $${MONITOR_TOKEN_ENV}; none: GET_STATE shows each connection its own VM only)` })
      .option('grace-ms', { type: 'number', default: DEFAULT_GRACE_MS, describe: "keep a disconnected VM's state this long for a reconnect with its token (0: release at once)" })
      .option('page-request-timeout-ms', { type: 'number', default: DEFAULT_PAGE_REQUEST_TIMEOUT_MS, describe: 'how long a device waits for a PAGE_RESPONSE' })
      .option('max-page-requests', { type: 'number', default: DEFAULT_MAX_PENDING_PAGE_REQUESTS, describe: 'outstanding page requests per VM before DMA fails with EAGAIN' })
      .option('max-vms', { type: 'number', default: DEFAULT_MAX_VMS, describe: 'VMs (connected or in their grace period) before VM_SETUP fails with ENOSPC' })
      .option('trace', { type: 'string', describe: "record the host's trace events (allocations, binds, invalidations, faults, page requests, messages, DMA) to this file (JSON lines; see vsva trace export)" })
      .option('memory-backend', { choices: ['mapped', 'pread'] as const, describe: "reach guest RAM passed as descriptors by shared mapping or positioned I/O (default: mapped when the native addon is built, else pread)" })
      .option('allow-memory-paths', { type: 'string', describe: `let guests name RAM files in this directory (SET_MEM_TABLE path form; it must be owned by the host's user, mode 0700). Default: $${ALLOW_MEMORY_PATHS_ENV}; none: guest RAM only as passed file descriptors` })
      .option('state-dir', { type: 'string', describe: "directory (0700) where the host keeps its VMs' names, token hashes and RAM files across restarts (default: <socket>.state)" })
      .option('reservation-ms', { type: 'number', describe: 'after a restart, how long the VMs of the previous run keep their names and RAM for their session tokens (default: max(2 × grace-ms, 10000))' })
      .option('socket-group', { type: 'string', describe: 'give the socket this group (name or id) and mode 0660 (default: mode 0600, the host user only)' })
      .option('max-vms-per-uid', { type: 'number', default: DEFAULT_MAX_VMS_PER_UID, describe: 'VMs created from one peer uid (SO_PEERCRED) before VM_SETUP fails with EUSERS' })
      .option('default-vm-quota', { type: 'number', default: DEFAULT_VM_QUOTA, describe: 'PASID quota of a VM whose VM_SETUP asks for quota 0 (or what capacity is left, if less)' })
      .option('max-connections', { type: 'number', describe: 'connections open at once; one more is refused with EMFILE (default: 2 × max-vms + 64, kept under the open-file limit)' })
      .option('max-connections-per-uid', { type: 'number', describe: 'connections open at once from one uid; one more is refused with EUSERS (default: 2 × max-vms-per-uid + 32)' })
      .option('idle-timeout-ms', { type: 'number', default: DEFAULT_IDLE_TIMEOUT_MS, describe: 'close a connection that holds no VM after this long without a message (0: never)' })
      .option('setup-timeout-ms', { type: 'number', default: DEFAULT_SETUP_TIMEOUT_MS, describe: 'close a connection that has set up no VM this long after connecting (0: never; monitor connections are exempt)' })
      .option('half-frame-timeout-ms', { type: 'number', default: DEFAULT_HALF_FRAME_TIMEOUT_MS, describe: 'close a connection whose frame stays unfinished this long (0: never)' })
      .option('max-outgoing-bytes', { type: 'number', default: DEFAULT_MAX_OUTGOING_BYTES, describe: 'unsent reply bytes per connection before the host stops reading it (still over while paused: closed)' })
      .option('dashboard-max-clients', { type: 'number', default: DEFAULT_MAX_DASHBOARD_CLIENTS, describe: 'WebSocket clients of the dashboard at once; one more is refused (HTTP 503)' })
      .option('exit-on-stdin-close', { type: 'boolean', default: false, describe: 'shut down when stdin ends (for a supervising parent)' }) as never,
  handler: async (args) => {
    const socket = args.socket ?? defaultSocketPath();
    checkSocketPath(socket);
    const gid = args['socket-group'] !== undefined ? groupId(args['socket-group']) : undefined;
    // Before anything else: a live host on this path keeps it (EADDRINUSE, exit 1).
    await clearStaleSocket(socket);
    const monitorToken = resolveSecret({ what: 'monitor token', inline: args['monitor-token'], file: args['monitor-token-file'], envName: MONITOR_TOKEN_ENV });
    const dashboardToken = resolveSecret({ what: 'dashboard token', inline: args['dashboard-token'], file: args['dashboard-token-file'], envName: DASHBOARD_TOKEN_ENV });
    const server = new HostServer({
      pasidBits: args['pasid-bits'],
      graceMs: args['grace-ms'],
      pageRequestTimeoutMs: args['page-request-timeout-ms'],
      maxPendingPageRequests: args['max-page-requests'],
      maxVms: args['max-vms'],
      ...(args['memory-backend'] !== undefined ? { memoryBackend: args['memory-backend'] } : {}),
      ...(monitorToken !== undefined ? { monitorToken } : {}),
      ...memoryPathOptions(args, socket),
      maxVmsPerUid: args['max-vms-per-uid'],
      defaultVmQuota: args['default-vm-quota'],
      connectionLimits: connectionLimits(args),
    });
    const recorder = args.trace ? new TraceRecorder(args.trace, `vsva host ${socket}`).attach(server.trace) : null;
    await server.listen(socket, gid === undefined ? {} : { gid });
    let monitor: MonitorHandle | null = null;
    if (args['dashboard-port'] !== undefined) {
      try {
        monitor = await startMonitor(server.monitorSource(), {
          port: args['dashboard-port'],
          host: args['dashboard-host'],
          ...(dashboardToken !== undefined ? { token: dashboardToken } : {}),
          maxClients: args['dashboard-max-clients'],
        });
      } catch (e) {
        await server.close();
        throw e;
      }
    }
    let stopping = false;
    const stop = async (why: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      logger.info({ why }, 'host shutting down');
      try {
        await monitor?.close();
        await server.close();
      } finally {
        recorder?.close();
        process.exit(0);
      }
    };
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGINT', () => void stop('SIGINT'));
    if (args['exit-on-stdin-close']) {
      process.stdin.on('end', () => void stop('stdin closed'));
      process.stdin.on('error', () => void stop('stdin error'));
      process.stdin.resume();
    }
    process.stdout.write(JSON.stringify({ ready: true, socket, pid: process.pid, dashboard: monitor?.url ?? null }) + '\n');
    // Keep running until a signal arrives.
    await new Promise<never>(() => {});
  },
};

/** The connection limits given on the command line (the rest: HostServer's defaults). */
function connectionLimits(args: Args): Partial<ConnectionLimits> {
  return {
    idleTimeoutMs: args['idle-timeout-ms'],
    setupTimeoutMs: args['setup-timeout-ms'],
    halfFrameTimeoutMs: args['half-frame-timeout-ms'],
    maxOutgoingBytes: args['max-outgoing-bytes'],
    ...(args['max-connections'] !== undefined ? { maxConnections: args['max-connections'] } : {}),
    ...(args['max-connections-per-uid'] !== undefined ? { maxConnectionsPerUid: args['max-connections-per-uid'] } : {}),
  };
}

/** --allow-memory-paths (or its environment variable), --state-dir (default <socket>.state), --reservation-ms. */
function memoryPathOptions(args: Args, socket: string): { allowMemoryPaths?: string; stateDir: string; reservationMs?: number } {
  const allow = args['allow-memory-paths'] ?? (process.env[ALLOW_MEMORY_PATHS_ENV] || undefined);
  return {
    stateDir: args['state-dir'] ?? `${socket}.state`,
    ...(allow !== undefined ? { allowMemoryPaths: allow } : {}),
    ...(args['reservation-ms'] !== undefined ? { reservationMs: args['reservation-ms'] } : {}),
  };
}
