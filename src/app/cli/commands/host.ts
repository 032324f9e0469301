/**
 * `vsva host`: serve guests on a Unix socket (docs/design.md §8). When ready it prints one JSON line on
 * stdout — {"ready":true,"socket":…,"pid":…,"dashboard":url|null} — so a parent (startHost, a
 * harness) can wait for it. SIGTERM / SIGINT (and, with --exit-on-stdin-close, the end of
 * stdin) shut it down cleanly: connections closed, every VM released, socket removed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { CommandModule } from 'yargs';
import { logger } from '../../../log.js';
import { TraceRecorder } from '../../../trace/recorder.js';
import { HostServer, DEFAULT_GRACE_MS, DEFAULT_MAX_VMS } from '../../../../host/server/index.js';
import { DEFAULT_MAX_PENDING_PAGE_REQUESTS, DEFAULT_PAGE_REQUEST_TIMEOUT_MS } from '../../../../host/devices/page-requests.js';
import { startMonitor, type MonitorHandle } from '../../../../host/monitor/index.js';
import { checkSocketPath } from '../../harness/socket-path.js';
import type { MemoryBackend } from '../../../memory/memory-backend.js';

interface Args {
  socket?: string;
  'pasid-bits': number;
  'dashboard-port'?: number;
  'dashboard-host': string;
  'dashboard-token'?: string;
  'grace-ms': number;
  'page-request-timeout-ms': number;
  'max-page-requests': number;
  'max-vms': number;
  trace?: string;
  'memory-backend'?: MemoryBackend;
  'exit-on-stdin-close': boolean;
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
      .option('dashboard-token', { type: 'string', describe: 'dashboard access token (≥ 16 characters): control actions and non-loopback binds' })
      .option('grace-ms', { type: 'number', default: DEFAULT_GRACE_MS, describe: "keep a disconnected VM's state this long for a reconnect with its token (0: release at once)" })
      .option('page-request-timeout-ms', { type: 'number', default: DEFAULT_PAGE_REQUEST_TIMEOUT_MS, describe: 'how long a device waits for a PAGE_RESPONSE' })
      .option('max-page-requests', { type: 'number', default: DEFAULT_MAX_PENDING_PAGE_REQUESTS, describe: 'outstanding page requests per VM before DMA fails with EAGAIN' })
      .option('max-vms', { type: 'number', default: DEFAULT_MAX_VMS, describe: 'VMs (connected or in their grace period) before VM_SETUP fails with ENOSPC' })
      .option('trace', { type: 'string', describe: "record the host's trace events (allocations, binds, invalidations, faults, page requests, messages, DMA) to this file (JSON lines; see vsva trace export)" })
      .option('memory-backend', { choices: ['mapped', 'pread'] as const, describe: "reach guest RAM passed as descriptors by shared mapping or positioned I/O (default: mapped when the native addon is built, else pread)" })
      .option('exit-on-stdin-close', { type: 'boolean', default: false, describe: 'shut down when stdin ends (for a supervising parent)' }) as never,
  handler: async (args) => {
    const socket = args.socket ?? defaultSocketPath();
    checkSocketPath(socket);
    const server = new HostServer({
      pasidBits: args['pasid-bits'],
      graceMs: args['grace-ms'],
      pageRequestTimeoutMs: args['page-request-timeout-ms'],
      maxPendingPageRequests: args['max-page-requests'],
      maxVms: args['max-vms'],
      ...(args['memory-backend'] !== undefined ? { memoryBackend: args['memory-backend'] } : {}),
    });
    const recorder = args.trace ? new TraceRecorder(args.trace, `vsva host ${socket}`).attach(server.trace) : null;
    await server.listen(socket);
    let monitor: MonitorHandle | null = null;
    if (args['dashboard-port'] !== undefined) {
      try {
        monitor = await startMonitor(server.monitorSource(), {
          port: args['dashboard-port'],
          host: args['dashboard-host'],
          ...(args['dashboard-token'] !== undefined ? { token: args['dashboard-token'] } : {}),
        });
      } catch (e) {
        await server.close();
        fs.rmSync(socket, { force: true });
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
        fs.rmSync(socket, { force: true });
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
