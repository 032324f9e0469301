/** Every `vsva` subcommand, in the order --help lists them. */
import type { CommandModule } from 'yargs';
import { benchCommand } from './bench.js';
import { demoCommand } from './demo.js';
import { experimentCommand } from './experiment.js';
import { guestCommand } from './guest.js';
import { hostCommand } from './host.js';
import { runCommand } from './run.js';
import { traceCommand } from './trace.js';

export const commands: CommandModule<any, any>[] = [demoCommand, hostCommand, guestCommand, runCommand, benchCommand, experimentCommand, traceCommand];
