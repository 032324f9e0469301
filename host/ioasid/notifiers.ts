/**
 * Who the IOASID core tells about its IDs, and the telling:
 *
 * - Notifier blocks (the notifier patches of Jacob Pan's IOASID series for Linux
 *   drivers/iommu/ioasid.c): the global chain, each set's chain, and blocks waiting for the MM
 *   set of a token (ioasid_register_notifier_mm before the set exists). They receive the
 *   kernel's events ALLOC, FREE, BIND and UNBIND (`fire`, priority order in notifier-chain.ts).
 * - Change listeners (IoasidCore.registerChangeListener): per set, told the ID after every
 *   change of what IoasidIdSnapshot shows (`changed`). The kernel has no such hook; the host
 *   service keeps its snapshot rows current with it. It is kept apart from the chains so that
 *   the kernel's blocks see only the kernel's events, and so that a get or put costs one
 *   counter test while nobody listens.
 *
 * Both run synchronously inside the core call that caused them. A block or listener that
 * throws is logged and skipped.
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import type { IdTable } from './id-table.js';
import type { IoasidSet } from './ioasid-set.js';
import { NotifierChain, dispatch, dispatchChain, type IoasidNotifier, type IoasidNotifyArgs } from './notifier-chain.js';
import { tokenLabel, type SetState, type SetTable } from './set-table.js';
import {
  INVALID_IOASID,
  IOASID_EVENTS,
  IOASID_NOTIFY_FLAG_ALL,
  IOASID_NOTIFY_FLAG_SET,
  type IoasidChangeListener,
  type IoasidEvent,
  type IoasidToken,
} from './types.js';

const log = childLogger('ioasid');

export class IoasidNotifiers {
  private readonly global = new NotifierChain();
  private readonly pendingMm = new Map<IoasidToken, IoasidNotifier[]>();
  /** Change listeners registered on all live sets; 0 lets `changed` return at once. */
  private listenerCount = 0;

  constructor(
    private readonly sets: SetTable,
    private readonly ids: IdTable,
  ) {}

  // ---------------------------------------------------------------- set life cycle

  /** A set was created: the MM blocks waiting for its token join its chain. */
  setCreated(st: SetState): void {
    const token = st.handle.token;
    if (st.handle.type !== 'MM' || token === null) return;
    const waiting = this.pendingMm.get(token);
    if (!waiting) return;
    this.pendingMm.delete(token);
    for (const nb of waiting) {
      st.chain.add(nb);
      st.mmBlocks.add(nb);
    }
  }

  /** A set was removed: its listeners go with it; its MM blocks wait for the token again. */
  setRemoved(st: SetState): void {
    const set = st.handle;
    this.listenerCount -= st.listeners.length;
    if (set.type !== 'MM' || st.mmBlocks.size === 0) return;
    const waiting = this.pendingMm.get(set.token!) ?? [];
    for (const nb of st.mmBlocks) if (!waiting.includes(nb)) waiting.push(nb);
    this.pendingMm.set(set.token!, waiting);
  }

  // ---------------------------------------------------------------- notifier blocks

  /** ioasid_register_notifier (IoasidCore.registerNotifier). */
  register(set: IoasidSet | null, nb: IoasidNotifier): void {
    checkNotifier(nb);
    if (set === null) {
      if (this.global.has(nb)) fail('EEXIST', 'notifier already registered on the global chain');
      this.global.add(nb);
      return;
    }
    const st = this.sets.lookup(set);
    if (st.chain.has(nb)) fail('EEXIST', `notifier already registered on ${set}`);
    if (set.type === 'MM' && st.nr > 0) fail('EBUSY', `${set} is an MM set with IOASIDs; notifiers register only on empty MM sets`);
    st.chain.add(nb);
  }

  /** ioasid_unregister_notifier (IoasidCore.unregisterNotifier). */
  unregister(set: IoasidSet | null, nb: IoasidNotifier): void {
    if (set === null) {
      if (!this.global.remove(nb)) fail('ENOENT', 'notifier is not on the global chain');
      return;
    }
    const st = this.sets.lookup(set);
    if (!st.chain.remove(nb)) fail('ENOENT', `notifier is not registered on ${set}`);
    st.mmBlocks.delete(nb);
  }

  /** ioasid_register_notifier_mm (IoasidCore.registerMmNotifier). */
  registerMm(token: IoasidToken, nb: IoasidNotifier): void {
    checkNotifier(nb);
    if (token === null || token === undefined) fail('EINVAL', 'an MM notifier needs a token');
    const st = this.sets.mmSet(token);
    if (st) {
      if (st.chain.has(nb)) fail('EEXIST', `notifier already registered on ${st.handle}`);
      if (st.nr > 0) fail('EBUSY', `${st.handle} already holds IOASIDs; notifiers register only on empty MM sets`);
      st.chain.add(nb);
      st.mmBlocks.add(nb);
      return;
    }
    const waiting = this.pendingMm.get(token) ?? [];
    if (waiting.includes(nb)) fail('EEXIST', `notifier already waiting for token ${tokenLabel(token)}`);
    waiting.push(nb);
    this.pendingMm.set(token, waiting);
  }

  /** ioasid_unregister_notifier_mm (IoasidCore.unregisterMmNotifier). */
  unregisterMm(token: IoasidToken, nb: IoasidNotifier): void {
    const st = this.sets.mmSet(token);
    if (st && st.mmBlocks.has(nb)) {
      st.mmBlocks.delete(nb);
      st.chain.remove(nb);
      return;
    }
    const waiting = this.pendingMm.get(token);
    const i = waiting ? waiting.indexOf(nb) : -1;
    if (i < 0) fail('ENOENT', `notifier is not registered for token ${tokenLabel(token)}`);
    waiting!.splice(i, 1);
    if (waiting!.length === 0) this.pendingMm.delete(token);
  }

  isMmPending(token: IoasidToken, nb: IoasidNotifier): boolean {
    return this.pendingMm.get(token)?.includes(nb) ?? false;
  }

  /** Call the blocks of the chains `flags` picks for an event on `id` of `st`. */
  fire(st: SetState, id: number, event: IoasidEvent, data: unknown, flags: number): void {
    // Only chains with blocks (dispatch skips empty ones; every allocation passes here).
    const onSet = (flags & IOASID_NOTIFY_FLAG_SET) !== 0 && st.chain.size > 0;
    const onAll = (flags & IOASID_NOTIFY_FLAG_ALL) !== 0 && this.global.size > 0;
    if (!onSet && !onAll) return;
    const spid = this.ids.spidOf[id]!;
    const args: IoasidNotifyArgs = {
      event,
      id,
      spid: spid === INVALID_IOASID ? null : spid,
      set: st.handle,
      pdata: this.ids.privateData.get(id),
      data,
    };
    if (onSet && onAll) dispatch([st.chain, this.global], args);
    else dispatchChain(onSet ? st.chain : this.global, args);
  }

  // ---------------------------------------------------------------- change listeners

  /** IoasidCore.registerChangeListener. */
  addListener(set: IoasidSet, listener: IoasidChangeListener): void {
    if (typeof listener !== 'function') fail('EINVAL', 'a change listener must be a function');
    const st = this.sets.lookup(set);
    if (st.listeners.includes(listener)) fail('EEXIST', `change listener already registered on ${set}`);
    st.listeners.push(listener);
    this.listenerCount++;
  }

  /** IoasidCore.unregisterChangeListener. */
  removeListener(set: IoasidSet, listener: IoasidChangeListener): void {
    const st = this.sets.lookup(set);
    const i = st.listeners.indexOf(listener);
    if (i < 0) fail('ENOENT', `change listener is not registered on ${set}`);
    st.listeners.splice(i, 1);
    this.listenerCount--;
  }

  /** Tell the listeners of `st` that the record of its ID `id` changed. */
  changed(st: SetState, id: number): void {
    if (this.listenerCount === 0) return;
    const ls = st.listeners;
    if (ls.length === 0) return;
    if (ls.length === 1) tell(ls[0]!, id);
    else for (const listener of ls.slice()) tell(listener, id);
  }

  /** `changed` for an allocated ID, whose set the caller does not have at hand. */
  changedId(id: number): void {
    if (this.listenerCount === 0) return;
    this.changed(this.sets.byIdLive(this.ids.setOf[id]!), id);
  }
}

function tell(listener: IoasidChangeListener, id: number): void {
  try {
    listener(id);
  } catch (err) {
    log.error({ err, id }, 'ioasid change listener threw; continuing');
  }
}

/** ioasid_notify's argument checks (IoasidCore.notify). EINVAL: unknown event or flags. */
export function checkNotifyArgs(event: IoasidEvent, flags: number): void {
  if (!IOASID_EVENTS.includes(event)) fail('EINVAL', `unknown IOASID event '${String(event)}'`);
  if (!Number.isInteger(flags) || flags === 0 || (flags & ~(IOASID_NOTIFY_FLAG_SET | IOASID_NOTIFY_FLAG_ALL)) !== 0) fail('EINVAL', `notify flags 0x${Number(flags).toString(16)} are not a non-empty combination of SET and ALL`);
}

function checkNotifier(nb: IoasidNotifier): void {
  if (nb === null || typeof nb !== 'object' || typeof nb.call !== 'function') fail('EINVAL', 'a notifier needs a call(args) function');
  if (nb.priority !== undefined && !['CPU', 'IOMMU', 'DEVICE', 'LAST'].includes(nb.priority)) fail('EINVAL', `unknown notifier priority '${String(nb.priority)}'`);
}
