/**
 * Runs async tasks one at a time in submission order — the guest's single vCPU view of its
 * device models: register accesses and host events never interleave inside a model.
 * A failing task rejects its own promise only; the queue goes on.
 *
 * A task submitted while the queue is idle starts at once (synchronously, inside `run`) instead
 * of one promise hop later: most register accesses are synchronous and this keeps them to one
 * resolved promise. Order is unchanged — a task submitted while another is running (even from
 * inside it, during its synchronous part) waits until that one has finished.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  /** Tasks submitted and not finished (the running one included). */
  private active = 0;
  /** A task that started at once is in its synchronous part. */
  private inline = false;
  /** Opens when the task that started at once finishes (created only if something queued behind it). */
  private openGate: (() => void) | null = null;
  private readonly finished = (): void => {
    this.active--;
  };

  run<T>(task: () => T | Promise<T>): Promise<T> {
    if (this.active === 0 && !this.inline) return this.runNow(task);
    if (this.inline && this.openGate === null) {
      // Submitted from inside a task that started at once: wait for it on a gate.
      this.tail = new Promise<void>((open) => (this.openGate = open));
    }
    this.active++;
    const result = this.tail.then(task);
    this.tail = result.then(this.finished, this.finished);
    return result;
  }

  private runNow<T>(task: () => T | Promise<T>): Promise<T> {
    this.active++;
    this.inline = true;
    let r: T | Promise<T>;
    try {
      r = task();
    } catch (e) {
      this.inline = false;
      this.settleNow();
      return Promise.reject(e);
    }
    this.inline = false;
    if (!isThenable(r)) {
      this.settleNow();
      return Promise.resolve(r);
    }
    const p = Promise.resolve(r);
    const done = p.then(this.finished, this.finished);
    const open = this.openGate;
    this.openGate = null;
    if (open !== null) void done.then(open); // tail already chains behind the gate
    else this.tail = done;
    return p;
  }

  /** The task that started at once finished synchronously. */
  private settleNow(): void {
    this.active--;
    const open = this.openGate;
    this.openGate = null;
    open?.();
  }
}

function isThenable<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}
