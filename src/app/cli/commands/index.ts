/**
 * Every `vsva` subcommand, in the order --help lists them. Each entry names the command and
 * says what it does; `load` imports its module (option builder and handler) only when that
 * command runs, so `vsva --help` does not load the host, guest or scenario code (start-up time:
 * docs/performance.md).
 */
import type { CommandModule } from 'yargs';

export interface CommandEntry {
  /** The command word, as typed. */
  readonly name: string;
  /** The yargs command string (name and positionals). */
  readonly command: string;
  readonly describe: string;
  readonly load: () => Promise<CommandModule<any, any>>;
}

export const commands: readonly CommandEntry[] = [
  {
    name: 'demo',
    command: 'demo',
    describe: 'Host + VT-d and virtio-iommu VMs running a mixed SVA workload, with the live dashboard (Ctrl-C to stop)',
    load: async () => (await import('./demo.js')).demoCommand,
  },
  {
    name: 'host',
    command: 'host',
    describe: 'Run the host half: serve guests (VMs) on a Unix socket, optionally with the dashboard',
    load: async () => (await import('./host.js')).hostCommand,
  },
  {
    name: 'guest',
    command: 'guest',
    describe: "Run one VM's guest half (vIOMMU model + guest driver + workload) against a running host",
    load: async () => (await import('./guest.js')).guestCommand,
  },
  {
    name: 'run',
    command: 'run <scenario..>',
    describe: 'Run scenario files (YAML or JSON; docs/scenarios.md): exit 0 on pass, 1 on fail, 2 on a malformed or unreadable file',
    load: async () => (await import('./run.js')).runCommand,
  },
  {
    name: 'bench',
    command: 'bench',
    describe: 'Run the benchmarks of docs/design.md §9, each beside a baseline measured in the same run; exit 1 when a target is missed',
    load: async () => (await import('./bench.js')).benchCommand,
  },
  {
    name: 'experiment',
    command: 'experiment <kind>',
    describe: 'Run an experiment and write CSV, SVG charts and a Markdown summary (kind: alloc — paravirtual PASID allocation)',
    load: async () => (await import('./experiment.js')).experimentCommand,
  },
  {
    name: 'trace',
    command: 'trace <command>',
    describe: 'Record and export traces of typed events (MMIO, descriptors, messages, binds, faults, …)',
    load: async () => (await import('./trace.js')).traceCommand,
  },
];

/** The command a command line selects: the first argument that is a command word, if any. */
export function selectedCommand(argv: readonly string[]): CommandEntry | undefined {
  for (const a of argv) {
    if (a === '--') return undefined;
    const entry = commands.find((c) => c.name === a);
    if (entry) return entry;
  }
  return undefined;
}
