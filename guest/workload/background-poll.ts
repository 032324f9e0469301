/**
 * A guest driver's background poll (the page request queue and fault registers of a VT-d guest,
 * the eventq of a virtio-iommu guest): `once` every `ms` milliseconds, never two at a time (a
 * tick while one runs is skipped). A failed poll is logged and the next tick tries again. The
 * timer is unref'd, so it never keeps a process alive.
 */
import type { Logger } from '../../src/log.js';

export class BackgroundPoll {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly once: () => Promise<void>,
    private readonly log: Logger,
    /** What the poll does, for the warning when it fails. */
    private readonly what: string,
  ) {}

  start(ms: number): void {
    this.timer = setInterval(() => this.tick(), ms);
    this.timer.unref();
  }

  /** Start a poll unless one is running. */
  tick(): void {
    if (this.running) return;
    this.running = this.once()
      .catch((err: unknown) => this.log.warn({ err }, `${this.what} failed`))
      .finally(() => {
        this.running = null;
      });
  }

  /** One full poll now, after the one in progress (for callers that want pending work settled). */
  async now(): Promise<void> {
    await this.running;
    this.tick();
    await this.running;
  }

  /** No more ticks; resolves when the poll in progress is over. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
