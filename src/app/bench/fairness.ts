/**
 * Fairness benchmark (docs/performance.md, "Fairness and snapshots"): the host is one event
 * loop, so a request that touches many objects must not stall other VMs. One spawned host, two
 * VT-d guests: VM A maps N 4 KiB mappings in a domain of its own (DMA_MAP, pipelined) and
 * removes them with one DMA_UNMAP; VM B meanwhile sends VCMD ALLOC_PASID round trips (each
 * followed by an untimed free) back to back.
 *
 * Processes: as in a deployment, where every VM is its own (QEMU) process, every VM runs in a
 * process of its own (scripts/fairness-vm.ts, driven by line commands over its stdin/stdout:
 * fairness-vm-process.ts): A, each released VM, and B, which times its own round trips and
 * reports when each ended (CLOCK_MONOTONIC, the clock the bench's windows are taken with). The
 * VM_SETUP probe and the clocks that bound the windows run in the bench process. So B's round
 * trips wait for the host only: not behind the busy VM's guest-side work (building its
 * requests, closing its guest half, its garbage collection), nor behind the bench process's
 * own heap (the garbage of the modules run before, whose collection threads took a core for
 * 1–3 ms at a time inside the windows when B ran in the bench process: traced with the
 * kernel's sched_switch events, fourth session). A's DMA_UNMAP round trips (and their
 * one-mapping baseline) are timed in A's process, around the request; B's window for an unmap
 * opens when the bench writes the `unmap` command and closes when A's answer arrives (a pipe
 * hop wider on each side than the request itself).
 *
 * Figures, each beside a baseline measured in the same run:
 * - DMA_UNMAP of N mappings (N = 1k, 4k, 16k, 65,535 — the per-VM cap less the guest's RAM
 *   mapping), client round trip, beside one DMA_UNMAP of a single mapping: the scaling curve.
 * - VM B's VCMD round trip p99 while A unmaps 65,535 mappings (10 unmaps, a few hundred round
 *   trips), beside B's idle p50. Target ≤ 10×; the unmap itself ≤ 200 ms.
 * - VM release: a third VM binds 1024 PASIDs (VCMD alloc + bind each) and its connection drops
 *   (the link closes without unbinding, as when a VM process dies); the host releases it in
 *   steps (docs/protocol.md "Disconnect"). B's VCMD round trip p99 during the release, beside
 *   B's idle p50 (target ≤ 10×), and the release time: from the drop until a VM_SETUP with the
 *   VM's name succeeds (the name is taken until the release completed; retried every ~1 ms).
 *   The drop: the bench writes `drop` to the VM's process, which closes its connection with
 *   nothing unbound first, as a dying VM process's connection closes; t0 is taken right before
 *   that write, so the window opens before the connection closes (by a pipe hop, ~0.6 ms
 *   measured), never after it. The process exits after the window (stdin's end), as the
 *   in-process guest of earlier versions was closed after it: a Node process's exit inside the
 *   window made the release ~15 ms longer on the 2 shared cores (measured): the dying VM's
 *   cost, not the host's release.
 *   Two warm-up releases (the host's first: its release code runs cold, and V8 optimizes most of
 *   it during the second; B's slowest round trip during them is a figure of its own), then 12
 *   timed ones; the VM is dropped 300 ms after its last
 *   bind (B running meanwhile) and the bench process (and B, as its loop starts) collects its own
 *   garbage before each timed window (`--expose-gc`), so that the figures hold the host's
 *   release, not the binds' GC.
 * - Release floor (no target): each timed release is followed by the release of a VM with one
 *   bound PASID, timed the same way: B's p99 in those windows is what a VM's death costs B whatever
 *   the VM held (its process's last work, the host's disconnect handling, the bench's name probe),
 *   so the 1024-PASID figure can be read against it.
 * - Machine floor (no target): B's VCMD round trip p99 while a process outside vsva
 *   (cpu-spinner.ts) keeps a CPU busy for as long as the median 65,535-mapping unmap took, in as
 *   many windows, beside the same idle p50: what any CPU-bound work of that length costs B's
 *   round trips on this machine, so the host's share of the unmap figure stands apart.
 * `quick` stops at 16k mappings, releases 256 PASIDs and repeats less.
 */
import { startHost, type StartedHost } from '../harness/start-host.js';
import { percentile, stat, type BenchFigure, type BenchModule, type BenchOptions } from './types.js';
import { ratioFigure } from './pingpong-baseline.js';
import { FairnessVmProcess } from './fairness-vm-process.js';
import { CpuSpinner } from './cpu-spinner.js';
import { FrontendClient, ProtocolFeature } from '../../../vhost/index.js';
import { isVsvaError } from '../../errors.js';

const PAGE = 0x1000n;
const GUEST_RAM = 16 * 1024 * 1024;

/** CLOCK_MONOTONIC in ms: the clock of B's samples (scripts/fairness-vm.ts) and of the windows here. */
const monoMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/** B's VCMD round trips (each: when it ended, µs) from `loop start` until `stop()`, measured in B's process. */
async function vcmdLoop(b: FairnessVmProcess): Promise<{ stop: () => Promise<{ at: number; us: number }[]> }> {
  await b.command('loop start');
  return {
    stop: async () =>
      (await b.command('loop stop')).map((x) => {
        const [at, us] = x.split(':').map(Number);
        return { at: at!, us: us! };
      }),
  };
}

/** B's round trips that ended inside the window [t0, t1], and the first one after it (it waited longest). */
function windowSamples(samples: { at: number; us: number }[], t0: number, t1: number): number[] {
  const inside = samples.filter((s) => s.at >= t0 && s.at <= t1).map((s) => s.us);
  const after = samples.find((s) => s.at > t1);
  if (after) inside.push(after.us);
  return inside;
}

/** Said in the notes of the figures whose busy VM runs in a process of its own (see the header). */
const OWN_PROCESS_A = 'each VM runs in a process of its own (as a VM does): the unmapping one and the other, which times its round trips itself';
const OWN_PROCESS_RELEASED = 'each VM runs in a process of its own (as a VM does): each released one, which closes its connection at the drop (as when a VM process dies) and exits after the window, and the other, which times its round trips itself';

/** Unmaps of 65,535 mappings (full run): B completes ~45 round trips during each. */
const BIG_UNMAP_REPS = 10;
/** Bound PASIDs of the VM whose release is timed. */
const RELEASE_PASIDS = 1024;
/** Timed releases (full run), each followed by a release of a VM with one bound PASID (the release floor). */
const RELEASE_REPS = 12;
/** Untimed releases before them: the host's release code runs cold (its own figure). */
const WARM_UP_RELEASES = 2;
/** B's round trips before the drop (ms). */
const PRE_DROP_MS = 300;

/** Collect this process's garbage (`--expose-gc`, as `npm run bench` runs) so that no collection of the bench's own heap lands in a timed window. */
function collectBenchGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * Time one VM release: start a VM named `name` in a process of its own with `pasids` PASIDs
 * bound, start B's loop, drop the VM's connection (its process closes it), and retry
 * VM_SETUP with its name (EEXIST until the host finished the release) from `probe`. Returns the
 * window [t0, t1] and B's samples.
 */
async function timeRelease(socket: string, probe: FrontendClient, b: FairnessVmProcess, name: string, pasids: number): Promise<{ t0: number; t1: number; retries: number; samples: { at: number; us: number }[] }> {
  const vm = await FairnessVmProcess.start(socket);
  try {
    await vm.command(`setup ${name} ${pasids} ${GUEST_RAM}`);
    await vm.command(`bind ${pasids}`);
    collectBenchGarbage();
    const loop = await vcmdLoop(b);
    let stopped: { at: number; us: number }[] | null = null;
    const stop = async () => (stopped ??= await loop.stop());
    let t0 = 0;
    let retries = 0;
    try {
      // B runs for a while before the drop: the host's first young-generation collection after
      // the 1024 binds copies their fresh objects (2–7 ms of CPU in one turn, measured), a cost
      // of binding that would otherwise land inside the release's window.
      await new Promise((res) => setTimeout(res, PRE_DROP_MS));
      t0 = monoMs();
      const dropped = vm.command('drop'); // the VM's connection closes with nothing unbound first
      dropped.catch(() => {}); // awaited below; a failure of the probe first must not leave it unhandled
      for (;;) {
        try {
          await probe.setupVm({ name, pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) });
          break;
        } catch (e) {
          if (!isVsvaError(e, 'EEXIST')) throw e;
          retries++;
          await new Promise((res) => setTimeout(res, 1));
        }
      }
      const t1 = monoMs();
      await dropped;
      await new Promise((res) => setTimeout(res, 10));
      return { t0, t1, retries, samples: await stop() };
    } finally {
      await stop();
    }
  } finally {
    await vm.stop();
  }
}

export interface UnmapPoint {
  mappings: number;
  unmapMs: number[];
  /** B's VCMD round trips (µs) that completed while the unmap was in flight. */
  otherUs: number[];
}

export const bench: BenchModule = {
  name: 'fairness',
  async run(opts: BenchOptions): Promise<BenchFigure[]> {
    const sizes = opts.quick ? [1024, 4096, 16384] : [1024, 4096, 16384, 65535];
    const reps = opts.quick ? 2 : 3;
    let host: StartedHost | null = null;
    let a: FairnessVmProcess | null = null;
    const others: FairnessVmProcess[] = [];
    try {
      opts.progress?.('[fairness] starting host and two VMs');
      host = await startHost({ graceMs: 0 });
      a = await FairnessVmProcess.start(host.socket);
      await a.command(`setup unmapper 4 ${GUEST_RAM}`);
      const b = await FairnessVmProcess.start(host.socket);
      others.push(b);
      await b.command(`setup bystander 16 ${GUEST_RAM}`);

      // B idle: VCMD round trips with nothing else running (timed in B's process).
      const idle = (await b.command('vcmd 1200')).slice(200).map(Number);
      // One-mapping DMA_UNMAP (the curve's baseline), 200 round trips timed in A's process.
      const [domain] = await a.command('domain');
      const single = (await a.command(`single ${domain} 200`)).map(Number);

      const points: UnmapPoint[] = [];
      for (const n of sizes) {
        const pt: UnmapPoint = { mappings: n, unmapMs: [], otherUs: [] };
        // The largest size carries the p99 figure: enough windows that the p99 is a percentile of
        // a few hundred round trips, not the second slowest of ~150.
        const runs = n >= 65535 ? BIG_UNMAP_REPS : reps;
        for (let r = 0; r < runs; r++) {
          opts.progress?.(`[fairness] ${n} mappings, run ${r + 1}/${runs}`);
          await a.command(`map ${domain} ${n}`);
          collectBenchGarbage();
          const loop = await vcmdLoop(b);
          await new Promise((res) => setTimeout(res, 30));
          const t0 = monoMs();
          const [unmapMs, unmapped] = await a.command(`unmap ${domain} ${n}`);
          const t1 = monoMs();
          await new Promise((res) => setTimeout(res, 10));
          const samples = await loop.stop();
          if (BigInt(unmapped ?? -1) !== BigInt(n) * PAGE) throw new Error(`fairness: DMA_UNMAP removed ${unmapped} bytes, expected ${BigInt(n) * PAGE}`);
          pt.unmapMs.push(Number(unmapMs));
          pt.otherUs.push(...windowSamples(samples, t0, t1));
        }
        points.push(pt);
      }
      lastPoints = points;
      lastIdle = idle;

      // Machine floor: the same windows with the host idle and a process outside vsva computing
      // for as long as the median largest unmap took.
      const biggest = points[points.length - 1]!;
      const spinMs = stat(biggest.unmapMs).median;
      const floorUs: number[] = [];
      const spinner = CpuSpinner.start();
      try {
        await spinner.spin(1); // the child is up and its loop compiled
        for (let r = 0; r < biggest.unmapMs.length; r++) {
          opts.progress?.(`[fairness] machine floor: a process outside vsva computes ${spinMs.toFixed(1)} ms, run ${r + 1}/${biggest.unmapMs.length}`);
          collectBenchGarbage();
          const loop = await vcmdLoop(b);
          await new Promise((res) => setTimeout(res, 30));
          const t0 = monoMs();
          await spinner.spin(spinMs);
          const t1 = monoMs();
          await new Promise((res) => setTimeout(res, 10));
          floorUs.push(...windowSamples(await loop.stop(), t0, t1));
        }
      } finally {
        await spinner.stop();
      }

      // VM release: B's round trips while a VM with RELEASE_PASIDS bound PASIDs is released.
      // WARM_UP_RELEASES untimed releases first (the host's release code runs cold in them, as
      // B's first 200 idle round trips above; their slowest round trip is a figure of its own),
      // then RELEASE_REPS timed ones, each followed by the release of a VM with one bound PASID
      // (the release floor): B completes ~15 round trips per release, so the p99 is not just the
      // single slowest round trip of a few releases.
      const releasePasids = opts.quick ? 256 : RELEASE_PASIDS;
      const releaseReps = opts.quick ? reps : RELEASE_REPS;
      const releaseMs: number[] = [];
      const duringRelease: number[] = [];
      const floorReleaseMs: number[] = [];
      const duringFloorRelease: number[] = [];
      // The first releases of the host process (its release code cold), reported on their own.
      const coldMs: number[] = [];
      const duringCold: number[] = [];
      let retries = 0;
      const socket = host.socket;
      const released = async (name: string, pasids: number) => {
        // A probe connection per run: its successful VM_SETUP makes it that VM's connection.
        const probe = await FrontendClient.connect({ path: socket });
        try {
          await probe.handshake({ require: ProtocolFeature.REPLY_ACK | ProtocolFeature.VSVA });
          const w = await timeRelease(socket, probe, b, name, pasids);
          return { ms: w.t1 - w.t0, retries: w.retries, inside: windowSamples(w.samples, w.t0, w.t1) };
        } finally {
          probe.close();
        }
      };
      for (let r = -WARM_UP_RELEASES; r < releaseReps; r++) {
        if (r < 0) {
          opts.progress?.(`[fairness] warm-up release ${r + WARM_UP_RELEASES + 1}/${WARM_UP_RELEASES} of a VM with ${releasePasids} bound PASIDs`);
          const w = await released(`releaser-warm-up-${r + WARM_UP_RELEASES}`, releasePasids);
          coldMs.push(w.ms);
          duringCold.push(...w.inside);
          continue;
        }
        opts.progress?.(`[fairness] release of a VM with ${releasePasids} bound PASIDs, then of one with 1, run ${r + 1}/${releaseReps}`);
        const w = await released(`releaser-${r}`, releasePasids);
        releaseMs.push(w.ms);
        retries += w.retries;
        duringRelease.push(...w.inside);
        const f = await released(`releaser-floor-${r}`, 1);
        floorReleaseMs.push(f.ms);
        duringFloorRelease.push(...f.inside);
      }
      lastRelease = { releaseMs, otherUs: duringRelease };

      const figs: BenchFigure[] = [];
      const singleStat = stat(single);
      for (const p of points) {
        const f = ratioFigure(`DMA_UNMAP of ${p.mappings} mappings (round trip)`, 'ms', stat(p.unmapMs), 'DMA_UNMAP of 1 mapping', singleStat, p.mappings >= 65535 ? '≤ 200 ms' : undefined, undefined, `other VM's VCMD during it: ${p.otherUs.length} round trips, p99 ${percentile(p.otherUs, 99).toFixed(0)} µs, max ${Math.max(...p.otherUs, 0).toFixed(0)} µs`);
        if (p.mappings >= 65535) f.met = f.value.median <= 200;
        figs.push(f);
      }
      const big = points[points.length - 1]!;
      const idleP50 = percentile(idle, 50);
      const p99 = percentile(big.otherUs, 99);
      const cross = ratioFigure(`other VM's VCMD round trip p99 while one VM unmaps ${big.mappings} mappings`, 'us', { median: p99, min: Math.min(...big.otherUs), max: Math.max(...big.otherUs), reps: big.otherUs.length }, "the same VM's idle VCMD round trip p50", { median: idleP50, min: Math.min(...idle), max: Math.max(...idle), reps: idle.length }, 'ratio ≤ 10', undefined, `${big.otherUs.length} round trips completed during ${big.unmapMs.length} unmaps (plus the first after each); idle p99 ${percentile(idle, 99).toFixed(0)} µs; ${OWN_PROCESS_A}`);
      cross.met = p99 <= 10 * idleP50;
      figs.push(cross);
      figs.push(ratioFigure(`other VM's VCMD round trip p50 while one VM unmaps ${big.mappings} mappings`, 'us', { median: percentile(big.otherUs, 50), min: Math.min(...big.otherUs), max: Math.max(...big.otherUs), reps: big.otherUs.length }, "the same VM's idle VCMD round trip p50", { median: idleP50, min: Math.min(...idle), max: Math.max(...idle), reps: idle.length }, undefined, undefined, 'the body of the distribution: what a slice adds to a typical round trip (the p99 above is bound by machine noise when the idle p99 is high); ' + OWN_PROCESS_A));
      const idleStat = { median: idleP50, min: Math.min(...idle), max: Math.max(...idle), reps: idle.length };
      figs.push(ratioFigure(`other VM's VCMD round trip p99 while a process outside vsva computes for as long as one unmap (machine floor)`, 'us', { median: percentile(floorUs, 99), min: Math.min(...floorUs), max: Math.max(...floorUs), reps: floorUs.length }, "the same VM's idle VCMD round trip p50", idleStat, undefined, undefined, `no target: beside the unmap figure above. ${biggest.unmapMs.length} windows of ${spinMs.toFixed(1)} ms (the median unmap of ${biggest.mappings} mappings) in which the host is idle and a plain node process spins on one CPU (no allocation, no I/O); ${floorUs.length} round trips, p50 ${percentile(floorUs, 50).toFixed(0)} µs. What any CPU-bound work of that length costs B on this machine; the host busy in its own slices costs more (docs/performance.md, "Fairness and snapshots")`));
      const relP99 = percentile(duringRelease, 99);
      const rel = ratioFigure(`other VM's VCMD round trip p99 while a VM with ${releasePasids} bound PASIDs is released`, 'us', { median: relP99, min: Math.min(...duringRelease), max: Math.max(...duringRelease), reps: duringRelease.length }, "the same VM's idle VCMD round trip p50", idleStat, 'ratio ≤ 10', undefined, `${duringRelease.length} round trips completed during ${releaseReps} releases (plus the first after each; after the host's first ${WARM_UP_RELEASES} releases, reported below as the cold figure); release floor (1 bound PASID, same windows) p99 ${percentile(duringFloorRelease, 99).toFixed(0)} µs; p50 ${percentile(duringRelease, 50).toFixed(0)} µs, max ${Math.max(...duringRelease, 0).toFixed(0)} µs; ${OWN_PROCESS_RELEASED}`);
      rel.met = relP99 <= 10 * idleP50;
      figs.push(rel);
      figs.push(ratioFigure(`other VM's VCMD round trip p99 while a VM with 1 bound PASID is released (release floor)`, 'us', { median: percentile(duringFloorRelease, 99), min: Math.min(...duringFloorRelease), max: Math.max(...duringFloorRelease), reps: duringFloorRelease.length }, "the same VM's idle VCMD round trip p50", idleStat, undefined, undefined, `no target: beside the figure above. The same windows (a VM process drops its connection, the bench probes for the name, the host releases) for a VM with one bound PASID, each right after a release of ${releasePasids}: ${duringFloorRelease.length} round trips, p50 ${percentile(duringFloorRelease, 50).toFixed(0)} µs, max ${Math.max(...duringFloorRelease, 0).toFixed(0)} µs; each such release took ${stat(floorReleaseMs).median.toFixed(1)} ms (median, drop → name reusable). What a VM's death costs the other VM on this machine whatever it held: its process's last work, the host's disconnect and the probe (docs/performance.md, "Fairness and snapshots")`));
      const coldMax = Math.max(...duringCold, 0);
      const cold = ratioFigure(`other VM's VCMD round trip max during the host's first ${WARM_UP_RELEASES} VM releases (cold code, ${releasePasids} bound PASIDs)`, 'us', { median: coldMax, min: Math.min(...duringCold), max: coldMax, reps: duringCold.length }, "the same VM's idle VCMD round trip p50", idleStat, 'ratio ≤ 10', undefined, `the warm-up releases that precede the timed ones (V8 optimizes the release code over the host's first two releases: --trace-opt showed most of it compiled during the second): ${duringCold.length} round trips, p50 ${percentile(duringCold, 50).toFixed(0)} µs; those releases took ${coldMs.map((ms) => ms.toFixed(1)).join(' and ')} ms (drop → name reusable); ${OWN_PROCESS_RELEASED}`);
      cold.met = coldMax <= 10 * idleP50;
      figs.push(cold);
      figs.push({
        name: `VM release with ${releasePasids} bound PASIDs (drop → name reusable)`,
        unit: 'ms',
        value: stat(releaseMs),
        notes: `from the connection drop (the bench tells the VM's process to close its connection; it exits after the window) until a VM_SETUP with the VM's name succeeds (retried every ~1 ms: ${retries} EEXIST answers in ${releaseReps} runs); the host releases in steps of ≤ 32 PASID routes / 128 PASIDs / one device / one domain`,
      });
      if (opts.quick) for (const f of figs) f.notes = `${f.notes ?? ''}; quick: up to 16k mappings, ${releasePasids} PASIDs released`;
      return figs;
    } finally {
      await Promise.all(others.map((g) => g.stop().catch(() => {})));
      await a?.stop();
      await host?.close().catch(() => {});
    }
  },
};

/** The last run's raw points (for the docs chart). */
export let lastPoints: UnmapPoint[] = [];
export let lastIdle: number[] = [];
export let lastRelease: { releaseMs: number[]; otherUs: number[] } = { releaseMs: [], otherUs: [] };
