/**
 * A raw peer for tests: writes arbitrary bytes to a transport and collects the whole messages
 * that come back, so tests can speak to a role byte by byte.
 */
import { Framer, MAX_REPLY_PAYLOAD, VHOST_USER_HDR_SIZE, writeHeader, type Transport } from '../../../vhost/index.js';
import { scaled } from '../../support/slowdown.js';

export interface RawMessage {
  request: number;
  flags: number;
  payload: Buffer;
}

export class RawPeer {
  readonly received: RawMessage[] = [];
  closed = false;
  private framer = new Framer(MAX_REPLY_PAYLOAD);
  private waiters: (() => void)[] = [];

  constructor(readonly transport: Transport) {
    transport.start({
      data: (chunk) => {
        this.framer.push(chunk, (request, flags, payload) => {
          this.received.push({ request, flags, payload: Buffer.from(payload) });
        });
        this.wake();
      },
      close: () => {
        this.closed = true;
        this.wake();
      },
    });
  }

  send(request: number, flags: number, payload: Uint8Array = new Uint8Array(0), size = payload.length): void {
    const buf = Buffer.alloc(VHOST_USER_HDR_SIZE + payload.length);
    writeHeader(buf, 0, request, flags, size);
    buf.set(payload, VHOST_USER_HDR_SIZE);
    this.transport.write(buf);
  }

  /** Wait until `n` messages arrived or the connection closed (`timeoutMs`: idle-machine deadline, scaled). */
  async waitFor(n: number, timeoutMs = 2000): Promise<RawMessage[]> {
    const until = Date.now() + scaled(timeoutMs);
    while (this.received.length < n && !this.closed) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${n} messages (have ${this.received.length}, ${scaled(timeoutMs)} ms)`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
    return this.received;
  }

  /** Let pending deliveries run. */
  async settle(): Promise<void> {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}

/** The i64 status at the start of a reply payload, as a number. */
export function status(m: RawMessage): number {
  return Number(m.payload.readBigInt64LE(0));
}
