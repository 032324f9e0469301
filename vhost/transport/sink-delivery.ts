/**
 * The receive side both socket transports (unix.ts, native-unix.ts) share: bytes that arrive
 * before start() wait here and are delivered in order once a sink is installed; the close
 * callback runs once, after every earlier chunk, with the first error recorded (transport.ts,
 * TransportSink).
 */
import type { TransportSink } from './transport.js';

interface EarlyChunk {
  chunk: Buffer;
  /** SCM_RIGHTS descriptors of the chunk (fd-carrying transports only). */
  fds?: number[];
}

export class SinkDelivery {
  private sink: TransportSink | null = null;
  private early: EarlyChunk[] = [];
  private err: Error | undefined;
  private ended = false;
  private closeDelivered = false;

  /** Install the sink: deliver what arrived earlier, then the close if the stream already ended. */
  start(sink: TransportSink): void {
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const e of early) pass(sink, e.chunk, e.fds);
    if (this.ended) this.deliverClose();
  }

  /** Bytes from the peer: to the sink, or kept until start(). */
  data(chunk: Buffer, fds?: number[]): void {
    if (this.sink) pass(this.sink, chunk, fds);
    else this.early.push(fds === undefined ? { chunk } : { chunk, fds });
  }

  /** Record why the stream ends; the first reason wins. */
  noteError(err: Error): void {
    this.err ??= err;
  }

  /** Close every descriptor still waiting for start() (their chunks stay, without them). */
  releaseEarlyFds(closeFd: (fd: number) => void): void {
    for (const e of this.early) {
      for (const fd of e.fds ?? []) closeFd(fd);
      if (e.fds !== undefined) e.fds = [];
    }
  }

  /** The stream ended: the sink's close callback runs now, or at start(); once either way. */
  end(): void {
    this.ended = true;
    this.deliverClose();
  }

  private deliverClose(): void {
    if (this.closeDelivered || !this.sink) return;
    this.closeDelivered = true;
    this.sink.close(this.err);
  }
}

function pass(sink: TransportSink, chunk: Buffer, fds: number[] | undefined): void {
  if (fds === undefined) sink.data(chunk);
  else sink.data(chunk, fds);
}
