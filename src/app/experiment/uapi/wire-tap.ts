/**
 * Counting the messages a VM exchanges with its host, on the wire itself: a Transport that
 * wraps the guest's real connection (a Unix socket to the host) and reads every vhost-user
 * header that passes in either direction (docs/protocol.md §2: 12 bytes — request code, flags
 * with bit 2 REPLY, payload size), skipping payloads without buffering them. Nothing is
 * changed, delayed or copied on the way: bytes, descriptors (SCM_RIGHTS), flow control and
 * close go straight to the wrapped transport.
 *
 * Why here and not the front-end's own bookkeeping or the trace bus: the guest's FrontendClient
 * keeps no per-message counters, and the host's per-request trace events live in the host's
 * process; the tap sees exactly the frames that cross the socket, including the replies, the
 * backend channel's requests (PAGE_REQUEST, IOMMUFD_FAULT …) and their acks.
 *
 * Direction and the REPLY flag tell the four kinds apart on either channel: the guest sends
 * front-end requests (and BACKEND_ATTACH) and answers back-end requests with REPLY set; the host
 * answers front-end requests with REPLY set and sends back-end requests (FAULT, PAGE_REQUEST,
 * PASID_FREED, IOMMUFD_FAULT) on the backend channel. Names come from the message catalogue.
 */
import type { Transport, TransportSink } from '../../../../vhost/transport/transport.js';
import { BackendMessagesByCode, FrontendMessagesByCode } from '../../../../vhost/messages/catalogue.js';
import { VHOST_USER_HDR_SIZE, VHOST_USER_REPLY_MASK } from '../../../../vhost/wire/header.js';

/** What a counted frame was, seen from the guest. */
export type FrameClass =
  /** guest → host request on the main channel (incl. BACKEND_ATTACH) */
  | 'request'
  /** host → guest reply on the main channel */
  | 'reply'
  /** host → guest request on the backend channel */
  | 'backend-request'
  /** guest → host reply (ack) on the backend channel */
  | 'backend-reply';

export const FRAME_CLASSES: readonly FrameClass[] = ['request', 'reply', 'backend-request', 'backend-reply'];

/** Frames counted so far: per class, and per class and message name ('REQUEST_NAME' or '0x…' when unknown). */
export interface WireCounts {
  total: number;
  byClass: Record<FrameClass, number>;
  /** `${class} ${name}` → frames. */
  byName: Record<string, number>;
}

export function emptyCounts(): WireCounts {
  return { total: 0, byClass: { request: 0, reply: 0, 'backend-request': 0, 'backend-reply': 0 }, byName: {} };
}

/** b − a, field by field (names with no difference are left out). */
export function diffCounts(after: WireCounts, before: WireCounts): WireCounts {
  const out = emptyCounts();
  out.total = after.total - before.total;
  for (const c of FRAME_CLASSES) out.byClass[c] = after.byClass[c] - before.byClass[c];
  for (const [k, v] of Object.entries(after.byName)) {
    const d = v - (before.byName[k] ?? 0);
    if (d !== 0) out.byName[k] = d;
  }
  return out;
}

/** The running counts of every connection tapped with it (one per VM). */
export class WireCounter {
  private readonly counts = emptyCounts();

  /** A copy of the counts now. */
  snapshot(): WireCounts {
    return { total: this.counts.total, byClass: { ...this.counts.byClass }, byName: { ...this.counts.byName } };
  }

  /** Wrap a connection: `connect` for startGuest / FrontendClient. */
  tap(inner: Transport): Transport {
    return new TappedTransport(inner, this);
  }

  /** @internal one frame seen by a tap. */
  count(cls: FrameClass, name: string): void {
    this.counts.total++;
    this.counts.byClass[cls]++;
    const key = `${cls} ${name}`;
    this.counts.byName[key] = (this.counts.byName[key] ?? 0) + 1;
  }
}

/** Reads headers out of a byte stream in one direction, skipping payloads. */
export class HeaderScanner {
  private header = new Uint8Array(VHOST_USER_HDR_SIZE);
  private have = 0;
  private skip = 0;

  constructor(private readonly onHeader: (request: number, flags: number) => void) {}

  push(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        continue;
      }
      const n = Math.min(VHOST_USER_HDR_SIZE - this.have, chunk.length - off);
      this.header.set(chunk.subarray(off, off + n), this.have);
      this.have += n;
      off += n;
      if (this.have < VHOST_USER_HDR_SIZE) return;
      const v = new DataView(this.header.buffer);
      const request = v.getUint32(0, true);
      const flags = v.getUint32(4, true);
      this.skip = v.getUint32(8, true);
      this.have = 0;
      this.onHeader(request, flags);
    }
  }
}

function nameOf(table: ReadonlyMap<number, { name: string }>, code: number): string {
  return table.get(code)?.name ?? `0x${code.toString(16)}`;
}

class TappedTransport implements Transport {
  private readonly out: HeaderScanner;
  private readonly in: HeaderScanner;

  constructor(
    private readonly inner: Transport,
    counter: WireCounter,
  ) {
    this.out = new HeaderScanner((request, flags) => {
      const reply = (flags & VHOST_USER_REPLY_MASK) !== 0;
      if (reply) counter.count('backend-reply', nameOf(BackendMessagesByCode, request));
      else counter.count('request', nameOf(FrontendMessagesByCode, request));
    });
    this.in = new HeaderScanner((request, flags) => {
      const reply = (flags & VHOST_USER_REPLY_MASK) !== 0;
      if (reply) counter.count('reply', nameOf(FrontendMessagesByCode, request));
      else counter.count('backend-request', nameOf(BackendMessagesByCode, request));
    });
  }

  get carriesFds(): boolean | undefined {
    return this.inner.carriesFds;
  }

  get closed(): boolean {
    return this.inner.closed;
  }

  get label(): string {
    return this.inner.label;
  }

  start(sink: TransportSink): void {
    this.inner.start({
      data: (chunk, fds) => {
        this.in.push(chunk);
        sink.data(chunk, fds);
      },
      close: (err) => sink.close(err),
    });
  }

  write(data: Uint8Array, fds?: readonly number[]): void {
    this.out.push(data);
    this.inner.write(data, fds);
  }

  setReading(on: boolean): void {
    this.inner.setReading(on);
  }

  close(): void {
    this.inner.close();
  }
}
