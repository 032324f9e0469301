import type { CommandModule } from 'yargs';
import { ALLOC_SCHEMES, type AllocScheme } from '../../experiment/grid.js';
import { setLogLevel } from '../../../log.js';

interface Args {
  kind: string;
  quick: boolean;
  out: string;
  schemes?: string[];
  vms?: number[];
  pasids?: number[];
  progress: boolean;
}

export const experimentCommand: CommandModule<object, Args> = {
  command: 'experiment <kind>',
  builder: (y) =>
    y
      .positional('kind', { type: 'string', choices: ['alloc'], describe: 'which experiment: alloc (schemes × VMs × PASIDs × quota, fairness, DMA cost)' })
      .option('quick', { type: 'boolean', default: false, describe: 'small grid (about 30 s)' })
      .option('out', { type: 'string', default: 'artifacts/experiment-alloc', describe: 'output directory (created if missing)' })
      .option('schemes', { type: 'string', array: true, choices: [...ALLOC_SCHEMES], describe: 'only these allocation schemes' })
      .option('vms', { type: 'number', array: true, describe: 'override the VM counts of the alloc grid' })
      .option('pasids', { type: 'number', array: true, describe: 'override the PASIDs-per-VM values of the alloc grid' })
      .option('progress', { type: 'boolean', default: true, describe: 'progress bar on stderr' }) as never,
  handler: async (args) => {
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
    const { results, files } = await runAllocExperiment({ quick: args.quick, out: args.out, axes, progressStream: args.progress ? process.stderr : null });
    process.stdout.write(`wrote ${files.length} files to ${args.out}: ${files.join(', ')}\n`);
    if (results.skipped.length) {
      process.stdout.write(`${results.skipped.length} point(s) skipped:\n${results.skipped.map((s) => `  ${s.point}: ${s.reason}`).join('\n')}\n`);
      process.exitCode = 1;
    }
  },
};
