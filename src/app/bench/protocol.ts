/**
 * Protocol benchmark (docs/design.md §9, first target; issue 3): request/reply round trip of the vhost
 * protocol between two processes — a FrontendClient here, a BackendServer in a child process —
 * beside a raw Node Unix-socket ping-pong of the same byte counts between two processes and a C
 * ping-pong (built with gcc into os.tmpdir() when gcc exists), all measured in the same run.
 *
 * The request is PASID_ALLOC (12-byte header + 8 bytes), the reply 12 + 8 status + 8 body bytes;
 * the raw ping-pongs move exactly 20 and 28 bytes. The baselines live in pingpong-baseline.ts
 * (shared with e2e-vtd.ts). Pipelined throughput keeps WINDOW requests
 * in flight (the raw baseline writes WINDOW messages at once and waits for WINDOW replies).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FrontendClient } from '../../../vhost/index.js';
import { stat, type BenchFigure, type BenchModule, type BenchOptions } from './types.js';
import { cPingPong, RawClient, ratioFigure, rttRuns, startPeer, throughputRuns, WINDOW, type Peer, type RttSample } from './pingpong-baseline.js';

export const bench: BenchModule = {
  name: 'protocol',
  async run(opts: BenchOptions): Promise<BenchFigure[]> {
    const reps = opts.quick ? 3 : 7;
    const iters = opts.quick ? 1500 : 5000;
    const warm = opts.quick ? 500 : 2000;
    const total = opts.quick ? WINDOW * 100 : WINDOW * 400;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-bench-protocol-'));
    const peers: Peer[] = [];
    try {
      opts.progress?.('[protocol] starting peers');
      const rawPeer = await startPeer(dir, 'raw');
      peers.push(rawPeer);
      const vhostPeer = await startPeer(dir, 'vhost');
      peers.push(vhostPeer);

      const raw = await RawClient.connect(rawPeer.socket);
      const fe = await FrontendClient.connect({ path: vhostPeer.socket });
      await fe.handshake();
      const req = { min: 1, max: 0xfffff };
      const window = new Array<Promise<unknown>>(WINDOW);
      const vhostWindow = (): Promise<unknown> => {
        for (let i = 0; i < WINDOW; i++) window[i] = fe.call('PASID_ALLOC', req);
        return Promise.all(window);
      };

      // Interleave the two Node measurements so that machine noise hits both alike.
      opts.progress?.('[protocol] round trips');
      const rawRtt: RttSample[] = [];
      const vRtt: RttSample[] = [];
      for (let r = 0; r < reps; r++) {
        rawRtt.push(...(await rttRuns(1, iters, r === 0 ? warm : 100, () => raw.roundTrip(1))));
        vRtt.push(...(await rttRuns(1, iters, r === 0 ? warm : 100, () => fe.call('PASID_ALLOC', req))));
      }
      opts.progress?.('[protocol] pipelined throughput');
      const rawTput: number[] = [];
      const vTput: number[] = [];
      for (let r = 0; r < reps; r++) {
        rawTput.push(...(await throughputRuns(1, total, () => raw.roundTrip(WINDOW))));
        vTput.push(...(await throughputRuns(1, total, vhostWindow)));
      }
      raw.close();
      fe.close();

      opts.progress?.('[protocol] C ping-pong');
      const c = cPingPong(dir, reps, iters * 4);

      const figs: BenchFigure[] = [
        ratioFigure('request/reply RTT p50 (vhost PASID_ALLOC, 2 processes)', 'us', stat(vRtt.map((s) => s.p50)), 'raw Node Unix-socket ping-pong p50', stat(rawRtt.map((s) => s.p50)), 'ratio <= 1.25', (r) => r <= 1.25),
        ratioFigure('request/reply RTT p99', 'us', stat(vRtt.map((s) => s.p99)), 'raw Node Unix-socket ping-pong p99', stat(rawRtt.map((s) => s.p99)), undefined, undefined),
        ratioFigure(`pipelined throughput (${WINDOW} in flight)`, 'ops/s', stat(vTput), `raw Node pipelined ping-pong`, stat(rawTput), undefined, undefined, 'ratio < 1 means slower than raw'),
      ];
      if (c) {
        figs.push(ratioFigure('request/reply RTT p50 vs C', 'us', stat(vRtt.map((s) => s.p50)), 'C ping-pong p50 (gcc -O2)', stat(c.map((s) => s.p50)), undefined, undefined, 'the machine floor'));
        figs.push(ratioFigure('raw Node ping-pong p50 vs C', 'us', stat(rawRtt.map((s) => s.p50)), 'C ping-pong p50 (gcc -O2)', stat(c.map((s) => s.p50)), undefined, undefined));
      } else {
        figs.push({ name: 'C ping-pong', unit: 'us', value: stat([]), notes: 'gcc not found; C baseline skipped' });
      }
      return figs;
    } finally {
      for (const p of peers) await p.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};
