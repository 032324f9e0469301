/**
 * End-to-end VT-d benchmarks across two processes (docs/design.md §9): the host half is spawned
 * (`startHost()`), the guest half (vVT-d model + guest driver model) runs in this process, and
 * every figure is what a guest observes through its register window and guest RAM.
 *
 * - VCMD PASID allocation round trip: guest writes VCMD = ALLOC_PASID → the model sends
 *   PASID_ALLOC to the host → VCRSP shows IP clear with the result. Timed from the register
 *   write to the VCRSP read that sees IP clear (the guest polls, yielding to the event loop
 *   between polls as a vCPU would spin; the command value is encoded once and the poll tests
 *   IP alone, decoding the response after the clock stops, as a driver's tight loop would).
 *   Each allocation is freed (FREE_PASID, untimed) right before the next timed allocation, so
 *   the quota never runs out and every timed allocation follows a free at once, whatever the
 *   host still does after it. Baselines in the same run: raw Node Unix-socket ping-pong between
 *   two processes with PASID_ALLOC's byte counts, and the C ping-pong (pingpong-baseline.ts).
 *   Target: p50 ≤ 1.25 × the raw Node ping-pong, in every one of VCMD_RUNS runs (the figure
 *   "VCMD round trip ratio, worst of 5 interleaved runs" lists each run's ratio).
 *   Method: the two sides are interleaved pair by pair — each A/B pair is one raw round trip and
 *   one timed allocation, back to back, the order alternating from pair to pair (ABBA…) — so
 *   both samples of a pair see the same machine state (CPU placement, frequency, the other
 *   processes' load), which on a shared 2-CPU machine changes within a fraction of a second.
 *   (Blocks of 2,000 round trips of one side then the other, ~160 ms each, let drift between
 *   blocks enter the ratio: raw p50 moved 47–102 µs within one run.) A run is
 *   round(reps / 3) × iters pairs; its ratio is the p50 of its VCMD samples over the p50 of its
 *   raw samples. Every sample is kept and nothing else changes what is timed. Interleaving
 *   evens out time, not placement: the raw peer and the host are different processes, and on
 *   two CPUs a peer on this process's CPU answers by direct hand-over while one on the other
 *   CPU needs a cross-CPU wake-up. Each run therefore samples (untimed, every PLACEMENT_EVERY
 *   pairs) where each peer last ran (cpu-pin.ts PlacementSampler) and its figure notes say so;
 *   and the runs are repeated with the processes pinned apart (cpu-pin.ts), both peers on the
 *   other CPU. Both sides of a pair wake their peer the same way: a timed allocation follows an
 *   untimed FREE_PASID to the host, so a timed raw round trip follows an untimed one to the raw
 *   peer. (With one raw round trip per pair against two host round trips, the scheduler pulled
 *   the raw peer onto this process's CPU in up to 92 % of samples, the host in ≤ 11 %: the ratio
 *   then compared wake-up patterns, not work.)
 * - PASID bind round trip: the guest driver writes a PASID entry (first-level, nested), issues a
 *   PASID-cache invalidation and a wait descriptor, and waits for the status write; the host
 *   has bound the PASID when the status lands. Baseline: the raw Node ping-pong (one bind costs
 *   one BIND_GPASID round trip plus queue processing).
 * - Batched PASID-based IOTLB invalidations: one queue run of many page-selective PIOTLB
 *   descriptors and one wait descriptor in a 256-bit queue; descriptors per second from the IQT
 *   write to the wait status in guest RAM (the host's IOTLB has been invalidated when it lands).
 *   Before each run the PASID does DMA over every page the descriptors name (untimed), so its
 *   host IOTLB is full and every descriptor removes a cached translation. Target ≥ 500,000/s.
 *   The fill's garbage (32 MiB of DMA buffers) is collected before each timed window and before
 *   each baseline transfer (`gc()` under --expose-gc), so neither pays for untimed set-up.
 *   Two orders of the same descriptors: ascending pages, which the model forwards as aligned
 *   blocks (guest/vtd/invalidation-queue.ts), and the same pages shuffled, where every
 *   descriptor is forwarded on its own — the cost of invalidations nothing can merge.
 *   Baseline: a raw Node transfer of the same bytes (the descriptors) to a peer process that
 *   answers once it has them all, as descriptors per second.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startHost, type StartedHost } from '../harness/start-host.js';
import { startGuest, type StartedGuest } from '../harness/start-guest.js';
import { encodeVcmd, VCMD_CMD, VCMD_LAYOUTS, VCMD_REG_OFFSETS } from '../../vtd/vcmd.js';
import { percentile, stat, type BenchFigure, type BenchModule, type BenchOptions } from './types.js';
import { cPingPong, RawClient, ratioFigure, rttRuns, startPeer, throughputRuns, WINDOW, type Peer, type RttSample } from './pingpong-baseline.js';
import { BENCH_BUFFER_VA, VtdBenchDriver } from './vtd-bench-driver.js';
import { PlacementSampler, pinApart } from './cpu-pin.js';
import { DEVICE_DMA_MAX_LENGTH } from '../../../vhost/messages/device-dma.js';

const LAYOUT = '3.1' as const;
const VCMD_OFF = VCMD_REG_OFFSETS[LAYOUT].VCMD;
const VCRSP_OFF = VCMD_REG_OFFSETS[LAYOUT].VCRSP;

const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));
/** Interleaved A/B runs of the VCMD round trip; the ratio target holds in each (docs/performance.md). */
const VCMD_RUNS = 5;
/** How the VCMD figures pair their samples (their notes start with it; the header explains why). */
const PAIRING = 'interleaved pair by pair: one raw ping-pong and one VCMD allocation per A/B pair, in alternating order, the previous PASID freed (FREE_PASID, untimed) right before each timed allocation and an untimed raw round trip right before each timed one, so both peers are woken alike';

interface RunRatio {
  ratio: number;
  vcmd: number;
  raw: number;
  /** Share of samples with the host, and with the raw peer, last on this process's CPU. */
  together: [number, number] | null;
}
/** Pairs between two placement samples (cpu-pin.ts PlacementSampler; untimed). */
const PLACEMENT_EVERY = 64;
/** The guest's default assigned device (guest/vm.ts DEFAULT_DEVICES). */
const BENCH_DEVICE = '00:03.0';

/** A raw Unix-socket client that sends one buffer and resolves when the peer's reply (16 bytes) is in. */
class BulkClient {
  private got = 0;
  private done: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.got += chunk.length;
      if (this.got >= 16 && this.done) {
        const d = this.done;
        this.done = null;
        this.got -= 16;
        d();
      }
    });
  }

  static connect(p: string): Promise<BulkClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: p }, () => resolve(new BulkClient(s)));
      s.once('error', reject);
    });
  }

  transfer(bytes: Uint8Array): Promise<void> {
    const p = new Promise<void>((resolve) => (this.done = resolve));
    this.socket.write(bytes);
    return p;
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * The `size`-byte records of `bytes` in a fixed pseudo-random order (Fisher–Yates with a 32-bit
 * LCG, seed constant so every run invalidates in the same order).
 */
function shuffleDescriptors(bytes: Uint8Array, size: number): Uint8Array {
  const n = bytes.length / size;
  const order = Array.from({ length: n }, (_, i) => i);
  let x = 0x2545f491;
  for (let i = n - 1; i > 0; i--) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const j = (x >>> 8) % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < n; i++) out.set(bytes.subarray(order[i]! * size, order[i]! * size + size), i * size);
  return out;
}

/** VCMD = ALLOC_PASID, encoded once (a driver writes a constant). */
const ALLOC_CMD = encodeVcmd(LAYOUT, VCMD_CMD.ALLOC_PASID, 0);
const OPERAND_SHIFT = BigInt(VCMD_LAYOUTS[LAYOUT].operandShift);
const FREE_CMD = BigInt(VCMD_CMD.FREE_PASID);
/** VCMD = FREE_PASID of `pasid`, as a driver builds it (operand shifted in, OR the command). */
const freeCmd = (pasid: number): bigint => (BigInt(pasid) << OPERAND_SHIFT) | FREE_CMD;
const SC_SHIFT = BigInt(VCMD_LAYOUTS[LAYOUT].scShift);
const SC_MASK = BigInt(VCMD_LAYOUTS[LAYOUT].scMask);
/** VCRSP's status code and result (a PASID), as a driver's loop reads them (decodeVcrsp's fields). */
const vcrspSc = (rsp: bigint): number => Number((rsp >> SC_SHIFT) & SC_MASK);
const vcrspPasid = (rsp: bigint): number => Number((rsp >> OPERAND_SHIFT) & 0xfffffn);

/**
 * One VCMD command as a guest issues it: write VCMD, poll VCRSP until IP (bit 0 in both layouts)
 * clears; the response is decoded after that, outside what the caller times.
 */
async function vcmdRaw(guest: StartedGuest, value: bigint): Promise<bigint> {
  await guest.writeq(VCMD_OFF, value);
  for (;;) {
    const r = await guest.readq(VCRSP_OFF);
    if ((r & 1n) === 0n) return r;
    await yieldToLoop();
  }
}

export const bench: BenchModule = {
  name: 'e2e-vtd',
  async run(opts: BenchOptions): Promise<BenchFigure[]> {
    const reps = opts.quick ? 3 : 7;
    const iters = opts.quick ? 400 : 2000;
    const warm = opts.quick ? 200 : 1000;
    const binds = opts.quick ? 100 : 500;
    // One descriptor per page the PASID has DMA'd over (its host IOTLB holds every one of them).
    const batch = opts.quick ? 4096 : 8192;
    const batchReps = opts.quick ? 3 : 7;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-bench-e2e-'));
    const peers: Peer[] = [];
    let host: StartedHost | null = null;
    let guest: StartedGuest | null = null;
    let raw: RawClient | null = null;
    try {
      // The C floor first, while no host or guest process competes for the CPUs.
      opts.progress?.('[e2e-vtd] C ping-pong');
      const c = cPingPong(dir, reps, iters * 4);
      opts.progress?.('[e2e-vtd] starting host, guest and ping-pong peer');
      host = await startHost({ graceMs: 0 });
      guest = await startGuest({ socket: host.socket, name: 'bench-vtd', viommu: 'vtd', vcmd: LAYOUT, memory: 128 * 1024 * 1024, pasidQuota: 4096 });
      const rawPeer = await startPeer(dir, 'raw');
      peers.push(rawPeer);
      raw = await RawClient.connect(rawPeer.socket);
      const g = guest;
      const r = raw;
      const hostPid = host.pid;

      // VCMD alloc round trip, interleaved with the raw ping-pong pair by pair (see the header).
      opts.progress?.('[e2e-vtd] VCMD PASID allocation round trips');
      let pending = -1;
      /** FREE_PASID of the allocation still held (untimed); a no-op when none is. */
      const freePending = async (): Promise<void> => {
        if (pending < 0) return;
        const sc = vcrspSc(await vcmdRaw(g, freeCmd(pending)));
        if (sc !== 0) throw new Error(`VCMD FREE_PASID ${pending} failed with VCRSP.SC=${sc}`);
        pending = -1;
      };
      /**
       * One timed allocation: the previous allocation is freed first (untimed), so every timed
       * ALLOC_PASID follows a FREE_PASID at once, whatever the host still does after that free.
       * Timed from the VCMD write to the VCRSP read that sees IP clear; the PASID stays held.
       */
      const timedAlloc = async (): Promise<number> => {
        await freePending();
        const a = performance.now();
        const rsp = await vcmdRaw(g, ALLOC_CMD);
        const us = (performance.now() - a) * 1000;
        const sc = vcrspSc(rsp);
        if (sc !== 0) throw new Error(`VCMD ALLOC_PASID failed with VCRSP.SC=${sc}`);
        pending = vcrspPasid(rsp);
        return us;
      };
      /** One timed raw round trip, right after an untimed one (as the allocation follows its free). */
      const timedRaw = async (): Promise<number> => {
        await r.roundTrip(1);
        const a = performance.now();
        await r.roundTrip(1);
        return (performance.now() - a) * 1000;
      };
      const vRtt: RttSample[] = [];
      const rawRtt: RttSample[] = [];
      // VCMD_RUNS runs of `pairsPerRun` A/B pairs; a run's ratio is the p50 of its VCMD samples
      // over the p50 of its raw samples. The target holds in every run (worst of the runs).
      const repsPerRun = Math.max(1, Math.round(reps / 3));
      const pairsPerRun = repsPerRun * iters;
      let warmed = false;
      const vcmdRuns = async (keep: boolean): Promise<RunRatio[]> => {
        const runRatios: RunRatio[] = [];
        for (let run = 0; run < VCMD_RUNS; run++) {
          // Untimed pairs first (the first run warms the JITs of every process involved).
          const warmPairs = warmed ? 50 : warm;
          warmed = true;
          for (let i = 0; i < warmPairs; i++) {
            await timedRaw();
            await timedAlloc();
          }
          const runV = new Array<number>(pairsPerRun);
          const runR = new Array<number>(pairsPerRun);
          const placement = new PlacementSampler([hostPid, rawPeer.child.pid!]);
          for (let i = 0; i < pairsPerRun; i++) {
            if (i % PLACEMENT_EVERY === 0) placement.sample();
            // One A/B pair, the order alternating (ABBA…) so neither side always comes first.
            if ((i & 1) === 0) {
              runR[i] = await timedRaw();
              runV[i] = await timedAlloc();
            } else {
              runV[i] = await timedAlloc();
              runR[i] = await timedRaw();
            }
          }
          // p50/p99 per `iters` consecutive pairs, for the overall figures (as many samples as before).
          if (keep) {
            for (let from = 0; from < pairsPerRun; from += iters) {
              const v = runV.slice(from, from + iters);
              const w = runR.slice(from, from + iters);
              vRtt.push({ p50: percentile(v, 50), p99: percentile(v, 99) });
              rawRtt.push({ p50: percentile(w, 50), p99: percentile(w, 99) });
            }
          }
          const vm = percentile(runV, 50);
          const rm = percentile(runR, 50);
          runRatios.push({ ratio: vm / rm, vcmd: vm, raw: rm, together: placement.shares() });
        }
        await freePending();
        return runRatios;
      };
      const runRatios = await vcmdRuns(true);
      // The same runs with this process on CPU 0 and the host and the ping-pong peer on CPU 1
      // (cpu-pin.ts): both sides of every A/B pair under one placement.
      opts.progress?.('[e2e-vtd] VCMD round trips, processes pinned apart');
      const unpin = pinApart([host.pid, rawPeer.child.pid!]);
      let pinnedRatios: RunRatio[] | null = null;
      try {
        if (unpin !== null) pinnedRatios = await vcmdRuns(false);
      } finally {
        unpin?.();
      }
      /** Per run, the share of placement samples with the host / the raw peer last on this process's CPU. */
      const placementNote = (rs: RunRatio[]): string =>
        `placement, share of samples with the host / the raw peer last on the bench process's CPU, per run: ${rs.map((x) => (x.together === null ? 'n/a' : `${x.together[0].toFixed(2)}/${x.together[1].toFixed(2)}`)).join(', ')}`;
      const worstOf = (rs: RunRatio[]): RunRatio => rs.reduce((a, b) => (b.ratio > a.ratio ? b : a));
      const worst = worstOf(runRatios);

      opts.progress?.('[e2e-vtd] PASID bind round trips');
      const drv = await VtdBenchDriver.create(g, { bufferBytes: batch * 4096 });
      const bindT: number[] = [];
      const rawBind: RttSample[] = [];
      const bindP50: number[] = [];
      const bindP99: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        rawBind.push(...(await rttRuns(1, iters, 50, () => r.roundTrip(1))));
        bindT.length = 0;
        for (let i = 0; i < binds; i++) {
          const pasid = await drv.allocPasid();
          const a = performance.now();
          await drv.bindPasid(pasid);
          bindT.push((performance.now() - a) * 1000);
          await drv.unbindPasid(pasid);
          await drv.freePasid(pasid);
        }
        const s = [...bindT].sort((x, y) => x - y);
        bindP50.push(s[Math.ceil(s.length / 2) - 1]!);
        bindP99.push(s[Math.ceil(s.length * 0.99) - 1]!);
      }

      opts.progress?.(`[e2e-vtd] batched PIOTLB invalidations (${batch} per run)`);
      const bound = await drv.allocPasid();
      await drv.bindPasid(bound);
      const invRates: number[] = [];
      const shuffledRates: number[] = [];
      const rawRates: number[] = [];
      // One descriptor per buffer page: each removes a cached translation from the host's IOTLB.
      const prepared = drv.prepareBatch(bound, batch, BENCH_BUFFER_VA >> 12n);
      const shuffled = shuffleDescriptors(prepared, 32);
      // Baseline: the same bytes (the descriptors) sent raw to a peer that answers with 16 bytes
      // once it has them all, between the same two kinds of process.
      const bulkPeer = await startPeer(dir, 'raw', { req: prepared.length, rep: 16 });
      peers.push(bulkPeer);
      const bulk = await BulkClient.connect(bulkPeer.socket);
      const collect = (globalThis as { gc?: () => void }).gc ?? (() => {});
      try {
        // The PASID DMAs over every buffer page (untimed): its host IOTLB is full before each run.
        const fillIotlb = async (): Promise<void> => {
          for (let off = 0; off < batch * 4096; off += DEVICE_DMA_MAX_LENGTH) {
            const res = await g.dma(BENCH_DEVICE, { pasid: bound, addr: BENCH_BUFFER_VA + BigInt(off), length: Math.min(DEVICE_DMA_MAX_LENGTH, batch * 4096 - off) });
            if (!res.ok) throw new Error(`bench DMA over the PASID's buffer faulted (reason ${res.fault.reason})`);
          }
          collect();
        };
        const timedRun = async (bytes: Uint8Array): Promise<number> => {
          await fillIotlb();
          const a = performance.now();
          await drv.submitBytes(bytes);
          return batch / ((performance.now() - a) / 1000);
        };
        // Warm-up: two whole runs of each order, so the queue's, the codec's and the host's loops
        // are compiled before the first timed run (one short run left the first repetition at a
        // third of the rest).
        for (let w = 0; w < 2; w++) {
          await timedRun(prepared);
          await timedRun(shuffled);
          await bulk.transfer(prepared);
        }
        for (let rep = 0; rep < batchReps; rep++) {
          invRates.push(await timedRun(prepared));
          shuffledRates.push(await timedRun(shuffled));
          collect();
          const a = performance.now();
          await bulk.transfer(prepared);
          rawRates.push(batch / ((performance.now() - a) / 1000));
        }
      } finally {
        bulk.close();
      }

      const figs: BenchFigure[] = [
        ratioFigure('VCMD PASID alloc round trip p50 (guest VCMD write → VCRSP ready, 2 processes)', 'us', stat(vRtt.map((s) => s.p50)), 'raw Node Unix-socket ping-pong p50', stat(rawRtt.map((s) => s.p50)), 'ratio <= 1.25', (x) => x <= 1.25,
          `${PAIRING}; value and baseline: median of the p50s of blocks of ${iters} consecutive pairs`),
        ratioFigure(`VCMD round trip ratio, worst of ${VCMD_RUNS} interleaved runs`, 'us', stat([worst.vcmd]), 'raw Node Unix-socket ping-pong p50 of the same run', stat([worst.raw]), 'every run ratio <= 1.25', () => runRatios.every((x) => x.ratio <= 1.25),
          `${PAIRING}; a run is ${pairsPerRun} pairs and its ratio is the p50 of its VCMD samples over the p50 of its raw samples; per run: ${runRatios.map((x) => x.ratio.toFixed(3)).join(', ')}; value and baseline are the worst run's; ${placementNote(runRatios)} (a peer on the same CPU answers by direct hand-over, one on the other CPU needs a cross-CPU wake-up: runs whose two peers sat differently compare placements, see the pinned figure)`),
        ...(pinnedRatios === null ? [] : [ratioFigure(`VCMD round trip ratio, worst of ${VCMD_RUNS} interleaved runs (processes pinned apart)`, 'us', stat([worstOf(pinnedRatios).vcmd]), 'raw Node Unix-socket ping-pong p50 of the same run, same placement', stat([worstOf(pinnedRatios).raw]), 'every run ratio <= 1.25', () => pinnedRatios!.every((x) => x.ratio <= 1.25),
          `as the figure above (same pairing, ${pairsPerRun} pairs per run) with the bench process on CPU 0 and the host and the ping-pong peer on CPU 1 (taskset), so the two sides of each A/B pair run under one placement; per run: ${pinnedRatios.map((x) => x.ratio.toFixed(3)).join(', ')}; ${placementNote(pinnedRatios)}`)]),
        ratioFigure('VCMD PASID alloc round trip p99', 'us', stat(vRtt.map((s) => s.p99)), 'raw Node Unix-socket ping-pong p99', stat(rawRtt.map((s) => s.p99)), undefined, undefined, `${PAIRING}; median of the p99s of blocks of ${iters} consecutive pairs`),
        ratioFigure('PASID bind round trip p50 (PASID entry + PC flush + wait → host bound)', 'us', stat(bindP50), 'raw Node Unix-socket ping-pong p50', stat(rawBind.map((s) => s.p50)), 'ratio <= 3', (x) => x <= 3, 'docs/design.md §9: ≤ 3× raw ping-pong; one BIND_GPASID round trip plus queue processing'),
        ratioFigure('PASID bind round trip p99', 'us', stat(bindP99), 'raw Node Unix-socket ping-pong p99', stat(rawBind.map((s) => s.p99)), undefined, undefined),
        {
          ...ratioFigure(
            `batched PIOTLB invalidations, full IOTLB (${batch} page descriptors + 1 wait)`,
            'ops/s',
            stat(invRates),
            `raw Node transfer of the same ${batch * 32} bytes + 16-byte reply, in descriptors/s`,
            stat(rawRates),
            '>= 500000 ops/s',
            undefined,
            'end to end: guest IQT write → host IOTLB entries removed → wait status written; before each run the PASID DMAs over every page the descriptors name (untimed, its garbage collected before the clock starts), so its host IOTLB holds them all; descriptors in ascending page order, which the model forwards as aligned blocks; ratio = descriptors/s over the raw transfer of the same bytes',
          ),
          met: stat(invRates).median >= 500_000,
        },
        {
          ...ratioFigure(
            `batched PIOTLB invalidations, full IOTLB, pages shuffled (${batch} page descriptors + 1 wait)`,
            'ops/s',
            stat(shuffledRates),
            `raw Node transfer of the same ${batch * 32} bytes + 16-byte reply, in descriptors/s`,
            stat(rawRates),
            '>= 500000 ops/s',
            undefined,
            'as the figure above with the same descriptors in a shuffled order, so no two adjacent descriptors name adjacent pages and each is forwarded and applied on its own',
          ),
          met: stat(shuffledRates).median >= 500_000,
        },
      ];
      if (c) {
        figs.push(ratioFigure('VCMD PASID alloc round trip p50 vs C', 'us', stat(vRtt.map((s) => s.p50)), 'C ping-pong p50 (gcc -O2)', stat(c.map((s) => s.p50)), undefined, undefined, 'the machine floor'));
      } else {
        figs.push({ name: 'C ping-pong', unit: 'us', value: stat([]), notes: 'gcc not found; C baseline skipped' });
      }
      if (opts.quick) for (const f of figs) f.notes = [f.notes, `quick: ${iters} round trips × ${reps} reps, ${binds} binds, ${batch}-descriptor batches`].filter(Boolean).join('; ');
      return figs;
    } finally {
      raw?.close();
      await guest?.close().catch(() => {});
      await host?.close().catch(() => {});
      for (const p of peers) await p.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};
