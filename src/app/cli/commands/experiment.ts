import type { CommandModule } from 'yargs';
import { ALLOC_SCHEMES, type AllocScheme } from '../../experiment/grid.js';
import { setLogLevel } from '../../../log.js';

interface Args {
  kind: string;
  quick: boolean;
  out?: string;
  iterations?: number;
  rounds?: number;
  viommu: 'vtd' | 'virtio';
  schemes?: string[];
  vms?: number[];
  pasids?: number[];
  progress: boolean;
}

export const experimentCommand: CommandModule<object, Args> = {
  command: 'experiment <kind>',
  builder: (y) =>
    y
      .positional('kind', {
        type: 'string',
        choices: ['alloc', 'uapi'],
        describe: 'which experiment: alloc (schemes × VMs × PASIDs × quota, fairness, DMA cost); uapi (the same workload on the VFIO SVA and the iommufd host uAPI: messages on the wire and latency per operation)',
      })
      .option('quick', { type: 'boolean', default: false, describe: 'small grid / few iterations (about 30 s)' })
      .option('out', { type: 'string', describe: 'output directory (created if missing; default artifacts/experiment-<kind>)' })
      .option('iterations', { type: 'number', describe: 'uapi: iterations per uAPI (default 300, 40 with --quick)' })
      .option('rounds', { type: 'number', describe: 'uapi: rounds the iterations are spread over, the uAPIs taking turns (default 10)' })
      .option('viommu', { type: 'string', choices: ['vtd', 'virtio'], default: 'vtd', describe: 'uapi: the guests\' vIOMMU' })
      .option('schemes', { type: 'string', array: true, choices: [...ALLOC_SCHEMES], describe: 'only these allocation schemes' })
      .option('vms', { type: 'number', array: true, describe: 'override the VM counts of the alloc grid' })
      .option('pasids', { type: 'number', array: true, describe: 'override the PASIDs-per-VM values of the alloc grid' })
      .option('progress', { type: 'boolean', default: true, describe: 'progress bar on stderr' }) as never,
  handler: async (args) => {
    const out = args.out ?? `artifacts/experiment-${args.kind}`;
    if (args.kind === 'uapi') {
      const { runUapiExperiment } = await import('../../experiment/uapi/index.js');
      if ((args as { logLevel?: string }).logLevel === undefined && process.env.VSVA_LOG === undefined) setLogLevel('error');
      const opts = { quick: args.quick, out, viommu: args.viommu, progressStream: args.progress ? process.stderr : null, ...(args.iterations !== undefined ? { iterations: args.iterations } : {}), ...(args.rounds !== undefined ? { rounds: args.rounds } : {}) };
      const { results, files } = await runUapiExperiment(opts);
      process.stdout.write(`wrote ${files.length} files to ${out}: ${files.join(', ')}\n`);
      const problems = [...results.skipped.map((s) => `  ${s.uapi}: ${s.reason}`), ...results.failures.slice(0, 20).map((f) => `  ${f.uapi} ${f.op} #${f.iteration}: ${f.status}`)];
      if (problems.length) {
        process.stdout.write(`${results.skipped.length} uAPI(s) skipped, ${results.failures.length} operation(s) failed:\n${problems.join('\n')}\n`);
        process.exitCode = 1;
      }
      return;
    }
    const { runAllocExperiment } = await import('../../experiment/alloc/index.js');
    // Refusals at quota exhaustion are expected here; keep their warnings off the progress bar
    // unless a level was asked for.
    if ((args as { logLevel?: string }).logLevel === undefined && process.env.VSVA_LOG === undefined) setLogLevel('error');
    const axes: Record<string, unknown> = {};
    if (args.schemes?.length) {
      axes.schemes = args.schemes as AllocScheme[];
      axes.fairnessSchemes = args.schemes as AllocScheme[];
    }
    if (args.vms?.length) axes.vms = args.vms;
    if (args.pasids?.length) axes.pasidsPerVm = args.pasids;
    const { results, files } = await runAllocExperiment({ quick: args.quick, out, axes, progressStream: args.progress ? process.stderr : null });
    process.stdout.write(`wrote ${files.length} files to ${out}: ${files.join(', ')}\n`);
    if (results.skipped.length) {
      process.stdout.write(`${results.skipped.length} point(s) skipped:\n${results.skipped.map((s) => `  ${s.point}: ${s.reason}`).join('\n')}\n`);
      process.exitCode = 1;
    }
  },
};
