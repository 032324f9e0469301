/**
 * The soak's guest processes: `vsva guest --workload mixed` children (their own checked SVA
 * workload; guest RAM passed to the host as a descriptor), killed with SIGKILL at random and
 * replaced by a new one under a new name (the killed VM's name stays taken for the host's grace
 * period). Each child reports "N check failures" on stderr every second; the largest figure a
 * child reported is its count of wrong results.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/vsva.js', import.meta.url));
/** A start compiles the sources through tsx: on a loaded 2-core machine that can take minutes. */
const READY_TIMEOUT_MS = 180_000;

interface Child {
  proc: ChildProcess;
  name: string;
  checkFailures: number;
  exited: Promise<void>;
}

export class GuestProcesses {
  private readonly children: Child[] = [];
  private serial = 0;
  /** Every process id ever started (their files count as the soak's). */
  readonly pids = new Set<number>();
  kills = 0;
  started = 0;
  /** Check failures of children that are gone. */
  private pastFailures = 0;
  readonly startErrors: string[] = [];
  /** Children that ended on their own, with their last words. */
  readonly exits: string[] = [];
  /** Children being started (not yet ready). */
  private readonly starting = new Set<Promise<void>>();
  private stopping = false;
  private readonly startingProcs = new Set<ChildProcess>();

  constructor(
    private readonly socket: string,
    private readonly count: number,
  ) {}

  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.count }, () => this.spawnOne()));
  }

  /** Wrong results the children reported (their workload's check failures). */
  get checkFailures(): number {
    return this.pastFailures + this.children.reduce((n, c) => n + c.checkFailures, 0);
  }

  get running(): number {
    return this.children.length;
  }

  /** VM names of the running children. */
  get names(): string[] {
    return this.children.map((c) => c.name);
  }

  /**
   * SIGKILL `n` random running children and start new ones in the background up to the count
   * (a child still starting counts; on a loaded machine a start takes tens of seconds).
   */
  async killAndReplace(n: number): Promise<void> {
    for (let i = 0; i < n && this.children.length > 0; i++) {
      const c = this.children.splice(Math.floor(Math.random() * this.children.length), 1)[0]!;
      this.pastFailures += c.checkFailures;
      c.proc.kill('SIGKILL');
      await c.exited;
      this.kills++;
    }
    for (let missing = this.count - this.children.length - this.starting.size; missing > 0; missing--) {
      const p: Promise<void> = this.spawnOne().finally(() => this.starting.delete(p));
      this.starting.add(p);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const p of this.startingProcs) p.kill('SIGKILL');
    await Promise.all(this.starting);
    const all = this.children.splice(0);
    for (const c of all) {
      this.pastFailures += c.checkFailures;
      c.proc.kill('SIGTERM');
    }
    await Promise.all(
      all.map(async (c) => {
        const t = setTimeout(() => c.proc.kill('SIGKILL'), 10_000);
        await c.exited;
        clearTimeout(t);
      }),
    );
  }

  private async spawnOne(): Promise<void> {
    const name = `soak-g-${process.pid}-${this.serial++}`;
    const args = [BIN, 'guest', '--socket', this.socket, '--name', name, '--memory', '8', '--quota', '64', '--workload', 'mixed', '--rate', '20', '--seed', String(this.serial)];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VSVA_FROM_SOURCE: '1', VSVA_LOG: 'silent' } });
    if (proc.pid !== undefined) this.pids.add(proc.pid);
    this.startingProcs.add(proc);
    let err = '';
    const child: Child = {
      proc,
      name,
      checkFailures: 0,
      exited: new Promise((r) =>
        proc.once('exit', (code, signal) => {
          // An exit the soak did not ask for: note why (the last lines the guest wrote).
          if (!this.stopping && signal !== 'SIGKILL' && signal !== 'SIGTERM' && this.exits.length < 10) this.exits.push(`${name}: exit ${code ?? signal} (${err.trim().split('\n').slice(-2).join(' | ')})`);
          const i = this.children.indexOf(child);
          if (i >= 0) {
            this.children.splice(i, 1);
            this.pastFailures += child.checkFailures;
          }
          r();
        }),
      ),
    };
    proc.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4096);
      for (const m of d.toString().matchAll(/(\d+) check failures/g)) child.checkFailures = Math.max(child.checkFailures, Number(m[1]));
    });
    const ready = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), READY_TIMEOUT_MS);
      proc.stdout!.on('data', (d: Buffer) => {
        if (/ VM .*up with /.test(d.toString())) {
          clearTimeout(t);
          resolve(true);
        }
      });
      proc.once('exit', () => {
        clearTimeout(t);
        resolve(false);
      });
    });
    this.startingProcs.delete(proc);
    this.started++;
    if (!ready || this.stopping) {
      if (!this.stopping && this.startErrors.length < 10) this.startErrors.push(`${name}: not ready (${err.trim().split('\n').slice(-2).join(' | ')})`);
      proc.kill('SIGKILL');
      return;
    }
    this.children.push(child);
  }
}
