import type { Argv, CommandModule } from 'yargs';
import { Demo } from '../../demo/demo.js';
import type { MemoryBackend } from '../../../memory/memory-backend.js';

interface Args {
  duration?: number;
  'dashboard-port': number;
  vms: number;
  rate: number;
  'in-process': boolean;
  seed: number;
  trace?: string;
  'memory-backend'?: MemoryBackend;
  uapi: 'vfio-sva' | 'iommufd';
}

export const demoCommand: CommandModule<object, Args> = {
  command: 'demo',
  builder: (y) =>
    y
      .option('duration', { type: 'number', describe: 'stop after this many seconds (default: run until Ctrl-C)' })
      .option('dashboard-port', { type: 'number', default: 8080, describe: 'dashboard HTTP port on 127.0.0.1 (a free port is used when it is busy; 0 = any)' })
      .option('vms', { type: 'number', default: 1, describe: 'pairs of VMs to run (each pair: one VT-d, one virtio-iommu)' })
      .option('rate', { type: 'number', default: 4, describe: 'workload operations per second per VM' })
      .option('in-process', { type: 'boolean', default: false, describe: 'run the host in this process instead of a child process' })
      .option('seed', { type: 'number', default: 1, describe: 'seed of the workload’s random choices' })
      .option('memory-backend', { choices: ['mapped', 'pread'] as const, describe: 'how both halves reach guest RAM: shared memfd mappings or positioned I/O on a file (default: mapped when the native addon is built, else pread)' })
      .option('trace', { type: 'string', describe: 'record trace events to DIR/guest.jsonl and DIR/host.jsonl (then: vsva trace export DIR/*.jsonl)' })
      .option('uapi', { choices: ['vfio-sva', 'iommufd'] as const, default: 'vfio-sva' as const, describe: 'host uAPI of the VMs: the VFIO SVA uAPI or iommufd (docs/protocol.md §13)' })
      .check((a) => {
        if (a.duration !== undefined && !(a.duration > 0)) throw new Error('--duration must be a positive number of seconds');
        if (!Number.isInteger(a.vms) || a.vms < 1 || a.vms > 32) throw new Error('--vms must be an integer in 1..32');
        if (!(a.rate > 0 && a.rate <= 1000)) throw new Error('--rate must be in (0, 1000]');
        if (!Number.isInteger(a['dashboard-port']) || a['dashboard-port'] < 0 || a['dashboard-port'] > 65535) throw new Error('--dashboard-port must be 0..65535');
        return true;
      }) as Argv<Args>,
  handler: async (args) => {
    const tty = process.stderr.isTTY === true;
    let lastPrint = 0;
    const demo = new Demo({
      ...(args.duration !== undefined ? { durationS: args.duration } : {}),
      dashboardPort: args['dashboard-port'],
      pairs: args.vms,
      rate: args.rate,
      inProcess: args['in-process'],
      ...(args['memory-backend'] !== undefined ? { memoryBackend: args['memory-backend'] } : {}),
      seed: args.seed,
      uapi: args.uapi,
      ...(args.trace !== undefined ? { traceDir: args.trace } : {}),
      onReady: ({ dashboard, vms }) => {
        process.stdout.write(`dashboard: ${dashboard}\n`);
        process.stderr.write(`running ${vms.join(', ')} — ${args.duration !== undefined ? `for ${args.duration} s` : 'press Ctrl-C to stop'}\n`);
      },
      progress: (line, final) => {
        if (tty) process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns ?? 200) - 1)}${final ? '\n' : ''}`);
        else if (final || Date.now() - lastPrint >= 5000) {
          lastPrint = Date.now();
          process.stderr.write(line + '\n');
        }
      },
    });
    let interrupts = 0;
    const onSignal = (): void => {
      interrupts++;
      if (interrupts > 1) {
        process.stderr.write('\nforced exit\n');
        process.exit(130);
      }
      process.stderr.write('\nstopping (Ctrl-C again to force)…\n');
      demo.stop();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const s = await demo.run();
      const bad = s.vms.reduce((n, v) => n + v.stats.checkFailures, 0);
      const sum = (k: 'processesStarted' | 'binds' | 'dmaJobs' | 'errors'): number => s.vms.reduce((n, v) => n + v.stats[k], 0);
      // One summary line, then one line per VM.
      process.stdout.write(
        `ran ${s.seconds.toFixed(1)} s with ${s.vms.length} VMs: ${sum('processesStarted')} processes, ${sum('binds')} binds, ${sum('dmaJobs')} DMA jobs, ${bad} check failures, ${sum('errors')} errors; everything released\n`,
      );
      for (const v of s.vms) {
        const st = v.stats;
        process.stdout.write(
          `  ${v.name} (${v.viommu}): ${st.processesStarted} processes, ${st.binds} binds / ${st.unbinds} unbinds, ${st.dmaJobs} DMA jobs (${(st.dmaBytes / 1048576).toFixed(2)} MiB), ` +
            `${v.pageRequests} page requests, ${st.unmaps} unmaps, ${st.vcmdAllocs} VCMD allocs, ${st.checkFailures} check failures, ${st.errors} errors\n`,
        );
      }
      if (bad > 0) {
        process.stderr.write(`${bad} DMA result check(s) failed\n`);
        process.exitCode = 1;
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};
