/**
 * The bench side of a fairness-benchmark VM that runs in a process of its own
 * (scripts/fairness-vm.ts, which documents the line commands): as every VM is its own process
 * in a deployment, the busy VMs' guest-side work does not run in the bystander VM's event loop.
 * Started like the ping-pong peer (pingpong-baseline.ts startPeer): `node --import tsx` on the
 * repository's script, "ready" on stdout, stdin's end = exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { existingHarnessMemoryDir } from '../harness/harness-memory-dir.js';
import { stopChild } from './stop-child.js';

// The repository root: three levels up from src/app/bench/*.ts, four from dist/src/app/bench/*.js.
// The script is a repository file (the benchmarks run from a checkout); the child runs in the
// root so that `--import tsx` resolves there whatever the bench's working directory.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '../../..' : '../../../..');
export const FAIRNESS_VM_SCRIPT = path.join(root, 'scripts', 'fairness-vm.ts');

export class FairnessVmProcess {
  private buf = '';
  private readonly pending: { resolve: (values: string[]) => void; reject: (e: Error) => void }[] = [];
  /** Resolves when the child has exited (for any reason). */
  readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess, ready: () => void, early: (e: Error) => void) {
    let isReady = false;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        const e = new Error(`fairness VM process exited (${signal ?? code})`);
        if (!isReady) early(e);
        for (const p of this.pending.splice(0)) p.reject(e);
        resolve();
      });
    });
    // A command written after the child exited fails in command(); the pipe's EPIPE is not news.
    child.stdin!.on('error', () => {});
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.buf += d;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (!isReady) {
          if (line === 'ready') {
            isReady = true;
            ready();
          }
          continue;
        }
        const p = this.pending.shift();
        if (!p) continue;
        const [status, ...values] = line.split(' ');
        if (status === 'ok') p.resolve(values);
        else p.reject(new Error(`fairness VM: ${status === 'error' ? values.join(' ') : `unexpected line '${line}'`}`));
      }
    });
  }

  /** Spawn the VM process for the host at `socket`; resolves once it printed "ready". */
  static start(socket: string): Promise<FairnessVmProcess> {
    const env: NodeJS.ProcessEnv = { ...process.env, VSVA_LOG: 'silent' };
    // Guest RAM by path (no native addon): in the directory this process's hosts allow.
    const memDir = existingHarnessMemoryDir();
    if (memDir !== undefined && !env.VSVA_MEM_DIR) env.VSVA_MEM_DIR = memDir;
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', FAIRNESS_VM_SCRIPT, socket], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'], env });
    return new Promise((resolve, reject) => {
      const vm: FairnessVmProcess = new FairnessVmProcess(child, () => resolve(vm), reject);
      child.once('error', reject);
    });
  }

  /** Send one command; resolves with the values of its `ok` line, rejects on its `error` line or the child's exit. */
  command(line: string): Promise<string[]> {
    return new Promise((resolve, reject) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return reject(new Error('fairness VM process has exited'));
      this.pending.push({ resolve, reject });
      this.child.stdin!.write(`${line}\n`);
    });
  }

  /** End stdin (the child closes its VM and exits); kill it if it has not exited after a grace period. */
  stop(): Promise<void> {
    return stopChild(this.child, this.exited);
  }
}
