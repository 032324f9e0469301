/**
 * The VFIO SVA uAPI's invalidation batch (docs/protocol.md §10.6; docs/design.md §3.1): the
 * CACHE_INVALIDATE entries (`struct iommu_cache_invalidate_info` of Linux
 * include/uapi/linux/iommu.h 5.10–5.13) of one queue run, one CACHE_INVALIDATE per run, flushed
 * before any wait descriptor's status write and before any other host request so the host sees
 * them in the guest's order. guest/vtd/cache-invalidations.ts builds the entries.
 *
 * Pipelining: a queue run may collect more entries than one message carries (1024). Each full
 * message is sent as soon as it is complete, without waiting for the previous reply, so the host
 * applies one message while the guest decodes the next descriptors; `flush` sends the rest and
 * waits for every reply. At most MAX_MESSAGES_IN_FLIGHT messages are outstanding (the oldest
 * reply is awaited before another is sent). Replies come back in request order (docs/protocol.md
 * §8), so the host applies the entries in the guest's order; nobody is told an invalidation is
 * done before flush has seen every reply (the queue awaits flush before a wait descriptor's status
 * write, before any other host request, and at the end of the run).
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { VTD_PAGE_SHIFT } from '../../src/vtd/page-table.js';
import {
  CACHE_INVALIDATE_MAX_ENTRIES,
  PackedCacheInvalidate,
  IOMMU_CACHE_INV_TYPE,
  IOMMU_INV_ADDR_FLAGS,
  IOMMU_INV_GRANU,
  IOMMU_INV_PASID_FLAGS,
  type CacheInvalidateEntry,
} from '../../vhost/messages/invalidate.js';
import type { HostCalls } from './host-uapi.js';
import type { InvalidationSink } from './invalidation-sink.js';

/** Messages of one batch outstanding at most (16 × 1024 entries). */
export const MAX_MESSAGES_IN_FLIGHT = 16;

/** The base page as a number, for the allocation-free path. */
const PAGE_N = 1 << VTD_PAGE_SHIFT;

/** One CACHE_INVALIDATE sent and not yet accounted for. */
interface InFlight {
  readonly msg: PackedCacheInvalidate;
  /** Settles with the reply, or the error (never rejects). */
  readonly reply: Promise<{ handled: number; first_error: number } | { error: unknown }>;
}

/** CACHE_INVALIDATE entries collected during one queue run. */
export class InvalidationBatch implements InvalidationSink {
  private current = new PackedCacheInvalidate();
  private readonly inFlight: InFlight[] = [];
  /** Messages sent, entries handled and entries the host refused, over the model's life. */
  readonly counters = { messages: 0, entries: 0, refused: 0 };

  constructor(
    private readonly host: HostCalls,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  /** Entries collected and not yet acknowledged by the host. */
  get pending(): number {
    let n = this.current.count;
    for (const f of this.inFlight) n += f.msg.count;
    return n;
  }

  add(e: CacheInvalidateEntry): void {
    this.current.pushEntry(e);
    this.afterAdd();
  }

  /** IOTLB entries of one (host) PASID: iotlbPasid without the object. */
  addPasid(pasid: number): void {
    this.current.push(0, IOMMU_CACHE_INV_TYPE.IOTLB, IOMMU_INV_GRANU.PASID, IOMMU_INV_PASID_FLAGS.PASID, 0, pasid, 0, 0, 0, 0);
    this.afterAdd();
  }

  /**
   * IOTLB entries of one (host) PASID in 4 KiB × 2^am from the address addrHi:addrLo (32-bit
   * halves; aligned down to the span here): iotlbPasidAddr without the object or bigints.
   */
  addPasidAddr(pasid: number, addrLo: number, addrHi: number, am: number, leafOnly: boolean): void {
    let lo = addrLo & ~0xfff;
    let hi = addrHi;
    if (am > 0) {
      const bits = 12 + am;
      if (bits < 32) lo &= ~((1 << bits) - 1);
      else {
        lo = 0;
        if (bits > 32) hi &= bits >= 64 ? 0 : ~((1 << (bits - 32)) - 1);
      }
    }
    this.current.push(0, IOMMU_CACHE_INV_TYPE.IOTLB, IOMMU_INV_GRANU.ADDR, IOMMU_INV_ADDR_FLAGS.PASID | (leafOnly ? IOMMU_INV_ADDR_FLAGS.LEAF : 0), 0, pasid, lo >>> 0, hi >>> 0, PAGE_N, 2 ** am);
    this.afterAdd();
  }

  /** A full message goes out at once (pipelined); awaiting its reply is flush's job. */
  private afterAdd(): void {
    if (this.current.count < CACHE_INVALIDATE_MAX_ENTRIES) return;
    const msg = this.current;
    this.current = new PackedCacheInvalidate();
    if (this.inFlight.length >= MAX_MESSAGES_IN_FLIGHT) {
      // Bounded: the message waits for the oldest reply (the caller awaits flush eventually).
      const oldest = this.inFlight[0]!;
      this.inFlight.push({ msg, reply: oldest.reply.then(() => this.send(msg)) });
      return;
    }
    this.inFlight.push({ msg, reply: this.send(msg) });
  }

  private send(msg: PackedCacheInvalidate): InFlight['reply'] {
    this.counters.messages++;
    if (this.trace.active) this.trace.emit({ kind: 'invalidate', side: 'guest', vm: this.vm, name: 'CACHE_INVALIDATE', args: { entries: msg.count } });
    return this.host.call('CACHE_INVALIDATE', msg).then(
      (r) => r,
      (error: unknown) => ({ error }),
    );
  }

  /**
   * Send what was collected and wait until the host answered every message of the batch. An
   * entry the host refuses is logged and skipped; the entries after it in its message are sent
   * again (after the messages already in flight: invalidations commute, and all of them are done
   * before flush returns).
   */
  async flush(): Promise<void> {
    if (this.current.count > 0) {
      const msg = this.current;
      this.current = new PackedCacheInvalidate();
      this.inFlight.push({ msg, reply: this.send(msg) });
    }
    while (this.inFlight.length > 0) {
      const f = this.inFlight.shift()!;
      const r = await f.reply;
      const n = f.msg.count;
      let handled = n;
      if ('error' in r) {
        this.counters.refused += n;
        this.log.warn({ err: r.error }, 'CACHE_INVALIDATE failed');
      } else {
        handled = r.handled;
        if (r.first_error !== 0) {
          this.counters.refused++;
          this.log.warn({ entry: handled, errno: r.first_error }, 'host refused a cache invalidation entry');
          handled++;
        }
      }
      this.counters.entries += Math.min(handled, n);
      const next = Math.max(1, Math.min(handled, n));
      if (next < n) {
        const rest = f.msg.from(next);
        this.inFlight.push({ msg: rest, reply: this.send(rest) });
      }
    }
  }
}
