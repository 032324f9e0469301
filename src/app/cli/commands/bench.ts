import type { CommandModule } from 'yargs';
import { loadBenchModules } from '../../bench/index.js';
import { benchExitCode, renderTable, runBenches, writeReport } from '../../bench/runner.js';

interface Args {
  quick: boolean;
  only?: string[];
  out: string;
}

export const benchCommand: CommandModule<object, Args> = {
  command: 'bench',
  builder: (y) =>
    y
      .option('quick', { type: 'boolean', default: false, describe: 'short runs (under a minute in all)' })
      .option('only', { type: 'string', array: true, describe: 'run only these benchmark modules' })
      .option('out', { type: 'string', default: 'artifacts/bench', describe: 'directory for the JSON report' }) as never,
  handler: async (args) => {
    const mods = await loadBenchModules(args.only);
    const report = await runBenches(mods, { quick: args.quick, progress: (m) => process.stderr.write(m + '\n') });
    process.stdout.write(renderTable(report) + '\n');
    const file = writeReport(report, args.out);
    process.stdout.write(`\nreport: ${file}\n`);
    // Exit 1 when a target is missed or a module failed (the closing line of the table says which).
    process.exitCode = benchExitCode(report);
  },
};
