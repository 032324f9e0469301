/**
 * How long one slice of a sliced request or release may run before the host yields to the event
 * loop (docs/performance.md, "Fairness and snapshots"). Slices are bounded by a count of work
 * units (mappings, routes, PASIDs) and by this time budget, whichever comes first: a count alone
 * lets a slice run long when its code runs cold (the first release of a host process), when the
 * machine is slow, or when the units cost more than measured. The budget is checked after each
 * unit (or small chunk of units), so a slice ends within one unit past it; a young-generation
 * collection inside a slice is not bounded by it (bin/young-generation.js bounds those).
 */

import { nativeAvailable, setTimerSlack } from '../../src/native/native.js';

/** Time budget of one slice (ms): another VM's request waits at most about this long behind one. */
export const SLICE_BUDGET_MS = 0.5;

/** The clock slices are measured with (ms, monotonic). Tests replace `now` to make every unit spend the budget. */
export const sliceClock = { now: (): number => performance.now() };

/**
 * A slice started at construction (or the last `restart()`): `spent()` tells whether its budget
 * is used up. A class, not a pair of closures: every sliced job makes a timer, and closures made
 * per job were optimized afresh by V8 for each job (traced with --trace-opt: the release's timer
 * was recompiled in every VM release, 2–7 ms of compiler-thread time each, while other VMs wait
 * for a CPU), whereas methods are compiled once for all timers.
 */
export class SliceTimer {
  private start = sliceClock.now();
  constructor(private readonly budgetMs = SLICE_BUDGET_MS) {}

  spent(): boolean {
    return sliceClock.now() - this.start >= this.budgetMs;
  }

  restart(): void {
    this.start = sliceClock.now();
  }
}

/** A slice started now. */
export function sliceTimer(budgetMs = SLICE_BUDGET_MS): SliceTimer {
  return new SliceTimer(budgetMs);
}

/**
 * How long the host sleeps at the end of a slice (ms): the timeout of the sleep. With the timer
 * slack below the thread is off its CPU for ≈ 0.06 ms; without the native addon (Linux's default
 * slack of 50 µs) for ≈ 0.1–0.15 ms (measured).
 */
export const STEP_ASIDE_MS = 0.02;
/**
 * The timer slack (ns) a thread that steps aside asks for (prctl(2) PR_SET_TIMERSLACK, through the
 * native addon), so that its 20 µs sleep is not stretched by the default 50 µs.
 */
export const STEP_ASIDE_TIMER_SLACK_NS = 1000;

/** The word the host sleeps on. Nothing ever wakes it: each sleep runs to its timeout. */
const stepAsideWord = new Int32Array(new SharedArrayBuffer(4));
/** Whether this thread (a module instance per thread) has asked for the short slack yet. */
let slackSet = false;

/**
 * Between two slices: give the CPU away for a moment, then let the event loop serve other VMs'
 * requests (setImmediate runs after the I/O the loop polls meanwhile), as vfio_remove_dma's
 * cond_resched() lets other threads run.
 *
 * Why the sleep (the "step aside"): a host that runs slice after slice never sleeps, and the
 * scheduler then leaves the VMs it answers queued behind it. Its replies wake them with the
 * synchronous hint of a Unix socket write (net/unix/af_unix.c, unix_stream_sendmsg →
 * sock_def_readable → wake_up_interruptible_sync_poll), which places them on the host's own CPU
 * as if the host were about to sleep; a task that never sleeps is never placed again, so the
 * host itself stays queued behind its V8 helper threads or a VM process. Each waits for the next
 * scheduler tick (4 ms at HZ=250), even with the other CPU idle. Traced with the kernel's
 * sched_switch events on this project's 2-CPU test machine (docs/performance.md, "Second-wave
 * full runs, fifth session"): with a host busy in 75 µs slices and no garbage at all, another
 * VM's VCMD round trip p99 was 22–36× its idle p50; the same VM beside a plain process spinning
 * for as long, 1.4–3.5×; with the host sleeping at the end of every slice, 7–12×. The sleep costs
 * a long job ≈ 0.06 ms per slice (a 65,535-mapping DMA_UNMAP has 128 slices).
 */
export function nextSlice(): Promise<void> {
  if (!slackSet) {
    slackSet = true;
    if (nativeAvailable()) setTimerSlack(STEP_ASIDE_TIMER_SLACK_NS);
  }
  Atomics.wait(stepAsideWord, 0, 0, STEP_ASIDE_MS);
  return new Promise<void>((resolve) => setImmediate(resolve));
}
