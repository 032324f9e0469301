// The young generation of the `vsva host` process (docs/performance.md, "Fairness and
// snapshots": the host's long turns). The host serves every VM from one event loop, so a
// scavenge (V8's young-generation collection, which stops the loop) delays every VM's next
// request by its length, and its length grows with the bytes it copies — at most one semi-space.
// V8 grows the semi-space from 1 MiB up to --max-semi-space-size (16 MiB by default on 64-bit)
// while much survives, e.g. after a VM bound 1024 PASIDs; the scavenges that follow copied 3–7 ms
// of objects in one turn. Keeping the semi-space at its initial 1 MiB bounds what one scavenge
// copies (≈ 0.2–1 ms measured) for more, shorter scavenges.
//
// The cap is V8's --semi-space-growth-factor=1, set at start (v8.setFlagsFromString; V8 reads
// it each time it would grow the new space; test/unit/bin/young-generation.test.ts checks that
// it holds on the running Node). It holds while the process starts no worker thread: on Node 20
// starting one restores V8's default (measured). The compiled host starts none; a run from source does (the
// tsx loader), so the harness (src/app/harness/start-host.ts) passes the equivalent
// --max-semi-space-size=1 on the node command line instead, and so can anyone starting
// `node bin/vsva.js host` themselves. A node flag of the user's own for the young generation
// (--max-semi-space-size, --min-semi-space-size, --semi-space-growth-factor, on the command
// line or in NODE_OPTIONS) wins: then nothing is set.
import { setFlagsFromString } from 'node:v8';

const USER_FLAGS = /--(max-semi-space-size|semi-space-growth-factor|min-semi-space-size)\b/;

/** Keep the young generation at its initial size unless the node command line or NODE_OPTIONS sizes it. Returns whether it set the cap. */
export function capYoungGeneration(execArgv = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? '') {
  if (execArgv.some((a) => USER_FLAGS.test(a)) || USER_FLAGS.test(nodeOptions)) return false;
  setFlagsFromString('--semi-space-growth-factor=1');
  return true;
}

/** Whether the `vsva` arguments select the `host` command (any argument `host` before `--`). */
export function isHostCommand(args) {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes('host');
}
