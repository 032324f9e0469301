import type { Argv, CommandModule } from 'yargs';
import { startGuest } from '../../harness/start-guest.js';
import type { DeviceKind, DeviceSpec } from '../../../api/types.js';
import { parseBdf } from '../../../pci.js';
import { startSvaGuest } from '../../../../guest/workload/index.js';
import { MixedWorkload } from '../../demo/mixed-workload.js';
import { TraceBus } from '../../../trace/bus.js';
import { TraceRecorder } from '../../../trace/recorder.js';
import type { MemoryBackend } from '../../../memory/memory-backend.js';

interface Args {
  socket: string;
  name?: string;
  viommu: 'vtd' | 'virtio';
  memory: number;
  quota: number;
  vcmd: string;
  uapi: 'vfio-sva' | 'iommufd';
  device: string[];
  workload: 'mixed' | 'idle';
  duration?: number;
  rate: number;
  seed: number;
  trace?: string;
  'memory-backend'?: MemoryBackend;
  'memory-path'?: string;
}

/** '00:03.0' or '00:03.0:adi' → a device spec (checked). */
export function parseDeviceArg(s: string): DeviceSpec {
  const m = /^(.+?)(?::(pf|adi))?$/.exec(s);
  const bdf = m?.[1] ?? s;
  parseBdf(bdf);
  return { bdf, kind: (m?.[2] as DeviceKind | undefined) ?? 'pf' };
}

export const guestCommand: CommandModule<object, Args> = {
  command: 'guest',
  builder: (y) =>
    y
      .option('socket', { type: 'string', demandOption: true, describe: "the host's Unix socket (vsva host --socket)" })
      .option('name', { type: 'string', describe: 'VM name (default: generated)' })
      .option('viommu', { choices: ['vtd', 'virtio'] as const, default: 'vtd' as const, describe: 'virtual IOMMU the VM gets' })
      .option('memory', { type: 'number', default: 64, describe: 'guest RAM in MiB' })
      .option('quota', { type: 'number', default: 1024, describe: "PASID quota of the VM's IOASID set" })
      .option('vcmd', { choices: ['3.1', '3.3', 'off'], default: '3.1', describe: 'VT-d virtual command register layout (off: no VCMD)' })
      .option('uapi', { choices: ['vfio-sva', 'iommufd'] as const, default: 'vfio-sva' as const, describe: 'host uAPI the VM uses: the VFIO SVA uAPI or iommufd (docs/protocol.md §13; pf devices only)' })
      .option('device', { type: 'string', array: true, default: ['00:03.0:pf'], describe: 'assigned device bb:dd.f[:pf|adi], repeatable' })
      .option('workload', { choices: ['mixed', 'idle'] as const, default: 'mixed' as const, describe: 'mixed SVA workload on the first device, or just bring the VM up' })
      .option('duration', { type: 'number', describe: 'stop after this many seconds (default: until Ctrl-C)' })
      .option('rate', { type: 'number', default: 4, describe: 'workload operations per second' })
      .option('seed', { type: 'number', default: 1, describe: 'seed of the workload’s random choices' })
      .option('memory-path', { type: 'string', describe: "create guest RAM as a file in this directory (a memory filesystem such as /dev/shm) instead of a memfd; its name is removed once the host holds it (path form needs the host's --allow-memory-paths DIR)" })
      .option('memory-backend', { choices: ['mapped', 'pread'] as const, describe: 'guest RAM as a sealed memfd mapped by both halves (passed as a descriptor), or a shared file with positioned I/O (default: mapped when the native addon is built, else pread)' })
      .option('trace', { type: 'string', describe: "record the guest half's trace events (MMIO, descriptors, binds, invalidations, faults, page requests) to this file (JSON lines)" })
      .check((a) => {
        if (!Number.isInteger(a.memory) || a.memory < 4 || a.memory > 65536) throw new Error('--memory must be 4..65536 MiB');
        if (!Number.isInteger(a.quota) || a.quota < 0) throw new Error('--quota must be a non-negative integer');
        if (a.duration !== undefined && !(a.duration > 0)) throw new Error('--duration must be a positive number of seconds');
        if (!(a.rate > 0 && a.rate <= 1000)) throw new Error('--rate must be in (0, 1000]');
        for (const d of a.device) parseDeviceArg(d);
        return true;
      }) as Argv<Args>,
  handler: async (args) => {
    const devices = args.device.map(parseDeviceArg);
    const memory = args.memory * 1024 * 1024;
    const vcmd = args.vcmd === 'off' ? false : (args.vcmd as '3.1' | '3.3');
    const trace = new TraceBus();
    const recorder = args.trace ? new TraceRecorder(args.trace, `vsva guest ${args.name ?? ''}`.trim()).attach(trace) : null;
    const vm = await startGuest({
      trace,
      socket: args.socket,
      ...(args.name ? { name: args.name } : {}),
      viommu: args.viommu,
      memory,
      pasidQuota: args.quota,
      ...(args.viommu === 'vtd' ? { vcmd } : {}),
      uapi: args.uapi,
      devices,
      ...(args['memory-backend'] !== undefined ? { memoryBackend: args['memory-backend'] } : {}),
      ...(args['memory-path'] !== undefined ? { memoryPath: args['memory-path'] } : {}),
    });
    process.stdout.write(`${vm.name}: ${args.viommu} VM (${args.uapi} uAPI) up with ${args.memory} MiB and ${devices.map((d) => `${d.bdf} (${d.kind})`).join(', ')}\n`);
    let stopping = false;
    const stop = (): void => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stderr.write('\nstopping (Ctrl-C again to force)…\n');
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    const deadline = args.duration === undefined ? Infinity : Date.now() + args.duration * 1000;
    const pause = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, Math.min(ms, deadline - Date.now()))));
    try {
      if (args.workload === 'idle') {
        while (!stopping && Date.now() < deadline) await pause(200);
        return;
      }
      const sva = await startSvaGuest(vm, { viommu: args.viommu, memory, devices, ...(args.viommu === 'vtd' ? { vcmd } : {}) });
      const work = new MixedWorkload(sva, devices[0]!.bdf, args.seed);
      const period = 1000 / args.rate;
      let lastReport = 0;
      try {
        while (!stopping && Date.now() < deadline) {
          const t = Date.now();
          await work.tick();
          if (Date.now() - lastReport >= 1000) {
            lastReport = Date.now();
            const s = work.stats;
            process.stderr.write(`${vm.name}: ${work.processes} processes, ${s.binds} binds, ${s.dmaJobs} DMA jobs, ${sva.pageRequests} page requests, ${s.checkFailures} check failures\n`);
          }
          await pause(period - (Date.now() - t));
        }
      } finally {
        await work.stop();
        await sva.close();
      }
      const s = work.stats;
      process.stdout.write(`${vm.name}: ${s.ops} operations, ${s.dmaJobs} DMA jobs, ${s.checkFailures} check failures, ${s.errors} errors\n`);
      if (s.checkFailures > 0) process.exitCode = 1;
    } finally {
      await vm.close();
      recorder?.close();
    }
  },
};
