/** Every `vsva` subcommand, in the order --help lists them. */
import type { CommandModule } from 'yargs';
import { benchCommand } from './bench.js';
import { traceCommand } from './trace.js';

export const commands: CommandModule<any, any>[] = [benchCommand, traceCommand];
