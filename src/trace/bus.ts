/**
 * A synchronous fan-out of trace events. Emitting with no listener costs one branch, so hot
 * paths may emit freely; listeners must not throw (a throwing listener is dropped and logged).
 */
import { performance } from 'node:perf_hooks';
import type { TraceEvent } from './events.js';
import { logger } from '../log.js';

export type TraceListener = (ev: TraceEvent) => void;

export class TraceBus {
  private listeners: TraceListener[] = [];

  get active(): boolean {
    return this.listeners.length > 0;
  }

  on(listener: TraceListener): () => void {
    this.listeners.push(listener);
    return () => this.off(listener);
  }

  off(listener: TraceListener): void {
    this.listeners = this.listeners.filter((l) => l !== listener);
  }

  emit(ev: Omit<TraceEvent, 'ts'> & { ts?: number }): void {
    if (this.listeners.length === 0) return;
    const full = { ts: ev.ts ?? nowMicros(), ...ev } as TraceEvent;
    for (const l of this.listeners) {
      try {
        l(full);
      } catch (e) {
        logger.error({ err: e }, 'trace listener threw; removing it');
        this.off(l);
      }
    }
  }
}

function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}
