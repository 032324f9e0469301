/**
 * A process outside vsva that computes on request: the fairness bench's machine floor. While one
 * VM unmaps, the host keeps one CPU busy; the same VM's round trips measured while this process
 * keeps a CPU busy for as long show what any CPU-bound work on the machine costs them, so the
 * host's share of the unmap figure stands apart from the machine's (docs/performance.md,
 * "Fairness and snapshots").
 *
 * The child is a plain `node -e` loop: a line "<ms>" on its stdin makes it spin (no allocation,
 * no I/O) until that much wall-clock time has passed, then print "done". stdin's end = exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { stopChild } from './stop-child.js';

const SPIN_SCRIPT = `
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  for (let nl = buf.indexOf('\\n'); nl >= 0; nl = buf.indexOf('\\n')) {
    const ms = Number(buf.slice(0, nl));
    buf = buf.slice(nl + 1);
    const end = performance.now() + ms;
    while (performance.now() < end);
    process.stdout.write('done\\n');
  }
});
`;

export class CpuSpinner {
  private readonly waiting: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private buf = '';
  private exitError: Error | null = null;
  /** Resolves when the child has exited. */
  readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    child.stdin!.on('error', () => {}); // a spin asked after the child died fails in spin()
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.buf += d;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        this.buf = this.buf.slice(nl + 1);
        this.waiting.shift()?.resolve();
      }
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitError = new Error(`CPU spinner exited (${signal ?? code})`);
        for (const w of this.waiting.splice(0)) w.reject(this.exitError);
        resolve();
      });
    });
  }

  /** Start the spinner process. */
  static start(): CpuSpinner {
    return new CpuSpinner(spawn(process.execPath, ['-e', SPIN_SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] }));
  }

  /** The child's process id. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Keep one CPU busy for `ms` milliseconds of wall-clock time; resolves when the child says done. */
  spin(ms: number): Promise<void> {
    if (!(Number.isFinite(ms) && ms >= 0)) return Promise.reject(new RangeError(`spin time must be a finite number of ms ≥ 0, not ${ms}`));
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.child.stdin!.write(`${ms}\n`);
    });
  }

  /** End stdin (the child exits); kill it if it has not exited after a grace period. */
  stop(): Promise<void> {
    return stopChild(this.child, this.exited);
  }
}
