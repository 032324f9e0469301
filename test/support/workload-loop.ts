/**
 * A background workload for tests that run traffic through an event (a host restart, a guest
 * kill): rounds run one after another until the test stops the loop, and the loop can never
 * outlive its test or spin (docs/testing.md):
 * - every round is followed by a timer pause (never a microtask or setImmediate chain), so timers
 *   and I/O — vitest's own test timeout included — keep running even when every request of a
 *   round fails at once (a closed or failed link);
 * - a round that throws (a failed check) ends the loop at once; `guard` then rejects the test's
 *   main steps with that error instead of letting them run on;
 * - the loop ends by itself at its bound: `maxRounds` rounds or the scaled `deadlineMs`.
 */
import { scaled } from './slowdown.js';

export type LoopEndReason = 'stopped' | 'failed' | 'bound';

export interface LoopEnd {
  reason: LoopEndReason;
  rounds: number;
  /** The error of the round that failed (reason 'failed'). */
  error?: unknown;
}

export interface WorkloadLoopOptions {
  /** What runs, for messages ("restart workload"). */
  what: string;
  /** One round; throwing ends the loop (reason 'failed'). */
  round: () => Promise<void>;
  /** Timer pause after each round (ms, default 1; not scaled). */
  pauseMs?: number;
  /** Most rounds (default unbounded; the deadline still holds). */
  maxRounds?: number;
  /** Longest run on an idle machine (ms); the loop allows scaled(deadlineMs). */
  deadlineMs: number;
}

export class WorkloadLoop {
  /** Resolves when the loop has ended, for whatever reason. */
  readonly done: Promise<LoopEnd>;
  private stopping = false;
  private count = 0;
  private failure: ((e: unknown) => void) | null = null;
  private readonly failed: Promise<never>;

  constructor(private readonly opts: WorkloadLoopOptions) {
    this.failed = new Promise<never>((_, reject) => (this.failure = reject));
    this.failed.catch(() => undefined); // observed through guard() or stop()
    this.done = this.run();
  }

  /** Rounds completed so far. */
  get rounds(): number {
    return this.count;
  }

  /**
   * Run the test's main steps beside the loop: resolves with their result, or rejects with the
   * loop's failure as soon as a round fails (the steps are abandoned: they must be bounded waits).
   */
  guard<T>(steps: () => Promise<T>): Promise<T> {
    return Promise.race([steps(), this.failed]);
  }

  /** Ask the loop to end after its current round; resolves with how it ended, rejects with a round's error. */
  async stop(): Promise<LoopEnd> {
    this.stopping = true;
    const end = await this.done;
    if (end.reason === 'failed') throw end.error;
    return end;
  }

  private async run(): Promise<LoopEnd> {
    const deadline = Date.now() + scaled(this.opts.deadlineMs);
    const maxRounds = this.opts.maxRounds ?? Number.POSITIVE_INFINITY;
    const pause = this.opts.pauseMs ?? 1;
    for (;;) {
      if (this.stopping) return { reason: 'stopped', rounds: this.count };
      if (this.count >= maxRounds || Date.now() >= deadline) return { reason: 'bound', rounds: this.count };
      try {
        await this.opts.round();
      } catch (error) {
        this.failure!(error);
        return { reason: 'failed', rounds: this.count, error };
      }
      this.count++;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
