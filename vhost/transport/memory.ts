/**
 * In-memory duplex pair for in-process mode and fast tests: what one end writes, the other end
 * receives, in order, asynchronously (never inside the writer's call stack), exactly as over a
 * socket. Writes made in the same tick are delivered together in one microtask.
 */
import { fail } from '../../src/errors.js';
import type { Transport, TransportSink } from './transport.js';

class MemoryEnd implements Transport {
  peer!: MemoryEnd;
  private sink: TransportSink | null = null;
  private inbox: Buffer[] = [];
  private scheduled = false;
  private ended = false;
  private peerEnded = false;
  private closeDelivered = false;
  private paused = false;
  /** In-memory ends pass no descriptors: their peers use SET_MEM_TABLE's path form. */
  readonly carriesFds = false;

  constructor(readonly label: string) {}

  get closed(): boolean {
    return this.ended;
  }

  start(sink: TransportSink): void {
    this.sink = sink;
    this.schedule();
  }

  setReading(on: boolean): void {
    this.paused = !on;
    if (on) this.schedule();
  }

  write(data: Uint8Array, fds?: readonly number[]): void {
    if (fds !== undefined && fds.length > 0) fail('EOPNOTSUPP', `${this.label}: an in-memory transport cannot pass file descriptors`);
    if (this.ended || this.peer.ended) return;
    this.peer.receive(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.peer.peerEnded = true;
    this.peer.schedule();
    this.schedule();
  }

  private receive(b: Buffer): void {
    this.inbox.push(b);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || !this.sink) return;
    this.scheduled = true;
    queueMicrotask(() => this.deliver());
  }

  private deliver(): void {
    this.scheduled = false;
    const sink = this.sink!;
    while (this.inbox.length > 0 && !this.ended && !this.paused) sink.data(this.inbox.shift()!);
    if (this.paused && !this.ended) return;
    if ((this.ended || this.peerEnded) && !this.closeDelivered) {
      this.ended = true;
      this.inbox = [];
      this.closeDelivered = true;
      sink.close();
    }
  }
}

/** Two connected in-memory transports. */
export function createMemoryPair(label = 'memory'): [Transport, Transport] {
  const a = new MemoryEnd(`${label}:a`);
  const b = new MemoryEnd(`${label}:b`);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
