/**
 * Soak run (docs/reliability.md, "Soak"; not a unit test): one spawned host and, for N minutes,
 * all at once
 *   - host restarts: SIGKILL of the host process and a new one on the same socket, every
 *     `--restart-every` rounds;
 *   - guest kills: SIGKILL of `--kills` spawned `vsva guest --workload mixed` processes per round,
 *     each replaced by a new one;
 *   - a checked DMA / bind load from in-process VT-d VMs (scripts/soak/dma-load.ts);
 *   - a protocol fuzz client (scripts/soak/fuzz-client.ts, the frame fuzzer's commands).
 *
 * Every round ends with a quiet point (load and fuzz paused, in-flight work finished): the
 * load's PASIDs are compared with the host's snapshot, and one line is printed with the host's
 * RSS, heap in use after a full GC (the host runs with --expose-gc; dashboard pong), open fds,
 * the soak's files in /dev/shm and the temporary directory, PASIDs allocated vs capacity, and the
 * page-table pool.
 *
 * At the end everything is torn down and a summary printed. Exit status 1 when any criterion
 * fails: lost or leaked PASIDs (at any quiet point, in a replay after a restart, or PASIDs still
 * allocated after teardown), wrong DMA results (load or guest processes), a host crash, a guest
 * process that ends on its own, a host-bug answer to the fuzzer, host fds or the soak's files
 * not back at the baseline, heap after GC of the last round more than 10 % above the first
 * round's, a step that overran its bound.
 *
 *   VSVA_LOG=silent npx tsx scripts/soak.ts --minutes 10 [--round-seconds 30] [--restart-every 3]
 *     [--kills 2] [--guests 3] [--vms 3] [--pasids 16] [--grace-ms 1000] [--fuzz 1|0] [--json out.json]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { SoakHost } from './soak/soak-host.js';
import { DmaLoad } from './soak/dma-load.js';
import { GuestProcesses } from './soak/guest-processes.js';
import { FuzzClient } from './soak/fuzz-client.js';
import { bytesOf, extra, fdTargets, openFds, rssBytes, vsvaFiles } from './soak/os-figures.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
function num(name: string, def: number, min = 0): number {
  const v = Number(arg(name, String(def)));
  if (!Number.isFinite(v) || v < min) throw new Error(`--${name} must be a number ≥ ${min}`);
  return v;
}

const MINUTES = num('minutes', 10, 0.1);
const ROUND_S = num('round-seconds', 30, 5);
const RESTART_EVERY = Math.round(num('restart-every', 3));
const KILLS = Math.round(num('kills', 2));
const GUESTS = Math.round(num('guests', 3));
const VMS = Math.round(num('vms', 3, 1));
const PASIDS = Math.round(num('pasids', 16, 1));
const GRACE_MS = Math.round(num('grace-ms', 1000));
const FUZZ = num('fuzz', 1) > 0;
const JSON_OUT = process.argv.includes('--json') ? arg('json', '') : '';
/** Heap after GC may exceed its first round's by this fraction. */
const HEAP_TOLERANCE = 0.1;

interface Round {
  round: number;
  t: number;
  hostPid: number;
  rssMiB: number | null;
  heapAfterGcMiB: number | null;
  /** Of that, V8's code spaces (JIT-compiled functions). */
  codeMiB: number | null;
  fds: number | null;
  files: number;
  fileMiB: number;
  pasidsAllocated: number;
  capacity: number;
  vms: number;
  poolPages: number | null;
  poolMiB: number | null;
  /** IOTLB buckets and cached PASID entries the host IOMMU holds. */
  iotlbBuckets: number | null;
  pasidCacheEntries: number | null;
  lost: number;
  leaked: number;
}

/** The soak's current step, printed by the watchdog when one step takes too long. */
const phase = { what: 'start', since: Date.now() };
function enter(what: string): void {
  phase.what = what;
  phase.since = Date.now();
}
setInterval(() => {
  if (Date.now() - phase.since > 60_000) process.stderr.write(`[soak] still in '${phase.what}' after ${Math.round((Date.now() - phase.since) / 1000)} s\n`);
}, 30_000).unref();

/** `p`, or a rejection after `ms` (every wait of the soak has a bound). */
function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

const mib = (b: number | null | undefined): number | null => (b === null || b === undefined ? null : Math.round((b / 2 ** 20) * 10) / 10);
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const tag = `vsva-soak-${process.pid}-${randomBytes(3).toString('hex')}`;
  const socket = path.join(os.tmpdir(), `${tag}.sock`);
  const host = new SoakHost(socket, path.join(os.tmpdir(), `${tag}.state`), GRACE_MS);
  const guests = new GuestProcesses(socket, GUESTS);
  const ours = (): Set<number> => new Set([process.pid, host.pid, ...guests.pids]);
  const files = (): string[] => vsvaFiles(ours(), [tag]);
  log(`[soak] ${MINUTES} min: rounds of ${ROUND_S} s, host restart every ${RESTART_EVERY} rounds, ${KILLS} guest kills per round (${GUESTS} guest processes), ${VMS} checked VMs × ${PASIDS} PASIDs, fuzz client`);

  await host.start();
  await sleep(500);
  // The snapshot connection stays open for the whole run: count the fds after it.
  const baseSnap = await host.current.snapshot();
  const baseFigures = await host.figures();
  const baseFds = openFds(host.pid);
  const baseFdTargets = fdTargets(host.pid);
  const baseFiles = files();
  log(`[soak] empty host: RSS ${mib(rssBytes(host.pid))} MiB, heap after GC ${mib(baseFigures?.heapUsedAfterGcBytes)} MiB, ${baseFds} fds, ${baseFiles.length} soak files, capacity ${baseSnap.capacity.total}`);

  const load = new DmaLoad(socket, VMS, PASIDS);
  const fuzz = new FuzzClient(socket);
  const rounds: Round[] = [];
  const problems: string[] = [];
  let lostTotal = 0;
  let leakedTotal = 0;
  const t0 = Date.now();
  try {
    await load.start();
    await guests.start();
    if (FUZZ) fuzz.start();
    const end = t0 + MINUTES * 60_000;
    // A step that fails or overruns its bound ends the rounds (counted as a problem); the
    // teardown and the summary still run.
    for (let r = 1; Date.now() < end && problems.length === 0; r++) {
      try {
        const roundEnd = Math.min(end, Date.now() + ROUND_S * 1000);
        enter(`round ${r}: load`);
        if (RESTART_EVERY > 0 && r % RESTART_EVERY === 0) {
          await sleep(Math.max(0, (roundEnd - Date.now()) / 3));
          log(`[soak] round ${r}: host SIGKILL + restart`);
          enter(`round ${r}: host restart`);
          await bounded(host.restart(), 90_000, 'host restart');
        }
        enter(`round ${r}: load`);
        await sleep(Math.max(0, (roundEnd - Date.now()) / 2));
        enter(`round ${r}: guest kills`);
        if (KILLS > 0) await bounded(guests.killAndReplace(KILLS), 180_000, 'guest kills');
        enter(`round ${r}: load`);
        await sleep(Math.max(0, roundEnd - Date.now()));
        enter(`round ${r}: quiet point`);
        rounds.push(await quietPoint(r));
        const x = rounds.at(-1)!;
        lostTotal += x.lost;
        leakedTotal += x.leaked;
        log(
          `[soak] round ${r} t=${x.t}s host ${x.hostPid}: RSS ${x.rssMiB} MiB, heap after GC ${x.heapAfterGcMiB} MiB (code ${x.codeMiB}), fds ${x.fds}, files ${x.files} (${x.fileMiB} MiB), ` +
            `PASIDs ${x.pasidsAllocated}/${x.capacity} in ${x.vms} VMs (${VMS + guests.running} guests), pool ${x.poolPages} pages (${x.poolMiB} MiB), IOTLB buckets ${x.iotlbBuckets}, lost ${x.lost}, leaked ${x.leaked}; ` +
            `load ${load.counters.ops} ops (${load.counters.dmaChecked} DMAs checked, ${load.counters.wrongDma} wrong, ${load.counters.outageErrors} outage errors), ` +
            `guests ${guests.kills} killed, ${guests.checkFailures} check failures; fuzz ${fuzz.counters.batches} batches, ${fuzz.counters.hostBugs} host bugs`,
        );
      } catch (e) {
        problems.push(`round ${r}: ${e instanceof Error ? e.message : String(e)}`);
        log(`[soak] round ${r} failed: ${String(e)}`);
      }
    }
  } finally {
    log('[soak] tearing down');
    enter('teardown');
    await bounded(fuzz.stop(), 60_000, 'fuzz stop').catch((e: unknown) => problems.push(String(e)));
    await bounded(load.stop(), 120_000, 'load stop').catch((e: unknown) => problems.push(String(e)));
    await bounded(guests.stop(), 60_000, 'guest processes stop').catch((e: unknown) => problems.push(String(e)));
  }

  // After teardown: the host must hold nothing (beyond the grace period) and be back at baseline.
  enter('after teardown');
  let after = await bounded(host.current.snapshot(), 60_000, 'host snapshot');
  for (let i = 0; i < 100 && (after.vms.length > 0 || after.capacity.available !== after.capacity.total); i++) {
    await sleep(100);
    after = await bounded(host.current.snapshot(), 60_000, 'host snapshot');
  }
  await sleep(1500); // a GC interval for the figures, released descriptors
  const endFigures = await host.figures();
  // Descriptors of connections the guests closed last may still be closing: a bounded settle.
  let endFds = openFds(host.pid);
  for (let i = 0; i < 50 && endFds !== null && baseFds !== null && endFds > baseFds; i++) {
    await sleep(200);
    endFds = openFds(host.pid);
  }
  const extraFds = extra(baseFdTargets, fdTargets(host.pid));
  const endFiles = files();
  const leakedAtEnd = after.capacity.total - after.capacity.available;

  const heaps = rounds.map((r) => r.heapAfterGcMiB).filter((h): h is number => h !== null);
  const firstHeap = heaps[0] ?? null;
  const maxHeap = heaps.length ? Math.max(...heaps) : null;
  const lastHeap = heaps.at(-1) ?? null;
  const pct = (a: number | null, b: number | null): number | null => (a !== null && b !== null ? Math.round(((b - a) / a) * 1000) / 10 : null);
  // The criterion: the last round against the first (the live state at a quiet point varies with
  // the guests up at that moment; the largest round is reported beside it).
  const heapGrowthPct = pct(firstHeap, lastHeap);
  const heapMaxGrowthPct = pct(firstHeap, maxHeap);
  const newFiles = endFiles.filter((f) => !baseFiles.includes(f));
  const wrong = load.counters.wrongDma + guests.checkFailures;

  if (lostTotal > 0) problems.push(`${lostTotal} lost PASIDs at quiet points`);
  if (load.counters.lostInReplay > 0) problems.push(`${load.counters.lostInReplay} PASIDs lost in a replay after a host restart (taken by another VM first)`);
  if (leakedTotal > 0) problems.push(`${leakedTotal} leaked PASIDs at quiet points`);
  if (leakedAtEnd > 0 || after.vms.length > 0) problems.push(`${leakedAtEnd} PASIDs / ${after.vms.length} VMs left after teardown`);
  if (wrong > 0) problems.push(`${wrong} wrong DMA results`);
  if (host.crashes > 0) problems.push(`${host.crashes} host crashes`);
  if (guests.exits.length > 0) problems.push(`${guests.exits.length} guest processes ended on their own`);
  if (fuzz.counters.hostBugs > 0) problems.push(`${fuzz.counters.hostBugs} host-bug answers to the fuzzer`);
  if (endFds === null || baseFds === null || endFds > baseFds) problems.push(`host fds ${endFds} vs ${baseFds} at baseline (more: ${extraFds.join(', ')})`);
  if (newFiles.length > 0) problems.push(`files left: ${newFiles.join(', ')}`);
  if (heapGrowthPct === null) problems.push('no heap-after-GC figure (host not started with --expose-gc?)');
  else if (heapGrowthPct > HEAP_TOLERANCE * 100) problems.push(`heap after GC of the last round ${heapGrowthPct} % above the first round's`);
  if (rounds.length === 0) problems.push('no round completed');

  const summary = {
    minutes: MINUTES,
    rounds: rounds.length,
    hostInstances: host.instances,
    hostRestarts: host.instances - 1,
    hostCrashes: host.crashes,
    guestProcesses: { started: guests.started, killed: guests.kills, startErrors: guests.startErrors, exitedOnTheirOwn: guests.exits },
    load: { ...load.counters, samples: load.samples },
    fuzz: { ...fuzz.counters, samples: fuzz.samples },
    pasids: { lostAtQuietPoints: lostTotal, lostInReplay: load.counters.lostInReplay, leakedAtQuietPoints: leakedTotal, allocatedAfterTeardown: leakedAtEnd, vmsAfterTeardown: after.vms.length, capacity: after.capacity.total },
    wrongDma: wrong,
    fds: { baseline: baseFds, end: endFds, extra: extraFds },
    files: { baseline: baseFiles.length, end: endFiles.length, new: newFiles, newBytes: bytesOf(newFiles) },
    heapAfterGcMiB: { emptyHost: mib(baseFigures?.heapUsedAfterGcBytes), firstRound: firstHeap, max: maxHeap, lastRound: lastHeap, growthPct: heapGrowthPct, maxGrowthPct: heapMaxGrowthPct, afterTeardown: mib(endFigures?.heapUsedAfterGcBytes) },
    rssMiB: { emptyHost: mib(baseFigures?.rssBytes), afterTeardown: mib(endFigures?.rssBytes), max: Math.max(...rounds.map((r) => r.rssMiB ?? 0)) },
    pool: { emptyHost: baseFigures?.pageTablePool ?? null, afterTeardown: endFigures?.pageTablePool ?? null },
    iommu: { emptyHost: baseFigures?.iommu ?? null, afterTeardown: endFigures?.iommu ?? null },
    perRound: rounds,
    problems,
    ok: problems.length === 0,
  };
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify(summary, null, 2));
  for (const p of problems) log(`[soak] FAIL: ${p}`);
  log(problems.length === 0 ? '[soak] all criteria met' : `[soak] ${problems.length} criteria failed`);
  await host.close();
  return problems.length === 0 ? 0 : 1;

  /** Pause load and fuzz, measure, compare PASIDs, resume. */
  async function quietPoint(r: number): Promise<Round> {
    await Promise.all([load.pause(), fuzz.pause()]);
    try {
      // Fuzz VMs just closed are released at once or after the grace period: let them go.
      await sleep(GRACE_MS + 500);
      const s = await bounded(host.current.snapshot(), 60_000, 'host snapshot');
      const { lost, leaked } = await bounded(load.compare(s), 120_000, 'PASID comparison').catch((e: unknown) => ({ lost: [`compare failed: ${String(e)}`], leaked: [] as string[] }));
      for (const x of [...lost, ...leaked].slice(0, 5)) log(`[soak]   ${x}`);
      const missing = guests.names.filter((n) => !s.vms.some((v) => v.name === n && v.connected));
      if (missing.length > 0) log(`[soak]   guest processes not (yet) connected: ${missing.join(', ')}`);
      const f = await host.figures();
      const fl = files();
      return {
        round: r,
        t: Math.round((Date.now() - t0) / 1000),
        hostPid: host.pid,
        rssMiB: mib(rssBytes(host.pid)),
        heapAfterGcMiB: mib(f?.heapUsedAfterGcBytes),
        codeMiB: mib(f?.codeSpaceAfterGcBytes),
        fds: openFds(host.pid),
        files: fl.length,
        fileMiB: mib(bytesOf(fl)) ?? 0,
        pasidsAllocated: s.capacity.total - s.capacity.available,
        capacity: s.capacity.total,
        vms: s.vms.length,
        poolPages: f?.pageTablePool?.pagesInUse ?? null,
        poolMiB: mib(f?.pageTablePool?.bytesReserved),
        iotlbBuckets: f?.iommu?.iotlbBuckets ?? null,
        pasidCacheEntries: f?.iommu?.pasidCacheEntries ?? null,
        lost: lost.length,
        leaked: leaked.length,
      };
    } finally {
      load.resume();
      fuzz.resume();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`soak: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(2);
  },
);
