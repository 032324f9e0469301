/**
 * Typed trace events (docs/design.md §6). Both halves emit them on a TraceBus; the dashboard streams
 * them, the recorder writes them as JSON lines, and `vsva trace export` turns a recording into
 * Chrome trace event format.
 */

export type TraceKind =
  | 'mmio'
  | 'descriptor'
  | 'message'
  | 'alloc'
  | 'free'
  | 'bind'
  | 'unbind'
  | 'invalidate'
  | 'fault'
  | 'page-request'
  | 'page-response'
  | 'dma'
  | 'vm';

export interface TraceEvent {
  /** Wall-clock time in microseconds (performance.timeOrigin + performance.now()). */
  ts: number;
  /** Duration in microseconds for events that span time (e.g. a message round trip). */
  dur?: number;
  kind: TraceKind;
  /** Which half emitted it. */
  side: 'guest' | 'host';
  /** The VM the event belongs to, when there is one. */
  vm?: string;
  /** Short human-readable name, e.g. 'VCMD ALLOC_PASID' or 'PIOTLB psi'. */
  name: string;
  /** Event-specific details; values are JSON-safe (bigints as hex strings). */
  args?: Record<string, string | number | boolean | null>;
}
