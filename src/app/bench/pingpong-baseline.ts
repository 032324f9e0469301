/**
 * Round-trip baselines shared by the benchmarks that time a request/reply between two
 * processes (protocol.ts, e2e-vtd.ts): a raw Node Unix-socket ping-pong with a peer process
 * (scripts/pingpong-peer.ts), a C ping-pong built with the machine's gcc (scripts/pingpong.c,
 * the machine's floor), and the timing loops. Measuring these in the same run as the figure
 * they sit beside is what makes a ratio meaningful on a shared, noisy machine.
 *
 * Default message sizes are those of PASID_ALLOC: a 20-byte request (12-byte header + 8) and a
 * 28-byte reply (12 + 8 status + 8 body).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { percentile, type BenchFigure, type Stat } from './types.js';

export const REQ_BYTES = 20;
export const REP_BYTES = 28;
/** Requests in flight in the pipelined throughput runs. */
export const WINDOW = 128;

// The repository root: three levels up from src/app/bench/*.ts, four from dist/src/app/bench/*.js.
// The peer script and the C source are repository files (the benchmarks run from a checkout).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '../../..' : '../../../..');
const peerScript = path.join(root, 'scripts', 'pingpong-peer.ts');
const cSource = path.join(root, 'scripts', 'pingpong.c');

export interface Peer {
  socket: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Start a ping-pong peer process listening on `<dir>/<mode>.sock` (raw mode: answering every
 * `req` bytes with `rep` bytes, default the PASID_ALLOC sizes; raw-native: the same through the
 * native reader and sendmsg, as the vsva host's connections); resolves once it is ready.
 */
export async function startPeer(dir: string, mode: 'raw' | 'raw-native' | 'vhost', sizes: { req: number; rep: number } = { req: REQ_BYTES, rep: REP_BYTES }): Promise<Peer> {
  const socket = path.join(dir, `${mode}-${sizes.req}-${sizes.rep}.sock`);
  const child = spawn(process.execPath, ['--import', 'tsx', peerScript, mode, socket, String(sizes.req), String(sizes.rep)], {
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
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.stdin!.end();
        setTimeout(() => child.kill(), 2000).unref();
      }),
  };
}

/** A raw Node client: write n×REQ_BYTES, resolve when n×REP_BYTES came back. */
export class RawClient {
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

export interface RttSample {
  /** Microseconds. */
  p50: number;
  p99: number;
}

/** `reps` repetitions of `iters` sequential round trips (after `warm` untimed ones): p50/p99 in µs. */
export async function rttRuns(reps: number, iters: number, warm: number, once: () => Promise<unknown>): Promise<RttSample[]> {
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

/** Pipelined throughput: `total` operations as windows of WINDOW, ops/s per repetition. */
export async function throughputRuns(reps: number, total: number, window: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 20; i++) await window();
  const out: number[] = [];
  for (let r = 0; r < reps; r++) {
    const a = performance.now();
    for (let i = 0; i < total / WINDOW; i++) await window();
    out.push(total / ((performance.now() - a) / 1000));
  }
  return out;
}

/**
 * The C ping-pong (two processes, Unix socket), or null when gcc is missing. p50/p99 in µs.
 * `sizes`: request and reply bytes (default PASID_ALLOC's).
 */
export function cPingPong(dir: string, reps: number, iters: number, sizes: { req: number; rep: number } = { req: REQ_BYTES, rep: REP_BYTES }): RttSample[] | null {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  const bin = path.join(dir, 'pingpong');
  execFileSync('gcc', ['-O2', '-o', bin, cSource], { stdio: 'ignore' });
  const out: RttSample[] = [];
  for (let r = 0; r < reps; r++) {
    const [p50, p99] = execFileSync(bin, [String(iters), String(sizes.req), String(sizes.rep)], { encoding: 'utf8' })
      .trim()
      .split(/\s+/)
      .map((x) => Number(x) / 1000);
    out.push({ p50: p50!, p99: p99! });
  }
  return out;
}

/** A figure beside its baseline with ratio = value / baseline (medians). */
export function ratioFigure(
  name: string,
  unit: string,
  value: Stat,
  baseName: string,
  base: Stat,
  target: string | undefined,
  met: ((r: number) => boolean) | undefined,
  notes?: string,
): BenchFigure {
  const ratio = value.median / base.median;
  return {
    name,
    unit,
    value,
    baseline: { name: baseName, value: base },
    ratio,
    ...(target ? { target } : {}),
    ...(met ? { met: met(ratio) } : {}),
    ...(notes ? { notes } : {}),
  };
}
