/**
 * Collects trace events between flushes and hands them out as one batch: at most `cap` events
 * per batch (the earliest ones), the rest counted as dropped, so a burst of millions of events
 * costs the dashboard one bounded message per interval.
 */
import type { TraceEvent } from '../../src/trace/events.js';

export interface EventBatch {
  events: TraceEvent[];
  dropped: number;
}

export class EventBatcher {
  private events: TraceEvent[] = [];
  private dropped = 0;

  constructor(private readonly cap: number) {}

  push(ev: TraceEvent): void {
    if (this.events.length < this.cap) this.events.push(ev);
    else this.dropped++;
  }

  /** The pending batch, or null when nothing happened since the last take. */
  take(): EventBatch | null {
    if (this.events.length === 0 && this.dropped === 0) return null;
    const batch = { events: this.events, dropped: this.dropped };
    this.events = [];
    this.dropped = 0;
    return batch;
  }
}
