/**
 * Notifier blocks and priority-ordered notifier chains (the notifier patches of Jacob Pan's
 * IOASID series for Linux drivers/iommu/ioasid.c). One chain is global (`ioasid_chain`), one
 * belongs to each set (`set->nh`). Within a chain, blocks run from the highest priority to the lowest
 * (CPU → IOMMU → DEVICE → LAST) and, at equal priority, in registration order.
 *
 * When an event goes to both the set chain and the global chain, `dispatch` merges them by
 * priority (set chain first at equal priority), so a DEVICE-priority block on the set still runs
 * after a CPU-priority block on the global chain. The kernel walks the two chains one after the
 * other; merging keeps the documented CPU → IOMMU → DEVICE promise across both.
 */
import { childLogger } from '../../src/log.js';
import type { IoasidSet } from './ioasid-set.js';
import { IOASID_PRIO, type IoasidEvent, type IoasidPriority } from './types.js';

const log = childLogger('ioasid');

/** `struct ioasid_nb_args` plus the event and the caller's data. */
export interface IoasidNotifyArgs {
  event: IoasidEvent;
  id: number;
  /** The ID's SPID, or null when none is attached. */
  spid: number | null;
  set: IoasidSet;
  /** The ID's private data (ioasid_attach_data), undefined when none. */
  pdata: unknown;
  /** Whatever the caller of notify() passed (e.g. bind data); undefined for core events. */
  data: unknown;
}

/**
 * A notifier block. `call` runs synchronously inside the core call that fired the event (the
 * kernel chains are atomic). It may call put() — the FREE handler dropping its reference is the
 * intended use — but must not call detachSpid() from a FREE handler. A throwing handler is
 * logged and skipped; the chain continues.
 */
export interface IoasidNotifier {
  /** Default 'LAST'. */
  readonly priority?: IoasidPriority;
  call(args: IoasidNotifyArgs): void;
}

export class NotifierChain {
  /**
   * Replaced, never changed in place, by add/remove (copy on write): an array read when an event
   * fired stays that event's chain while blocks (un)register during the calls, and firing an
   * event copies nothing (a VM release fires one per bound PASID).
   */
  private blocks: readonly IoasidNotifier[] = [];

  get size(): number {
    return this.blocks.length;
  }

  has(nb: IoasidNotifier): boolean {
    return this.blocks.includes(nb);
  }

  /** Insert after every block of equal or higher priority. The caller checks for duplicates. */
  add(nb: IoasidNotifier): void {
    const p = priorityOf(nb);
    let i = 0;
    while (i < this.blocks.length && priorityOf(this.blocks[i]!) >= p) i++;
    this.blocks = [...this.blocks.slice(0, i), nb, ...this.blocks.slice(i)];
  }

  /** Remove `nb`; false when it was not on the chain. */
  remove(nb: IoasidNotifier): boolean {
    const i = this.blocks.indexOf(nb);
    if (i < 0) return false;
    this.blocks = [...this.blocks.slice(0, i), ...this.blocks.slice(i + 1)];
    return true;
  }

  /** The blocks as they are now; the array never changes (blocks may (un)register while it is being called). */
  list(): readonly IoasidNotifier[] {
    return this.blocks;
  }
}

export function priorityOf(nb: IoasidNotifier): number {
  return IOASID_PRIO[nb.priority ?? 'LAST'];
}

/** Call every block of `chains`, merged by priority (earlier chains first at equal priority). */
export function dispatch(chains: readonly NotifierChain[], args: IoasidNotifyArgs): void {
  if (chains.length === 1) return dispatch2(chains[0]!.list(), NO_BLOCKS, args);
  if (chains.length === 2) return dispatch2(chains[0]!.list(), chains[1]!.list(), args);
  const lists = chains.map((c) => c.list());
  for (let p = IOASID_PRIO.CPU; p >= IOASID_PRIO.LAST; p--) for (const list of lists) callAt(list, p, args);
}

/** `dispatch([chain], args)` without the array. */
export function dispatchChain(chain: NotifierChain, args: IoasidNotifyArgs): void {
  dispatch2(chain.list(), NO_BLOCKS, args);
}

const NO_BLOCKS: readonly IoasidNotifier[] = [];

/** dispatch of one or two chains' blocks (the set's and the global chain), allocating nothing. */
function dispatch2(first: readonly IoasidNotifier[], second: readonly IoasidNotifier[], args: IoasidNotifyArgs): void {
  if (first.length + second.length === 0) return;
  for (let p = IOASID_PRIO.CPU; p >= IOASID_PRIO.LAST; p--) {
    callAt(first, p, args);
    callAt(second, p, args);
  }
}

/** Call the blocks of `list` whose priority is `p`, in list order. */
function callAt(list: readonly IoasidNotifier[], p: number, args: IoasidNotifyArgs): void {
  for (const nb of list) {
    if (priorityOf(nb) !== p) continue;
    try {
      nb.call(args);
    } catch (err) {
      log.error({ err, event: args.event, id: args.id }, 'ioasid notifier threw; continuing the chain');
    }
  }
}
