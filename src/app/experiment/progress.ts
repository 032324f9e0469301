/**
 * A progress bar for long runs, written to a stream (stderr by the CLI). On a TTY the bar is
 * redrawn in place (`\r`); otherwise a plain line is written at most every `minIntervalMs` and
 * at the end, so logs stay short. Never writes to stdout, which carries the command's output.
 */
export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
}

export class ProgressBar {
  private done = 0;
  private lastLine = 0;
  private readonly t0 = Date.now();
  private finished = false;

  constructor(
    private readonly total: number,
    private readonly stream: ProgressStream = process.stderr,
    private readonly width = 30,
    private readonly minIntervalMs = 2000,
  ) {}

  get completed(): number {
    return this.done;
  }

  /** Advance by `n` steps and redraw with the current step's label. */
  tick(label: string, n = 1): void {
    this.done = Math.min(this.total, this.done + n);
    this.draw(label);
  }

  /** Redraw without advancing (e.g. when a long step starts). */
  status(label: string): void {
    this.draw(label);
  }

  /** Draw the final state and end the line. */
  finish(label = 'done'): void {
    if (this.finished) return;
    this.finished = true;
    this.done = this.total;
    this.draw(label, true);
    if (this.stream.isTTY) this.stream.write('\n');
  }

  /** The bar as text, e.g. `[=========>          ]  45% 9/20 12.3s vms=4 scheme=vcmd`. */
  render(label: string): string {
    const frac = this.total === 0 ? 1 : this.done / this.total;
    const full = Math.floor(frac * this.width);
    const bar = '='.repeat(full) + (full < this.width ? '>' : '') + ' '.repeat(Math.max(0, this.width - full - 1));
    const secs = ((Date.now() - this.t0) / 1000).toFixed(1);
    return `[${bar}] ${String(Math.round(frac * 100)).padStart(3)}% ${this.done}/${this.total} ${secs}s ${label}`;
  }

  private draw(label: string, force = false): void {
    const line = this.render(label);
    if (this.stream.isTTY) {
      this.stream.write(`\r${line}\x1b[K`);
      return;
    }
    const now = Date.now();
    if (force || now - this.lastLine >= this.minIntervalMs) {
      this.lastLine = now;
      this.stream.write(line + '\n');
    }
  }
}
