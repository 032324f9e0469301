/**
 * The long fuzz run (docs/reliability.md §5): the same properties as test/property/fuzz, for a
 * fixed time instead of a fixed number of runs. The time is split evenly between the fuzzers;
 * each runs batches of fast-check runs with fresh seeds until its share is used up.
 *
 *   node --import tsx scripts/fuzz-long.ts --seconds 300 [--only host-frames|vtd|virtio]
 *
 * Prints one line per fuzzer (runs, commands, failures, seeds) and exits 1 on any failure,
 * with the counterexample and its seed so it can be replayed in the bounded test.
 */
import fc from 'fast-check';
import { makeWorld, type FuzzWorld } from '../test/property/fuzz/world.js';
import { hostFrameCommands, runHostFrames } from '../test/property/fuzz/host-frames.js';
import { runVtd, vtdCommands } from '../test/property/fuzz/vtd-model.js';
import { runVirtio, virtioCommands } from '../test/property/fuzz/virtio.js';

/** The command list being run and since when (the watchdog reports a run that hangs). */
const running = { cmds: null as unknown, since: 0, fuzzer: '' };
const HANG_MS = 20_000;

interface Fuzzer {
  name: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  prop: (w: FuzzWorld, counter: { commands: number }) => fc.IAsyncProperty<any>;
}

const fuzzers: Fuzzer[] = [
  { name: 'host-frames', prop: (w, c) => fc.asyncProperty(hostFrameCommands, async (cmds) => watched('host-frames', cmds, async () => { c.commands += cmds.length; return (await runHostFrames(w, cmds)).length === 0; })) },
  { name: 'vtd', prop: (w, c) => fc.asyncProperty(vtdCommands, async (cmds) => watched('vtd', cmds, async () => { c.commands += cmds.length; return (await runVtd(w, cmds)).length === 0; })) },
  { name: 'virtio', prop: (w, c) => fc.asyncProperty(virtioCommands, async (cmds) => watched('virtio', cmds, async () => { c.commands += cmds.body.length + cmds.tail.length; return (await runVirtio(w, cmds)).length === 0; })) },
];

async function watched(fuzzer: string, cmds: unknown, run: () => Promise<boolean>): Promise<boolean> {
  Object.assign(running, { cmds, since: Date.now(), fuzzer });
  try {
    return await run();
  } finally {
    running.cmds = null;
  }
}

function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x instanceof Uint8Array ? Array.from(x) : x));
}

/**
 * A run that never finishes is a failure too (a request nobody answers, a lost wake-up). The
 * interval also keeps the process alive: without it a hung run would end the process quietly.
 */
setInterval(() => {
  if (running.cmds !== null && Date.now() - running.since > HANG_MS) {
    process.stdout.write(`${running.fuzzer}: HUNG for ${HANG_MS} ms on\n${show(running.cmds).slice(0, 4000)}\n`);
    process.exit(1);
  }
}, 1000);

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<number> {
  const seconds = Number(arg('seconds') ?? '60');
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds must be a positive number');
  const only = arg('only');
  const chosen = fuzzers.filter((f) => only === undefined || f.name === only);
  if (chosen.length === 0) throw new Error(`--only must be one of ${fuzzers.map((f) => f.name).join(', ')}`);
  const share = (seconds * 1000) / chosen.length;
  let failed = false;
  for (const f of chosen) {
    const world = await makeWorld();
    const counter = { commands: 0 };
    let runs = 0;
    let batches = 0;
    const t0 = Date.now();
    try {
      while (Date.now() - t0 < share) {
        const seed = (Math.random() * 2 ** 31) | 0;
        const r = await fc.check(f.prop(world, counter), { numRuns: 25, seed });
        runs += r.numRuns;
        batches++;
        if (r.failed) {
          failed = true;
          process.stdout.write(`${f.name}: FAILED (seed ${seed}, path ${r.counterexamplePath})\n${show(r.counterexample).slice(0, 4000)}\n${String(r.errorInstance ?? '')}\n`);
          break;
        }
        process.stderr.write(`\r${f.name}: ${runs} runs, ${Math.round((Date.now() - t0) / 1000)} s`);
      }
    } finally {
      await world.close();
    }
    const secs = (Date.now() - t0) / 1000;
    process.stderr.write('\n');
    process.stdout.write(`${f.name}: ${runs} runs (${batches} seeds), ${counter.commands} commands in ${secs.toFixed(1)} s, ${(runs / secs).toFixed(1)} runs/s, ${failed ? 'FAILURE' : 'no failure'}\n`);
    if (failed) break;
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`fuzz-long: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(2);
  },
);
