/**
 * Runs async tasks one at a time in submission order — the guest's single vCPU view of its
 * device models: register accesses and host events never interleave inside a model.
 * A failing task rejects its own promise only; the queue goes on.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => T | Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
