/**
 * The host IOASID core: Linux's drivers/iommu/ioasid.c as Jacob Pan's 2020–2021 series extends
 * it ("ioasid: Add set and quota support", "Add custom allocators", ioasid_get/put,
 * ioasid_find_by_spid, the notifiers; docs/design.md §4). IoasidCore is the whole API; its
 * parts are
 *   set-table.ts     sets, quotas and the capacity they share
 *   id-table.ts      per-ID records: state, references and users, owning set, SPID, private data
 *   notifiers.ts     notifier chains (ALLOC / FREE / BIND / UNBIND) and change listeners
 *   cgroup.ts        the cgroup-like limit tree sets charge to
 * and this file holds the rules that tie them together: the life cycle of an ID and the errors.
 *
 * Life cycle of an ID (ioasid_alloc / ioasid_get / ioasid_put / ioasid_free of the series):
 *   alloc → IDLE, refs 1 (the allocation's own reference, not a user)
 *   get(user) → ACTIVE while any user holds a reference; the last user put → IDLE again
 *   free → FREE_PENDING and drops the allocation's reference; if no user holds one the ID is
 *     reclaimed at once, otherwise every FREE notifier is told once and the ID is reclaimed at
 *     the last put. Free of a FREE_PENDING ID does nothing (idempotent, no second event).
 *   Reclaim returns the ID to the allocator, drops its SPID, private data and cgroup charge,
 *   and destroys the set when that was its last ID and no one holds the set (setGet): the IDs
 *   of a set serve as its reference count.
 *   Invariant: refs = (FREE_PENDING ? 0 : 1) + Σ user counts.
 *
 * Errors (thrown VsvaError; every check runs before any mutation, so a failed call changes
 * nothing except a cgroup's `events.max`, which counts refusals by design):
 *   EINVAL  bad argument; unknown ID for get/put/free (as the series' `ioasid_get_locked`); a set
 *           handle that was freed or belongs to another core; SPID already used in the set; put
 *           by a user holding nothing; quota below current use
 *   ENOENT  unknown ID for find / attach / detach / notify (as the series' `ioasid_find`)
 *   EACCES  the ID belongs to another set
 *   EBUSY   get of a FREE_PENDING ID; private data or SPID already attached; set still has IDs;
 *           notifier on a non-empty MM set
 *   EEXIST  a second MM set for one token; a notifier or change listener registered twice
 *   ENOSPC  quota above available capacity; set out of quota; no free ID in [min, max]
 *   EAGAIN  a cgroup limit on the set's path is reached
 *   EOVERFLOW  a user would hold more than 65535 references on one ID
 *
 * Deviations from the series, on purpose: failures are errors, not INVALID_IOASID or a log
 * line; the quota of a destroyed set returns to `available` (an earlier revision did so; the
 * last one leaks it, which would exhaust capacity after enough VM lifetimes); get checks set
 * ownership before the FREE_PENDING state so a foreign set learns nothing about another set's
 * IDs; BIND/UNBIND are fired by callers through notify() (attachSpid does not fire BIND
 * itself); FREE notifiers of the set and global chains run merged in priority order
 * (notifier-chain.ts). Added: change listeners (registerChangeListener), told of every change
 * an ID snapshot would show.
 *
 * Everything runs synchronously; notifier blocks and change listeners run inside the call that
 * caused them.
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { IoasidCgroupTree } from './cgroup.js';
import { IdTable, ST_FREE, ST_FREE_PENDING, ST_IDLE } from './id-table.js';
import type { IoasidSet } from './ioasid-set.js';
import type { IoasidNotifier } from './notifier-chain.js';
import { IoasidNotifiers, checkNotifyArgs } from './notifiers.js';
import { SetTable, type SetAllocOptions, type SetState } from './set-table.js';
import {
  DEFAULT_PASID_BITS,
  INVALID_IOASID,
  IOASID_NOTIFY_FLAG_ALL,
  IOASID_NOTIFY_FLAG_SET,
  type FreeAllResult,
  type IoasidChangeListener,
  type IoasidCoreOptions,
  type IoasidCoreSnapshot,
  type IoasidEvent,
  type IoasidIdSnapshot,
  type IoasidSetSnapshot,
  type IoasidToken,
} from './types.js';

const log = childLogger('ioasid');

export type { FreeAllResult, IoasidCoreOptions } from './types.js';

export class IoasidCore {
  readonly pasidBits: number;
  /** The cgroup-like limit tree; sets charge to its nodes (SetAllocOptions.cgroup). */
  readonly cgroups: IoasidCgroupTree;

  private readonly ids: IdTable;
  private readonly sets: SetTable;
  private readonly notifiers: IoasidNotifiers;
  private readonly trace: TraceBus | undefined;

  constructor(opts: IoasidCoreOptions = {}) {
    const bits = opts.pasidBits ?? DEFAULT_PASID_BITS;
    if (!Number.isInteger(bits) || bits < 1 || bits > 20) fail('EINVAL', `pasidBits ${String(bits)} is not an integer in 1..20`);
    this.pasidBits = bits;
    this.ids = new IdTable(2 ** bits);
    this.cgroups = new IoasidCgroupTree(() => this.sets.total);
    this.sets = new SetTable(2 ** bits - 1, this, this.cgroups);
    this.notifiers = new IoasidNotifiers(this.sets, this.ids);
    this.trace = opts.trace;
  }

  /** Bytes of the fixed per-ID tables (typed arrays and bitmap), allocated up front. */
  get tableBytes(): number {
    return this.ids.byteLength;
  }

  // ---------------------------------------------------------------- capacity

  get capacity(): { total: number; available: number; reserved: number } {
    return this.sets.capacity;
  }

  /**
   * ioasid_install_capacity: set the number of IDs once (e.g. the IOMMU's PASID limit); IDs
   * above it are never handed out. A second install is ignored with a warning, as in the
   * series, and returns false. EINVAL: not in 1 … 2^pasidBits − 1; EBUSY: sets or reservations exist.
   */
  installCapacity(total: number): boolean {
    if (this.sets.installCapacity(total) === 'installed') return true;
    log.warn({ total, installed: this.sets.total }, 'IOASID capacity already installed; ignoring');
    return false;
  }

  /**
   * ioasid_reserve_capacity: take `n` IDs of available capacity away from sets (0 = all that
   * remain). Returns the number reserved. EINVAL: not a non-negative integer; ENOSPC: n > available.
   */
  reserveCapacity(n: number): number {
    return this.sets.reserveCapacity(n);
  }

  /**
   * ioasid_cancel_capacity: give `n` reserved IDs back. Returns the new available count.
   * EINVAL: not a non-negative integer, or more than is reserved (it would exceed the total).
   */
  cancelCapacity(n: number): number {
    return this.sets.cancelCapacity(n);
  }

  // ---------------------------------------------------------------- sets

  /**
   * ioasid_set_alloc. Takes the quota out of available capacity. Pending MM notifiers for the
   * token (registerMmNotifier) join the new set's chain.
   * EINVAL: unknown type, MM without token, NULL with token, bad quota, dead cgroup;
   * EEXIST: an MM set for the token exists; ENOSPC: quota > available (or nothing available for quota 0).
   */
  setAlloc(opts: SetAllocOptions = {}): IoasidSet {
    const st = this.sets.create(opts);
    this.notifiers.setCreated(st);
    const set = st.handle;
    log.debug({ set: set.id, type: set.type, quota: st.quota, name: set.name }, 'ioasid set allocated');
    return set;
  }

  /**
   * ioasid_adjust_set: change the quota, moving the difference to or from available capacity.
   * EINVAL: dead set, quota not a positive integer, or below the IDs the set holds;
   * ENOSPC: the increase exceeds available capacity.
   */
  setAdjustQuota(set: IoasidSet, quota: number): void {
    this.sets.adjustQuota(set, quota);
  }

  /** ioasid_set_free: destroy an empty set. EINVAL: dead set; EBUSY: IDs outstanding. */
  setFree(set: IoasidSet): void {
    const st = this.sets.lookup(set);
    if (st.nr > 0) fail('EBUSY', `${set} still has ${st.nr} IOASIDs`);
    this.destroySet(st);
  }

  /**
   * ioasid_set_get: hold the set so it survives the reclaim of its last ID (an owner such as a
   * VM does this for its lifetime). EINVAL: dead set.
   */
  setGet(set: IoasidSet): void {
    this.sets.lookup(set).holds++;
  }

  /**
   * ioasid_set_put: drop a hold. The set is destroyed when no holds and no IDs remain (returns
   * true then). EINVAL: dead set or no hold.
   */
  setPut(set: IoasidSet): boolean {
    const st = this.sets.lookup(set);
    if (st.holds === 0) fail('EINVAL', `${set} is not held`);
    st.holds--;
    if (st.holds === 0 && st.nr === 0) {
      this.destroySet(st);
      return true;
    }
    return false;
  }

  /** True while the set exists (not freed nor destroyed). */
  isSetValid(set: IoasidSet): boolean {
    return this.sets.isLive(set);
  }

  /** ioasid_find_mm_set: the MM set of `token`, or null. */
  findMmSet(token: IoasidToken): IoasidSet | null {
    return this.sets.mmSet(token)?.handle ?? null;
  }

  /** ioasid_find_set: the set owning `id`. ENOENT: unknown ID. */
  findSet(id: number): IoasidSet {
    this.checkKnown(id, 'ENOENT');
    return this.setOfId(id).handle;
  }

  // ---------------------------------------------------------------- IDs

  /**
   * ioasid_alloc: the lowest free ID in [min, max] (inclusive; clamped to 1 … capacity total),
   * charged to `set` (and its cgroup), state IDLE, refs 1, optional private data. Fires ALLOC
   * on the set chain.
   * EINVAL: dead set, bounds not non-negative integers, min > max;
   * ENOSPC: set out of quota, or no free ID in range; EAGAIN: cgroup limit.
   */
  alloc(set: IoasidSet, min: number, max: number, privateData?: unknown): number {
    const st = this.sets.lookup(set);
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || max < 0) fail('EINVAL', `IOASID range [${String(min)}, ${String(max)}] is not a pair of non-negative integers`);
    if (min > max) fail('EINVAL', `IOASID range [${min}, ${max}] is empty (min > max)`);
    if (st.nr >= st.quota) fail('ENOSPC', `${set} is out of quota (${st.quota})`);
    const lo = Math.max(min, 1);
    const hi = Math.min(max, this.sets.total);
    const id = lo <= hi ? this.ids.findFree(lo, hi) : -1;
    if (id < 0) fail('ENOSPC', `no free IOASID in [${min}, ${max}]`);
    if (st.cgroup) this.cgroups.tryCharge(st.cgroup);

    this.ids.claim(st, id, set.id, privateData);
    this.notifiers.changed(st, id);
    if (this.trace?.active) this.trace.emit({ kind: 'alloc', side: 'host', vm: set.name ?? undefined, name: 'IOASID alloc', args: { id, set: set.id } });
    if (st.chain.size > 0) this.notifiers.fire(st, id, 'ALLOC', undefined, IOASID_NOTIFY_FLAG_SET);
    return id;
  }

  /**
   * ioasid_get: `user` takes a reference. `set` null skips the ownership check (system-wide
   * callers such as the IOMMU driver). State becomes ACTIVE.
   * EINVAL: bad user or set, unknown ID; EACCES: another set's ID; EBUSY: FREE_PENDING;
   * EOVERFLOW: counter limits.
   */
  get(set: IoasidSet | null, id: number, user: string): void {
    checkUser(user);
    this.checkKnown(id, 'EINVAL');
    this.checkOwner(set, id);
    if (this.ids.stateOf[id] === ST_FREE_PENDING) fail('EBUSY', `IOASID ${id} is being freed; no new references`);
    this.ids.takeRef(id, user);
    this.notifiers.changedId(id);
  }

  /**
   * ioasid_put: `user` drops one reference. Returns true when this was the last reference of a
   * FREE_PENDING ID, which is then reclaimed. When the last user lets go of a live ID it goes
   * back to IDLE. EINVAL: bad user or set, unknown ID, `user` holds no reference; EACCES.
   */
  put(set: IoasidSet | null, id: number, user: string): boolean {
    checkUser(user);
    this.checkKnown(id, 'EINVAL');
    this.checkOwner(set, id);
    const ids = this.ids;
    if (ids.userCount(id, user) === 0) fail('EINVAL', `user '${user}' holds no reference on IOASID ${id}`);
    const refs = ids.dropRef(id, user);
    if (ids.stateOf[id] === ST_FREE_PENDING) {
      if (refs === 0) {
        this.reclaim(id);
        return true;
      }
    } else if (refs === 1) {
      ids.stateOf[id] = ST_IDLE;
    }
    this.notifiers.changedId(id);
    return false;
  }

  /**
   * ioasid_free: mark FREE_PENDING and drop the allocation's reference. Reclaims at once (returns
   * true) when no user holds a reference; otherwise fires FREE once on the set and global chains
   * so holders put theirs. Freeing a FREE_PENDING ID does nothing.
   * EINVAL: bad set, unknown ID; EACCES: another set's ID.
   */
  free(set: IoasidSet | null, id: number): boolean {
    this.checkKnown(id, 'EINVAL');
    this.checkOwner(set, id);
    return this.freeKnown(id);
  }

  /**
   * ioasid_find: the ID's private data (undefined when none). With `getter`, returns undefined
   * when the getter refuses the data (it may also take a reference on the object). Works in
   * every state, FREE_PENDING included. ENOENT: unknown ID; EINVAL: bad set; EACCES.
   */
  find(set: IoasidSet | null, id: number, getter?: (data: unknown) => boolean): unknown {
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    const data = this.ids.privateData.get(id);
    if (getter && !getter(data)) return undefined;
    return data;
  }

  /** ioasid_attach_data. EINVAL: data undefined, bad set; ENOENT; EACCES; EBUSY: data already attached. */
  attachData(set: IoasidSet | null, id: number, data: unknown): void {
    if (data === undefined) fail('EINVAL', 'private data must not be undefined');
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    if (this.ids.privateData.has(id)) fail('EBUSY', `IOASID ${id} already has private data`);
    this.ids.privateData.set(id, data);
  }

  /** ioasid_detach_data: remove and return the private data (undefined when none). ENOENT; EACCES. */
  detachData(set: IoasidSet | null, id: number): unknown {
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    const data = this.ids.privateData.get(id);
    this.ids.privateData.delete(id);
    return data;
  }

  /**
   * ioasid_attach_spid: record `spid` (e.g. the guest PASID) for the ID, unique within its set.
   * EINVAL: spid not in 0 … 0xfffffffe, bad set, spid used by another ID of the set;
   * ENOENT: unknown ID; EACCES; EBUSY: the ID already has an SPID.
   */
  attachSpid(set: IoasidSet | null, id: number, spid: number): void {
    if (!Number.isInteger(spid) || spid < 0 || spid >= INVALID_IOASID) fail('EINVAL', `SPID ${String(spid)} is not in 0..0xfffffffe`);
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    const st = this.setOfId(id);
    const cur = this.ids.spidOf[id]!;
    if (cur !== INVALID_IOASID) fail('EBUSY', `IOASID ${id} already has SPID ${cur}`);
    const other = st.spids.get(spid);
    if (other !== undefined) fail('EINVAL', `SPID ${spid} is already used by IOASID ${other} in ${st.handle}`);
    this.ids.spidOf[id] = spid;
    st.spids.set(spid, id);
    this.notifiers.changed(st, id);
  }

  /** ioasid_detach_spid: remove and return the SPID. ENOENT: unknown ID; EACCES; EINVAL: no SPID. */
  detachSpid(set: IoasidSet | null, id: number): number {
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    const spid = this.ids.spidOf[id]!;
    if (spid === INVALID_IOASID) fail('EINVAL', `IOASID ${id} has no SPID`);
    const st = this.setOfId(id);
    st.spids.delete(spid);
    this.ids.spidOf[id] = INVALID_IOASID;
    this.notifiers.changed(st, id);
    return spid;
  }

  /**
   * ioasid_find_by_spid: the ID of `set` carrying `spid`, or null. With `getUser`, that user
   * also takes a reference; a FREE_PENDING ID then yields null (no new references to a dying
   * ID). EINVAL: dead set, bad user; EOVERFLOW.
   */
  findBySpid(set: IoasidSet, spid: number, getUser?: string): number | null {
    const st = this.sets.lookup(set);
    if (getUser !== undefined) checkUser(getUser);
    const id = st.spids.get(spid);
    if (id === undefined) return null;
    if (getUser !== undefined) {
      if (this.ids.stateOf[id] === ST_FREE_PENDING) return null;
      this.ids.takeRef(id, getUser);
      this.notifiers.changed(st, id);
    }
    return id;
  }

  /**
   * ioasid_set_for_each_ioasid: call `fn(id, privateData)` for every ID of the set, ascending
   * (FREE_PENDING ones included). IDs reclaimed by `fn` before their turn are skipped.
   * Returns the number of calls. EINVAL: dead set.
   */
  forEach(set: IoasidSet, fn: (id: number, data: unknown) => void): number {
    const st = this.sets.lookup(set);
    const ids = this.ids;
    let n = 0;
    for (const id of ids.members(st)) {
      if (ids.stateOf[id] === ST_FREE || ids.setOf[id] !== set.id) continue;
      fn(id, ids.privateData.get(id));
      n++;
    }
    return n;
  }

  /**
   * ioasid_free_all_in_set: free every ID of the set (VM teardown). IDs without users are
   * reclaimed; the rest turn FREE_PENDING with one FREE event each and outlive the call until
   * their last put. The set itself is destroyed with its last ID unless held. EINVAL: dead set.
   */
  freeAllInSet(set: IoasidSet): FreeAllResult {
    const st = this.sets.lookup(set);
    const ids = this.ids;
    let reclaimed = 0;
    for (const id of ids.members(st)) {
      if (ids.stateOf[id] === ST_FREE || ids.setOf[id] !== set.id) continue;
      if (this.freeKnown(id)) reclaimed++;
    }
    const pending = this.sets.isLive(set) ? st.nr : 0;
    return { reclaimed, pending };
  }

  /**
   * freeAllInSet in bounded steps for a caller that yields between them (VM release,
   * docs/protocol.md "Disconnect"): each `next()` frees ≤ `perStep` IDs and yields how many are
   * left; it returns freeAllInSet's result. It visits the set's IDs of the call, most recent
   * first (list order, no sort). Between steps an ID reclaimed or freed meanwhile is skipped, one
   * allocated meanwhile is not visited (unless it reuses a listed number), and the steps end
   * when the set goes away. EINVAL (at the call): dead set, `perStep` not a positive integer.
   */
  freeAllInSetSteps(set: IoasidSet, perStep: number): Generator<number, FreeAllResult, void> {
    const st = this.sets.lookup(set);
    if (!Number.isInteger(perStep) || perStep < 1) fail('EINVAL', `freeAllInSetSteps: ${String(perStep)} IDs per step is not a positive integer`);
    return this.freeMembersSteps(set, st, this.ids.membersUnordered(st), perStep);
  }

  /** freeAllInSetSteps' generator: a method, as a closure per call was optimized anew per set. */
  private *freeMembersSteps(set: IoasidSet, st: SetState, members: Uint32Array, perStep: number): Generator<number, FreeAllResult, void> {
    let reclaimed = 0;
    for (let i = 0; i < members.length; ) {
      if (!this.sets.isLive(set)) return { reclaimed, pending: 0 };
      for (const end = Math.min(members.length, i + perStep); i < end; i++) {
        const id = members[i]!;
        if (this.ids.stateOf[id] !== ST_FREE && this.ids.setOf[id] === set.id && this.freeKnown(id)) reclaimed++;
      }
      if (i < members.length) yield members.length - i;
    }
    return { reclaimed, pending: this.sets.isLive(set) ? st.nr : 0 };
  }

  // ---------------------------------------------------------------- notifiers

  /**
   * ioasid_register_notifier: add `nb` to the set's chain, or to the global chain when `set`
   * is null. EINVAL: dead set; EEXIST: already on that chain; EBUSY: an MM set that already
   * holds IDs (MM sets accept notifiers only while empty).
   */
  registerNotifier(set: IoasidSet | null, nb: IoasidNotifier): void {
    this.notifiers.register(set, nb);
  }

  /** ioasid_unregister_notifier. EINVAL: dead set; ENOENT: not registered there. */
  unregisterNotifier(set: IoasidSet | null, nb: IoasidNotifier): void {
    this.notifiers.unregister(set, nb);
  }

  /**
   * ioasid_register_notifier_mm: join the chain of the MM set of `token`; if that set does not
   * exist yet, wait on a pending list and join when it is created (past events are not
   * replayed). When the set is destroyed the block goes back to waiting.
   * EINVAL: null token; EEXIST: already registered for the token; EBUSY: the set has IDs.
   */
  registerMmNotifier(token: IoasidToken, nb: IoasidNotifier): void {
    this.notifiers.registerMm(token, nb);
  }

  /** ioasid_unregister_notifier_mm. ENOENT: not registered (nor waiting) for the token. */
  unregisterMmNotifier(token: IoasidToken, nb: IoasidNotifier): void {
    this.notifiers.unregisterMm(token, nb);
  }

  /** True while `nb` waits for the MM set of `token` to be created. */
  isMmNotifierPending(token: IoasidToken, nb: IoasidNotifier): boolean {
    return this.notifiers.isMmPending(token, nb);
  }

  /**
   * ioasid_notify: fire `event` for `id` (callers fire BIND at the first device bind and
   * UNBIND at the last). `flags` picks the chains: IOASID_NOTIFY_FLAG_SET, _ALL or both (default).
   * EINVAL: unknown event or flags; ENOENT: unknown ID.
   */
  notify(id: number, event: IoasidEvent, data?: unknown, flags = IOASID_NOTIFY_FLAG_SET | IOASID_NOTIFY_FLAG_ALL): void {
    checkNotifyArgs(event, flags);
    this.checkKnown(id, 'ENOENT');
    this.notifiers.fire(this.setOfId(id), id, event, data, flags);
  }

  /**
   * Register `listener` on `set`: from now on it is told the ID after every call that changed
   * that ID's record — allocation, state, references, users or SPID, i.e. any field of
   * IoasidIdSnapshot (idInfo) — including a reclaim (the ID is then gone). A call that changes
   * nothing (a failed call, a second free, find, private data, quotas) tells nothing. The
   * listener runs synchronously inside the call, possibly more than once per call, and may not
   * call back into the core; a throw is logged and ignored. Listeners go with their set.
   * EINVAL: dead set or not a function; EEXIST: already registered on the set.
   */
  registerChangeListener(set: IoasidSet, listener: IoasidChangeListener): void {
    this.notifiers.addListener(set, listener);
  }

  /** Stop telling `listener`. EINVAL: dead set; ENOENT: not registered on the set. */
  unregisterChangeListener(set: IoasidSet, listener: IoasidChangeListener): void {
    this.notifiers.removeListener(set, listener);
  }

  // ---------------------------------------------------------------- introspection

  /** One ID's state, or null when it is not allocated. No ownership check (diagnostics). */
  idInfo(id: number): IoasidIdSnapshot | null {
    return this.ids.isKnown(id) ? this.ids.snapshot(id) : null;
  }

  /** `idInfo(id)?.spid ?? null`, allocating no snapshot (bind, unbind, release). No ownership check. */
  spidOf(id: number): number | null {
    return this.ids.isKnown(id) && this.ids.spidOf[id] !== INVALID_IOASID ? this.ids.spidOf[id]! : null;
  }
  /** `idInfo(id)?.state === 'free-pending'`, allocating no snapshot. No ownership check. */
  isFreePending(id: number): boolean {
    return this.ids.isKnown(id) && this.ids.stateOf[id] === ST_FREE_PENDING;
  }

  /** One set's figures. EINVAL: dead set. */
  setInfo(set: IoasidSet): IoasidSetSnapshot {
    return this.sets.snapshot(this.sets.lookup(set));
  }

  /** One set and its IDs (ascending); costs O(IDs of the set). EINVAL: dead set. */
  snapshotSet(set: IoasidSet): { set: IoasidSetSnapshot; ids: IoasidIdSnapshot[] } {
    const st = this.sets.lookup(set);
    return { set: this.sets.snapshot(st), ids: Array.from(this.ids.members(st), (id) => this.ids.snapshot(id)) };
  }

  /**
   * The whole core: capacity, sets (ascending id), their IDs unless `ids` is false, and the
   * cgroup tree. Costs O(sets + allocated IDs), never O(ID space).
   */
  snapshot(opts: { ids?: boolean } = {}): IoasidCoreSnapshot {
    const sets = this.sets.sorted();
    const ids: IoasidIdSnapshot[] = [];
    if (opts.ids !== false) for (const st of sets) for (const id of this.ids.members(st)) ids.push(this.ids.snapshot(id));
    const cap = this.sets.capacity;
    return {
      pasidBits: this.pasidBits,
      capacity: { total: cap.total, available: cap.available },
      sets: sets.map((st) => this.sets.snapshot(st)),
      ids,
      cgroups: this.cgroups.snapshot(),
    };
  }

  /** Reference count `user` holds on `id` (0 when none or unknown). */
  userRefCount(id: number, user: string): number {
    return this.ids.isKnown(id) ? this.ids.userCount(id, user) : 0;
  }

  // ---------------------------------------------------------------- internals

  private checkKnown(id: number, code: 'EINVAL' | 'ENOENT'): void {
    if (!this.ids.isKnown(id)) fail(code, `IOASID ${String(id)} is not allocated`);
  }

  /** The set of an allocated ID. */
  private setOfId(id: number): SetState {
    return this.sets.byIdLive(this.ids.setOf[id]!);
  }

  /** EINVAL for a bad set handle, EACCES when `id` belongs to another set; null = no check. */
  private checkOwner(set: IoasidSet | null, id: number): void {
    if (set === null) return;
    const st = this.sets.lookup(set);
    if (this.ids.setOf[id] !== st.handle.id) fail('EACCES', `IOASID ${id} does not belong to ${set}`);
  }

  /** free of a known ID: true when it was reclaimed at once. */
  private freeKnown(id: number): boolean {
    const ids = this.ids;
    if (ids.stateOf[id] === ST_FREE_PENDING) return false;
    ids.stateOf[id] = ST_FREE_PENDING;
    const refs = ids.refsOf[id]! - 1;
    ids.refsOf[id] = refs;
    if (refs === 0) {
      this.reclaim(id);
      return true;
    }
    const st = this.setOfId(id);
    this.notifiers.changed(st, id);
    if (this.trace?.active) this.trace.emit({ kind: 'free', side: 'host', vm: st.handle.name ?? undefined, name: 'IOASID free (pending)', args: { id, set: st.handle.id, refs } });
    this.notifiers.fire(st, id, 'FREE', undefined, IOASID_NOTIFY_FLAG_SET | IOASID_NOTIFY_FLAG_ALL);
    return false;
  }

  /** Return `id` to the allocator and drop everything attached to it. refs is already 0. */
  private reclaim(id: number): void {
    const st = this.setOfId(id);
    const spid = this.ids.release(st, id);
    if (spid !== INVALID_IOASID) st.spids.delete(spid);
    if (st.cgroup) this.cgroups.uncharge(st.cgroup);
    this.notifiers.changed(st, id);
    if (this.trace?.active) this.trace.emit({ kind: 'free', side: 'host', vm: st.handle.name ?? undefined, name: 'IOASID reclaim', args: { id, set: st.handle.id } });
    if (st.nr === 0 && st.holds === 0) this.destroySet(st);
  }

  private destroySet(st: SetState): void {
    this.sets.remove(st);
    this.notifiers.setRemoved(st);
    log.debug({ set: st.handle.id, name: st.handle.name }, 'ioasid set destroyed');
  }
}

function checkUser(user: string): void {
  if (typeof user !== 'string' || user.length === 0) fail('EINVAL', `reference holder '${String(user)}' must be a non-empty name`);
}
