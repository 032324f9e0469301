/**
 * The `vsva` command line (docs/design.md §8). Each subcommand lives in its own module under
 * src/app/cli/commands/; only the selected one is loaded (the others are listed by name and
 * description for --help). This file and the command modules are the only places that write to
 * stdout directly.
 */
import yargs, { type CommandModule } from 'yargs';
import { VERSION } from '../../version.js';
import { commands, selectedCommand } from './commands/index.js';

export async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('vsva')
    .usage('$0 <command> [options]\n\nvIOMMU device-model service: virtual VT-d / virtio-iommu guests over an emulated host IOMMU stack.')
    .option('log-level', {
      type: 'string',
      describe: 'pino log level (fatal, error, warn, info, debug, trace, silent); default from VSVA_LOG, else warn',
      choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    })
    .middleware(async (args) => {
      // The logger (pino) loads with the first command that logs; --help does not need it.
      const lvl = (args['log-level'] as string | undefined) ?? process.env.VSVA_LOG;
      if (lvl) (await import('../../log.js')).setLogLevel(lvl);
    })
    .version(VERSION)
    .alias('version', 'V')
    .help()
    .alias('help', 'h')
    .strict()
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns ?? 110));
  const selected = selectedCommand(argv);
  for (const c of commands) {
    if (c === selected) cli = cli.command({ ...(await c.load()), command: c.command, describe: c.describe } as CommandModule);
    else cli = cli.command(c.command, c.describe);
  }
  cli = cli.demandCommand(1, 'Give a command; see --help.').fail((msg, err, y) => {
    // Usage mistakes: the message and the command's help. Failures of a command: one line with
    // the errno-style code (the stack only at debug level), exit status 1.
    if (err) {
      process.stderr.write(`vsva: ${err.message}\n`);
      if (process.env.VSVA_LOG === 'debug' || process.env.VSVA_LOG === 'trace') process.stderr.write(`${err.stack ?? ''}\n`);
      process.exit(1);
    }
    process.stderr.write(`${y.help() && ''}${msg}\nRun with --help for usage.\n`);
    process.exit(2);
  });
  await cli.parseAsync();
}
