/**
 * The guest half's link to the host: one FrontendClient at a time, replaced when the connection
 * is lost (docs/reliability.md §2–3).
 *
 * States: `up` (requests go to the current client) → `reconnecting` (the connection ended
 * without the guest closing it: a loop reconnects with exponential backoff) → `up` again, or
 * `failed` (no host within `giveUpAfterMs`), or `closed` (the guest closed the link).
 *
 * Each attempt opens a new client and runs the VM's `establish(client)` on it: the handshake,
 * VM_SETUP with the session token (the host resumes the VM: its state is intact), or — when
 * the host no longer has the VM — the VM set up afresh: by that same VM_SETUP when a restarted
 * host kept the VM's name for its token (docs/reliability.md §2.4), else by a fresh VM_SETUP
 * after ENOENT; then the re-announcement of memory, devices and domain 0, and the vIOMMU
 * model's replay of its shadows. Only when `establish` succeeds does the link turn `up` again; the requests
 * the model issued meanwhile are held and then sent, so they reach a host that already has the
 * replayed state. `establish` talks to the new client directly, never through the link.
 *
 * Requests:
 * - issued while `reconnecting`: wait up to `outageWaitMs` for the link, then fail with
 *   ENOTCONN (nothing is dropped silently). At most `maxQueued` requests wait at once; one more
 *   fails at once with EAGAIN, so an outage holds bounded memory (docs/reliability.md §2.3);
 * - in flight when the connection is lost: the ones in IDEMPOTENT_ON_RETRY are sent again once
 *   the link is back (the host accepts a duplicate: re-BIND of an identical binding, re-MAP of an
 *   identical mapping, …; a retried removal that finds nothing removed is a success); every other
 *   request (PASID_ALLOC, DOMAIN_ALLOC, DEVICE_DMA, PAGE_RESPONSE, …) fails with ECONNRESET —
 *   its effect on the host is unknown and the VM's reconciliation after a resume frees
 *   anything it left behind.
 *
 * No spin: a request that fails without waiting (link closed or failed, queue full) settles
 * from a later turn of the event loop (setImmediate), never synchronously, so a caller that
 * retries in a loop still lets timers and I/O run; reconnect attempts wait with capped,
 * jittered exponential backoff (timers).
 */
import { VsvaError, fail, isVsvaError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import type { FrontendRequestName, ReplyOf } from '../vhost/messages/catalogue.js';
import type { CallArgs, FrontendClient } from '../vhost/roles/frontend.js';

export type LinkState = 'up' | 'reconnecting' | 'failed' | 'closed';

export interface ReconnectPolicy {
  /** Reconnect at all after a lost connection (default true). */
  enabled?: boolean;
  /** First delay before a reconnect attempt (ms, default 20). */
  initialDelayMs?: number;
  /** Longest delay between attempts (ms, default 500). Delays double up to it, ±20 % jitter. */
  maxDelayMs?: number;
  /** Stop trying after this long without a host (ms, default 60 000); the link is then `failed`. */
  giveUpAfterMs?: number;
  /** How long a request issued during an outage waits for the link (ms, default 5000). */
  outageWaitMs?: number;
  /** Requests that may wait for the link at once (default 1024); one more fails with EAGAIN. */
  maxQueued?: number;
}

export const DEFAULT_RECONNECT_POLICY: Required<ReconnectPolicy> = {
  enabled: true,
  initialDelayMs: 20,
  maxDelayMs: 500,
  giveUpAfterMs: 60_000,
  outageWaitMs: 5000,
  maxQueued: 1024,
};

/**
 * Requests sent again after a reconnect when they were in flight as the connection dropped,
 * because a duplicate has the same effect as one (docs/reliability.md §3):
 * - naturally idempotent: SET_MEM_TABLE (identical table), DEVICE_CONFIG, CACHE_INVALIDATE,
 *   GET_NESTING_INFO, GET_STATE, DMA_UNMAP (a second unmap removes 0 bytes);
 * - idempotent by the host's rule for duplicates: BIND_GPASID of an identical binding, ATTACH
 *   to the domain (and PGTT) already attached, DMA_MAP of an identical mapping — success;
 * - removals made idempotent here: UNBIND_GPASID, DETACH, DOMAIN_FREE and a one-PASID
 *   PASID_FREE whose retry finds nothing (ENOENT) count as done.
 * iommufd (docs/protocol.md §13): GET_HW_INFO, IOAS_IOVA_RANGES and HWPT_INVALIDATE are
 * naturally idempotent; DEVICE_ATTACH / DEVICE_REPLACE to what is attached already succeed
 * (drivers/iommu/iommufd/device.c: the same HWPT again); DEVICE_DETACH and DESTROY whose retry
 * finds nothing (ENOENT) count as done. Allocations (IOAS_ALLOC, HWPT_ALLOC, DEVICE_BIND) are
 * not sent again; what a lost one left behind is destroyed by the VM's reconciliation.
 */
export const IDEMPOTENT_ON_RETRY: ReadonlySet<FrontendRequestName> = new Set<FrontendRequestName>([
  'SET_MEM_TABLE', 'DEVICE_CONFIG', 'CACHE_INVALIDATE', 'GET_NESTING_INFO', 'GET_STATE', 'DMA_UNMAP',
  'BIND_GPASID', 'ATTACH', 'DMA_MAP', 'UNBIND_GPASID', 'DETACH', 'DOMAIN_FREE', 'PASID_FREE',
  'IOMMUFD_GET_HW_INFO', 'IOMMUFD_IOAS_IOVA_RANGES', 'IOMMUFD_HWPT_INVALIDATE', 'IOMMUFD_DEVICE_ATTACH', 'IOMMUFD_DEVICE_REPLACE',
  'IOMMUFD_DEVICE_DETACH', 'IOMMUFD_DESTROY',
]);

/** Removals whose retry may find their object already gone (ENOENT): that is success. */
const GONE_IS_DONE: ReadonlySet<FrontendRequestName> = new Set<FrontendRequestName>(['UNBIND_GPASID', 'DETACH', 'DOMAIN_FREE', 'PASID_FREE', 'IOMMUFD_DEVICE_DETACH', 'IOMMUFD_DESTROY']);

/** What the link tells its owner about each reconnect. */
export interface ReconnectEvent {
  attempt: number;
  /** Milliseconds from the lost connection to the link being up again. */
  outageMs: number;
}

export interface HostLinkOptions {
  /** Open a new client to the host (the same socket path or connector as the first). */
  connect: () => Promise<FrontendClient>;
  /** Bring the VM up on a new client: resume or re-create and replay. Throws to retry later. */
  establish: (client: FrontendClient) => Promise<void>;
  policy?: ReconnectPolicy;
  log: Logger;
}

export interface LinkCounters {
  /** Connections lost (not closed by the guest). */
  drops: number;
  /** Reconnect attempts, successful or not. */
  attempts: number;
  /** Times the link came back up. */
  reconnects: number;
  /** In-flight requests sent again after a reconnect. */
  retried: number;
  /** Requests failed because of the outage (waited too long, queue full, or in flight and not idempotent). */
  failed: number;
  /** Of those, requests refused with EAGAIN because `maxQueued` requests were already waiting. */
  overflowed: number;
}

interface Waiter {
  resolve: (c: FrontendClient) => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout | null;
}

export class HostLink {
  private client: FrontendClient;
  private linkState: LinkState = 'up';
  private waiters: Waiter[] = [];
  private readonly policy: Required<ReconnectPolicy>;
  private readonly listeners: ((ev: ReconnectEvent) => void)[] = [];
  private downSince = 0;
  readonly counters: LinkCounters = { drops: 0, attempts: 0, reconnects: 0, retried: 0, failed: 0, overflowed: 0 };

  constructor(
    first: FrontendClient,
    private readonly opts: HostLinkOptions,
  ) {
    this.policy = { ...DEFAULT_RECONNECT_POLICY, ...(opts.policy ?? {}) };
    if (!Number.isSafeInteger(this.policy.maxQueued) || this.policy.maxQueued < 0) fail('EINVAL', `reconnect policy: maxQueued must be a non-negative integer (got ${this.policy.maxQueued})`);
    // Every wait between attempts is a real, capped timer: a delay that is not a finite number
    // ≥ 0 would turn the backoff into a 1 ms retry loop (or no cap at all).
    for (const key of ['initialDelayMs', 'maxDelayMs'] as const) {
      const v = this.policy[key];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail('EINVAL', `reconnect policy: ${key} must be a finite number ≥ 0 (got ${String(v)})`);
    }
    for (const key of ['giveUpAfterMs', 'outageWaitMs'] as const) {
      const v = this.policy[key];
      if (typeof v !== 'number' || Number.isNaN(v) || v < 0) fail('EINVAL', `reconnect policy: ${key} must be a number ≥ 0 (got ${String(v)})`);
    }
    this.client = first;
    this.watch(first);
  }

  get state(): LinkState {
    return this.linkState;
  }

  /** The client requests currently go to. */
  get current(): FrontendClient {
    return this.client;
  }

  /** Called each time the link is up again after a drop. */
  onReconnect(fn: (ev: ReconnectEvent) => void): void {
    this.listeners.push(fn);
  }

  /** Requests waiting for the link right now (at most `maxQueued`). */
  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Resolves when the link is up (at once when it is); rejects with ENOTCONN when it closes or
   * fails or `timeoutMs` passes, with EAGAIN when `maxQueued` requests already wait. Rejections
   * that need no wait arrive from a later turn of the event loop (see the file comment).
   */
  whenUp(timeoutMs = this.policy.outageWaitMs): Promise<FrontendClient> {
    if (this.linkState === 'up' && !this.client.closed) return Promise.resolve(this.client);
    if (this.linkState === 'up') this.lost(this.client);
    if (this.linkState === 'closed') return rejectLater(new VsvaError('ENOTCONN', 'the link to the host is closed'));
    if (this.linkState === 'failed') return rejectLater(this.failedError());
    if (this.waiters.length >= this.policy.maxQueued) {
      this.counters.overflowed++;
      return rejectLater(new VsvaError('EAGAIN', `the host has been unreachable for ${Date.now() - this.downSince} ms and ${this.waiters.length} requests already wait for it (maxQueued)`));
    }
    return new Promise<FrontendClient>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: null };
      if (Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new VsvaError('ENOTCONN', `the host has been unreachable for ${Date.now() - this.downSince} ms (reconnecting; waited ${timeoutMs} ms)`));
        }, timeoutMs);
        // Ref'd: a request waiting for the host keeps the process alive (at most outageWaitMs),
        // and with it the reconnect loop's unref'd backoff timers — else a guest process whose
        // only work is that request would exit (code 13, unsettled await) during a host restart.
      }
      this.waiters.push(w);
    });
  }

  /**
   * Send a request on the current client, holding it while the link is reconnecting and sending
   * it again after a reconnect when it was in flight and is idempotent (see the file comment).
   */
  call<K extends FrontendRequestName>(name: K, ...args: CallArgs<K>): Promise<ReplyOf<K>> {
    // Fast path (link up): straight to the client, with no extra turn of the event loop.
    if (this.linkState === 'up' && !this.client.closed) {
      return send(this.client, name, args).catch((e: unknown) => this.afterLoss(name, args, e));
    }
    return this.callWhenUp(name, args);
  }

  private async callWhenUp<K extends FrontendRequestName>(name: K, args: CallArgs<K>): Promise<ReplyOf<K>> {
    const c = await this.upFor(name);
    try {
      return await send(c, name, args);
    } catch (e) {
      return this.afterLoss(name, args, e);
    }
  }

  /** The client once the link is up; a request that cannot wait that long fails, named. */
  private async upFor(name: FrontendRequestName): Promise<FrontendClient> {
    try {
      return await this.whenUp();
    } catch (e) {
      this.counters.failed++;
      throw e instanceof VsvaError ? e.withContext(name) : e;
    }
  }

  /** A request failed: rethrow, or — the connection was lost and it is idempotent — send it again once. */
  private async afterLoss<K extends FrontendRequestName>(name: K, args: CallArgs<K>, e: unknown): Promise<ReplyOf<K>> {
    if (!isConnectionLoss(e) || this.linkState === 'closed') throw e;
    if (!IDEMPOTENT_ON_RETRY.has(name)) {
      this.counters.failed++;
      throw new VsvaError('ECONNRESET', `${name}: the connection to the host was lost with the request in flight; not sent again (not idempotent)`);
    }
    this.counters.retried++;
    const c = await this.upFor(name);
    try {
      return await send(c, name, args);
    } catch (err) {
      if (GONE_IS_DONE.has(name) && isVsvaError(err, 'ENOENT')) return goneReply(name, args[0]) as ReplyOf<K>;
      throw err;
    }
  }

  /** Close for good: the current client closes, waiting requests fail with ENOTCONN. */
  close(): void {
    if (this.linkState === 'closed') return;
    this.linkState = 'closed';
    this.client.close();
    this.settleWaiters(new VsvaError('ENOTCONN', 'the link to the host was closed'));
  }

  private watch(c: FrontendClient): void {
    c.onClose(() => this.lost(c));
  }

  private lost(c: FrontendClient): void {
    if (c !== this.client || this.linkState !== 'up') return;
    this.counters.drops++;
    this.downSince = Date.now();
    if (!this.policy.enabled) {
      this.linkState = 'failed';
      this.settleWaiters(this.failedError());
      return;
    }
    this.linkState = 'reconnecting';
    this.opts.log.warn('connection to the host lost; reconnecting');
    void this.reconnectLoop();
  }

  private async reconnectLoop(): Promise<void> {
    // Capped from the first attempt on: maxDelayMs bounds every wait, initialDelayMs included.
    let delay = Math.min(this.policy.initialDelayMs, this.policy.maxDelayMs);
    let attempt = 0;
    for (;;) {
      await sleep(jitter(delay));
      if (this.linkState !== 'reconnecting') return;
      attempt++;
      this.counters.attempts++;
      let next: FrontendClient | null = null;
      try {
        next = await this.opts.connect();
        await this.opts.establish(next);
        if (next.closed) fail('ECONNRESET', 'the new connection closed while the VM was being re-established');
      } catch (e) {
        next?.close();
        this.opts.log.debug({ err: e, attempt }, 'reconnect attempt failed');
        if (this.linkState !== 'reconnecting') return;
        if (Date.now() - this.downSince >= this.policy.giveUpAfterMs) {
          this.linkState = 'failed';
          this.opts.log.error({ attempts: attempt }, 'host unreachable; giving up');
          this.settleWaiters(this.failedError());
          return;
        }
        delay = Math.min(delay * 2, this.policy.maxDelayMs);
        continue;
      }
      if (this.linkState !== 'reconnecting') {
        next.close();
        return;
      }
      this.client = next;
      this.watch(next);
      this.linkState = 'up';
      this.counters.reconnects++;
      const ev: ReconnectEvent = { attempt, outageMs: Date.now() - this.downSince };
      this.opts.log.info(ev, 'reconnected to the host');
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) {
        if (w.timer) clearTimeout(w.timer);
        w.resolve(next);
      }
      for (const fn of this.listeners) fn(ev);
      return;
    }
  }

  private failedError(): VsvaError {
    return new VsvaError('ENOTCONN', `the host has been unreachable for ${Date.now() - this.downSince} ms; the link gave up`);
  }

  private settleWaiters(err: VsvaError): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(err);
    }
  }
}

/** Errors that mean "the connection went away", not "the host said no". */
export function isConnectionLoss(e: unknown): boolean {
  return isVsvaError(e, 'ECONNRESET') || isVsvaError(e, 'ENOTCONN');
}

function goneReply(name: FrontendRequestName, payload: unknown): unknown {
  if (name !== 'PASID_FREE') return undefined;
  const r = payload as { min: number; max: number };
  if (r.min !== r.max) throw new VsvaError('ENOENT', 'PASID_FREE: a retried free of a range found no PASID (the first attempt may have freed some)');
  return { freed: 1 };
}

/** One request on one client (FrontendClient.call with the arguments as a tuple). */
function send<K extends FrontendRequestName>(c: FrontendClient, name: K, args: CallArgs<K>): Promise<ReplyOf<K>> {
  return (c.call as (n: K, ...a: CallArgs<K>) => Promise<ReplyOf<K>>)(name, ...args);
}

/** A rejection delivered from the check phase of the event loop, never from a microtask. */
function rejectLater<T>(err: VsvaError): Promise<T> {
  return new Promise<T>((_, reject) => setImmediate(() => reject(err)));
}

/** Backoff sleep; unref'd, so a process with nothing else to do is not kept alive by it. */
function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function jitter(ms: number): number {
  return Math.max(1, Math.round(ms * (0.8 + Math.random() * 0.4)));
}
