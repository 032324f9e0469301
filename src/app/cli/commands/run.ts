import type { Argv, CommandModule } from 'yargs';
import { VsvaError } from '../../../errors.js';
import { formatIssues, loadScenario, type ParseResult } from '../../scenario/parse.js';
import { renderReport, describeStep } from '../../scenario/report.js';
import { runScenario } from '../../scenario/runner.js';
import type { Scenario } from '../../scenario/schema.js';
import { STEP_DEFS } from '../../scenario/steps.js';

interface Args {
  scenario: string[];
  check: boolean;
  color?: boolean;
  uapi?: 'vfio-sva' | 'iommufd';
}

/** The step actions and what each does, from the step registry. */
function actionList(): string {
  const width = Math.max(...STEP_DEFS.map((d) => d.op.length));
  return `Step actions (docs/scenarios.md):\n${STEP_DEFS.map((d) => `  ${d.op.padEnd(width)}  ${d.summary}`).join('\n')}`;
}

/**
 * Exit status: 0 every scenario passed, 1 one failed, 2 one is malformed or cannot be read
 * (nothing ran then).
 */
export const runCommand: CommandModule<object, Args> = {
  command: 'run <scenario..>',
  builder: (y) =>
    y
      .positional('scenario', { type: 'string', array: true, demandOption: true, describe: 'scenario file(s)' })
      .option('check', { type: 'boolean', default: false, describe: 'only validate the files; run nothing' })
      .option('color', { type: 'boolean', describe: 'colour the report (default: when stdout is a terminal)' })
      .option('uapi', { choices: ['vfio-sva', 'iommufd'] as const, describe: "host uAPI of every VM whose scenario entry has no 'uapi' key (default vfio-sva; docs/protocol.md §13)" })
      .epilog(actionList()) as Argv<Args>,
  handler: async (args) => {
    const scenarios: Scenario[] = [];
    let malformed = false;
    for (const file of args.scenario) {
      let r: ParseResult;
      try {
        r = loadScenario(file);
      } catch (e) {
        // A file that cannot be read: one line (ENOENT for a missing one), not a malformed scenario.
        if (!(e instanceof VsvaError)) throw e;
        malformed = true;
        process.stderr.write(`vsva: ${e.message}\n`);
        continue;
      }
      if (r.ok) scenarios.push(r.scenario);
      else {
        malformed = true;
        process.stderr.write(`${file}: malformed scenario (${r.issues.length} problem${r.issues.length > 1 ? 's' : ''})\n${formatIssues(r.issues)}\n`);
      }
    }
    if (malformed) {
      process.exitCode = 2;
      return;
    }
    if (args.check) {
      for (const s of scenarios) process.stdout.write(`${s.file}: ok (${s.vms.length} VM(s), ${s.steps.length} steps)\n`);
      return;
    }
    const color = args.color ?? process.stdout.isTTY === true;
    let failed = 0;
    for (const sc of scenarios) {
      const tty = process.stderr.isTTY === true;
      const r = await runScenario(sc, {
        ...(args.uapi !== undefined ? { uapi: args.uapi } : {}),
        onStep: tty ? (s) => process.stderr.write(`\r\x1b[K  step ${s.step.index + 1}/${sc.steps.length} ${describeStep(s.step).slice(0, 70)}`) : undefined,
      });
      if (tty) process.stderr.write('\r\x1b[K');
      process.stdout.write(renderReport(r, { color }) + '\n');
      if (!r.passed) failed++;
    }
    if (scenarios.length > 1) process.stdout.write(`\n${scenarios.length - failed}/${scenarios.length} scenarios passed\n`);
    process.exitCode = failed > 0 ? 1 : 0;
  },
};
