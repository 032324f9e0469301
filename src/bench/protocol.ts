/**
 * Protocol benchmark (DESIGN §9, first target; issue 3): request/reply round trip of the vhost
 * protocol between two processes — a FrontendClient here, a BackendServer in a child process —
 * beside a raw Node Unix-socket ping-pong of the same byte counts between two processes and a C
 * ping-pong (built with gcc into os.tmpdir() when gcc exists), all measured in the same run.
 *
 * The request is PASID_ALLOC (12-byte header + 8 bytes), the reply 12 + 8 status + 8 body bytes;
 * the raw ping-pongs move exactly 20 and 28 bytes. Pipelined throughput keeps WINDOW requests
 * in flight (the raw baseline writes WINDOW messages at once and waits for WINDOW replies).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FrontendClient } from '../../vhost/index.js';
import { percentile, stat, type BenchFigure, type BenchModule, type BenchOptions, type Stat } from './types.js';

const REQ_BYTES = 20;
const REP_BYTES = 28;
const WINDOW = 128;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const peerScript = path.join(root, 'scripts', 'pingpong-peer.ts');
const cSource = path.join(root, 'scripts', 'pingpong.c');

interface Peer {
  socket: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startPeer(dir: string, mode: 'raw' | 'vhost'): Promise<Peer> {
  const socket = path.join(dir, `${mode}.sock`);
  const child = spawn(process.execPath, ['--import', 'tsx', peerScript, mode, socket, String(REQ_BYTES), String(REP_BYTES)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, VSVA_LOG: 'silent' },
  });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${mode} peer exited early (${code})`)));
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
  });
  return {
    socket,
    child,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.stdin!.end();
        setTimeout(() => child.kill(), 2000).unref();
      }),
  };
}

/** A raw Node client: write n×REQ_BYTES, resolve when n×REP_BYTES came back. */
class RawClient {
  private want = 0;
  private got = 0;
  private done: (() => void) | null = null;
  private readonly one = Buffer.alloc(REQ_BYTES);
  private readonly batch = Buffer.alloc(REQ_BYTES * WINDOW);

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.got += chunk.length;
      if (this.got >= this.want && this.done) {
        const d = this.done;
        this.done = null;
        d();
      }
    });
  }

  static connect(p: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: p }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  roundTrip(n: 1 | typeof WINDOW): Promise<void> {
    this.got = 0;
    this.want = n * REP_BYTES;
    const p = new Promise<void>((resolve) => (this.done = resolve));
    this.socket.write(n === 1 ? this.one : this.batch);
    return p;
  }

  close(): void {
    this.socket.destroy();
  }
}

interface RttSample {
  p50: number;
  p99: number;
}

async function rttRuns(reps: number, iters: number, warm: number, once: () => Promise<unknown>): Promise<RttSample[]> {
  for (let i = 0; i < warm; i++) await once();
  const out: RttSample[] = [];
  const t = new Array<number>(iters);
  for (let r = 0; r < reps; r++) {
    for (let i = 0; i < iters; i++) {
      const a = performance.now();
      await once();
      t[i] = (performance.now() - a) * 1000;
    }
    out.push({ p50: percentile(t, 50), p99: percentile(t, 99) });
  }
  return out;
}

async function throughputRuns(reps: number, total: number, window: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 20; i++) await window();
  const out: number[] = [];
  for (let r = 0; r < reps; r++) {
    const a = performance.now();
    for (let i = 0; i < total / WINDOW; i++) await window();
    out.push(total / ((performance.now() - a) / 1000));
  }
  return out;
}

function cPingPong(dir: string, reps: number, iters: number): RttSample[] | null {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  const bin = path.join(dir, 'pingpong');
  execFileSync('gcc', ['-O2', '-o', bin, cSource], { stdio: 'ignore' });
  const out: RttSample[] = [];
  for (let r = 0; r < reps; r++) {
    const [p50, p99] = execFileSync(bin, [String(iters), String(REQ_BYTES), String(REP_BYTES)], { encoding: 'utf8' })
      .trim()
      .split(/\s+/)
      .map((x) => Number(x) / 1000);
    out.push({ p50: p50!, p99: p99! });
  }
  return out;
}

function ratioFigure(name: string, unit: string, value: Stat, baseName: string, base: Stat, target: string | undefined, met: ((r: number) => boolean) | undefined, notes?: string): BenchFigure {
  const ratio = value.median / base.median;
  return { name, unit, value, baseline: { name: baseName, value: base }, ratio, ...(target ? { target } : {}), ...(met ? { met: met(ratio) } : {}), ...(notes ? { notes } : {}) };
}

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
