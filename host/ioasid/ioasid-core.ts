/**
 * The host IOASID core (DESIGN §4; reference/ioasid-vfio-iommufd.md part A, after Jacob Pan's
 * V4 "IOASID extensions for guest SVA"; seeds 000 and 003).
 *
 * Data model
 * - Capacity: `total` IDs (default 2^pasidBits − 1: IDs 1 … 2^pasidBits − 1; ID 0 is the VT-d
 *   RID_PASID and is never allocated). Every ID of capacity is in exactly one of: `available`,
 *   a set's quota, or reserved (reserveCapacity). Invariant: available + Σ quota + reserved = total.
 * - Sets (`IoasidSet`): type NULL or MM (one set per MM token), a quota, the IDs charged to it
 *   (`used`, kept as an intrusive doubly linked list so one set's IDs are listed without
 *   scanning the ID space), its SPID → ID map, its notifier chain, an optional cgroup node.
 * - IDs: per-ID state in typed arrays indexed by ID — state, refs, owning set, SPID, list links,
 *   and reference counts of the first four user names seen (Uint16 each). Private data and
 *   the counts of further user names live in sparse Maps. The allocator is a hierarchical
 *   bitmap (id-bitmap.ts) handing out the lowest free ID in [min, max].
 *
 * Life cycle of an ID (reference A.3 "States", seed 003):
 *   alloc → IDLE, refs 1 (the allocation's own reference, not a user)
 *   get(user) → ACTIVE while any user holds a reference; the last user put → IDLE again
 *   free → FREE_PENDING and drops the allocation's reference; if no user holds one the ID is
 *     reclaimed at once, otherwise every FREE notifier is told once and the ID is reclaimed at
 *     the last put. Free of a FREE_PENDING ID does nothing (idempotent, no second event).
 *   Reclaim returns the ID to the allocator, drops its SPID, private data and cgroup charge,
 *   and destroys the set when that was its last ID and no one holds the set (setGet).
 *   Invariant: refs = (FREE_PENDING ? 0 : 1) + Σ user counts.
 *
 * Errors (thrown VsvaError; every check runs before any mutation, so a failed call changes
 * nothing except a cgroup's `events.max`, which counts refusals by design):
 *   EINVAL  bad argument; unknown ID for get/put/free (as V4 `ioasid_get_locked`); a set handle
 *           that was freed or belongs to another core; SPID already used in the set; put by a
 *           user holding nothing; quota below current use
 *   ENOENT  unknown ID for find / attach / detach / notify (as V4 `ioasid_find`)
 *   EACCES  the ID belongs to another set
 *   EBUSY   get of a FREE_PENDING ID; private data or SPID already attached; set still has IDs;
 *           notifier on a non-empty MM set
 *   EEXIST  a second MM set for one token; a notifier registered twice
 *   ENOSPC  quota above available capacity; set out of quota; no free ID in [min, max]
 *   EAGAIN  a cgroup limit on the set's path is reached
 *   EOVERFLOW  a user would hold more than 65535 references on one ID
 *
 * Deviations from V4, on purpose: failures are errors, not INVALID_IOASID or a log line; the
 * quota of a destroyed set returns to `available` (v2 did so; V4 leaks it, which would exhaust
 * capacity after enough VM lifetimes); get checks set ownership before the FREE_PENDING state so
 * a foreign set learns nothing about another set's IDs; BIND/UNBIND are fired by callers through
 * notify() (attachSpid does not fire BIND itself); FREE notifiers of the set and global chains
 * run merged in priority order (notifier-chain.ts).
 *
 * Everything runs synchronously; notifier blocks run inside the call that fires the event.
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { IoasidCgroupTree, type IoasidCgroup } from './cgroup.js';
import { IdBitmap } from './id-bitmap.js';
import { IoasidSet } from './ioasid-set.js';
import { NotifierChain, dispatch } from './notifier-chain.js';
import {
  DEFAULT_PASID_BITS,
  INVALID_IOASID,
  IOASID_EVENTS,
  IOASID_NOTIFY_FLAG_ALL,
  IOASID_NOTIFY_FLAG_SET,
  type IoasidCoreSnapshot,
  type IoasidEvent,
  type IoasidIdSnapshot,
  type IoasidNotifier,
  type IoasidSetSnapshot,
  type IoasidSetType,
  type IoasidStateName,
  type IoasidToken,
} from './types.js';

const log = childLogger('ioasid');

/** Per-ID state codes (stateOf). FREE = not allocated. */
const ST_FREE = 0;
const ST_IDLE = 1;
const ST_ACTIVE = 2;
const ST_FREE_PENDING = 3;
const STATE_NAMES: readonly IoasidStateName[] = ['idle', 'idle', 'active', 'free-pending'];

/** User names whose counts live in typed arrays; further names use a sparse Map. */
const USER_SLOTS = 4;
const USER_COUNT_MAX = 0xffff;
const REFS_MAX = 0xffff_ffff;

interface SetState {
  readonly handle: IoasidSet;
  quota: number;
  /** IDs charged to the set (allocated, not yet reclaimed) = length of the member list. */
  nr: number;
  /** First member of the intrusive list through nextOf/prevOf; 0 = empty (ID 0 is never used). */
  head: number;
  readonly spids: Map<number, number>;
  readonly chain: NotifierChain;
  /** Blocks that came through registerMmNotifier (they return to the pending list on destroy). */
  readonly mmNotifiers: Set<IoasidNotifier>;
  /** setGet holds; while > 0 the set survives reclaim of its last ID. */
  holds: number;
  readonly cgroup: IoasidCgroup | null;
}

export interface IoasidCoreOptions {
  /** PASID width; the core manages IDs 1 … 2^pasidBits − 1. 1–20, default 20. */
  pasidBits?: number;
  /** Where 'alloc' / 'free' trace events go (DESIGN §6). */
  trace?: TraceBus;
}

export interface SetAllocOptions {
  /** Default 'NULL'. */
  type?: IoasidSetType;
  /** Required (non-null) for MM sets, must be null/absent for NULL sets. */
  token?: IoasidToken | null;
  /** IDs the set may hold; 0 (default) = all of the currently available capacity. */
  quota?: number;
  /** Label for snapshots and trace events, e.g. the VM name. */
  name?: string;
  /** Charge every allocation of the set to this cgroup node. */
  cgroup?: IoasidCgroup;
}

export interface FreeAllResult {
  /** IDs reclaimed during the call. */
  reclaimed: number;
  /** IDs of the set left FREE_PENDING because users still hold references. */
  pending: number;
}

export class IoasidCore {
  readonly pasidBits: number;
  /** The cgroup-like limit tree; sets charge to its nodes (SetAllocOptions.cgroup). */
  readonly cgroups: IoasidCgroupTree;

  private readonly idSpace: number;
  private capTotal: number;
  private capAvail: number;
  private capReserved = 0;
  private capInstalled = false;

  private readonly stateOf: Uint8Array;
  private readonly refsOf: Uint32Array;
  private readonly setOf: Uint32Array;
  private readonly spidOf: Uint32Array;
  private readonly nextOf: Uint32Array;
  private readonly prevOf: Uint32Array;
  private readonly userRefs: Uint16Array;
  private readonly bitmap: IdBitmap;

  private readonly sets = new Map<number, SetState>();
  private nextSetId = 1;
  private readonly mmSets = new Map<IoasidToken, SetState>();
  private readonly pendingMm = new Map<IoasidToken, IoasidNotifier[]>();
  private readonly globalChain = new NotifierChain();
  private readonly privateData = new Map<number, unknown>();
  private readonly extraUsers = new Map<number, Map<string, number>>();
  private readonly userSlotNames: string[] = [];
  private readonly trace: TraceBus | undefined;

  constructor(opts: IoasidCoreOptions = {}) {
    const bits = opts.pasidBits ?? DEFAULT_PASID_BITS;
    if (!Number.isInteger(bits) || bits < 1 || bits > 20) fail('EINVAL', `pasidBits ${String(bits)} is not an integer in 1..20`);
    this.pasidBits = bits;
    this.idSpace = 2 ** bits;
    this.capTotal = this.idSpace - 1;
    this.capAvail = this.capTotal;
    const n = this.idSpace;
    this.stateOf = new Uint8Array(n);
    this.refsOf = new Uint32Array(n);
    this.setOf = new Uint32Array(n);
    this.spidOf = new Uint32Array(n).fill(INVALID_IOASID);
    this.nextOf = new Uint32Array(n);
    this.prevOf = new Uint32Array(n);
    this.userRefs = new Uint16Array(n * USER_SLOTS);
    this.bitmap = new IdBitmap(n);
    this.bitmap.set(0); // RID_PASID, never allocated
    this.trace = opts.trace;
    this.cgroups = new IoasidCgroupTree(() => this.capTotal);
  }

  /** Bytes of the fixed per-ID tables (typed arrays and bitmap), allocated up front. */
  get tableBytes(): number {
    return (
      this.stateOf.byteLength +
      this.refsOf.byteLength +
      this.setOf.byteLength +
      this.spidOf.byteLength +
      this.nextOf.byteLength +
      this.prevOf.byteLength +
      this.userRefs.byteLength +
      this.bitmap.byteLength
    );
  }

  // ---------------------------------------------------------------- capacity (V4 04/18)

  get capacity(): { total: number; available: number; reserved: number } {
    return { total: this.capTotal, available: this.capAvail, reserved: this.capReserved };
  }

  /**
   * ioasid_install_capacity: set the number of IDs once (e.g. the IOMMU's PASID limit); IDs
   * above it are never handed out. A second install is ignored with a warning, as in V4, and
   * returns false. EINVAL: not in 1 … 2^pasidBits − 1; EBUSY: sets or reservations exist.
   */
  installCapacity(total: number): boolean {
    if (!Number.isInteger(total) || total < 1 || total > this.idSpace - 1) fail('EINVAL', `capacity ${String(total)} is not an integer in 1..${this.idSpace - 1}`);
    if (this.capInstalled) {
      log.warn({ total, installed: this.capTotal }, 'IOASID capacity already installed; ignoring');
      return false;
    }
    if (this.sets.size > 0 || this.capReserved > 0) fail('EBUSY', 'IOASID capacity can only be installed before any set or reservation exists');
    this.capTotal = total;
    this.capAvail = total;
    this.capInstalled = true;
    return true;
  }

  /**
   * ioasid_reserve_capacity: take `n` IDs of available capacity away from sets (0 = all that
   * remain). Returns the number reserved. EINVAL: not a non-negative integer; ENOSPC: n > available.
   */
  reserveCapacity(n: number): number {
    if (!Number.isInteger(n) || n < 0) fail('EINVAL', `reserve count ${String(n)} is not a non-negative integer`);
    if (n > this.capAvail) fail('ENOSPC', `cannot reserve ${n} IOASIDs: ${this.capAvail} available`);
    const take = n === 0 ? this.capAvail : n;
    this.capAvail -= take;
    this.capReserved += take;
    return take;
  }

  /**
   * ioasid_cancel_capacity: give `n` reserved IDs back. Returns the new available count.
   * EINVAL: not a non-negative integer, or more than is reserved (it would exceed the total).
   */
  cancelCapacity(n: number): number {
    if (!Number.isInteger(n) || n < 0) fail('EINVAL', `cancel count ${String(n)} is not a non-negative integer`);
    if (n > this.capReserved) fail('EINVAL', `cannot cancel ${n} IOASIDs: only ${this.capReserved} reserved (available would exceed the total)`);
    this.capReserved -= n;
    this.capAvail += n;
    return this.capAvail;
  }

  // ---------------------------------------------------------------- sets

  /**
   * ioasid_set_alloc. Takes the quota out of available capacity. Pending MM notifiers for the
   * token (registerMmNotifier) join the new set's chain.
   * EINVAL: unknown type, MM without token, NULL with token, bad quota, dead cgroup;
   * EEXIST: an MM set for the token exists; ENOSPC: quota > available (or nothing available for quota 0).
   */
  setAlloc(opts: SetAllocOptions = {}): IoasidSet {
    const type = opts.type ?? 'NULL';
    const token = opts.token ?? null;
    const quota = opts.quota ?? 0;
    if (type !== 'NULL' && type !== 'MM') fail('EINVAL', `unknown IOASID set type '${String(type)}'`);
    if (type === 'MM' && token === null) fail('EINVAL', 'an MM set needs a token');
    if (type === 'NULL' && token !== null) fail('EINVAL', 'a NULL set takes no token');
    if (!Number.isInteger(quota) || quota < 0) fail('EINVAL', `set quota ${String(quota)} is not a non-negative integer`);
    if (opts.name !== undefined && typeof opts.name !== 'string') fail('EINVAL', 'set name must be a string');
    if (opts.cgroup !== undefined) this.cgroups.check(opts.cgroup);
    if (type === 'MM' && this.mmSets.has(token!)) fail('EEXIST', `an MM set already exists for token ${tokenLabel(token!)}`);
    if (quota > this.capAvail) fail('ENOSPC', `set quota ${quota} exceeds the ${this.capAvail} available IOASIDs`);
    if (quota === 0 && this.capAvail === 0) fail('ENOSPC', 'no IOASID capacity is available for a set');

    const handle = new IoasidSet(this.nextSetId++, type, token, opts.name ?? null, this);
    const st: SetState = {
      handle,
      quota: quota === 0 ? this.capAvail : quota,
      nr: 0,
      head: 0,
      spids: new Map(),
      chain: new NotifierChain(),
      mmNotifiers: new Set(),
      holds: 0,
      cgroup: opts.cgroup ?? null,
    };
    this.capAvail -= st.quota;
    this.sets.set(handle.id, st);
    if (st.cgroup) st.cgroup.sets++;
    if (type === 'MM') {
      this.mmSets.set(token!, st);
      const waiting = this.pendingMm.get(token!);
      if (waiting) {
        this.pendingMm.delete(token!);
        for (const nb of waiting) {
          st.chain.add(nb);
          st.mmNotifiers.add(nb);
        }
      }
    }
    log.debug({ set: handle.id, type, quota: st.quota, name: handle.name }, 'ioasid set allocated');
    return handle;
  }

  /**
   * ioasid_adjust_set: change the quota, moving the difference to or from available capacity.
   * EINVAL: dead set, quota not a positive integer, or below the IDs the set holds;
   * ENOSPC: the increase exceeds available capacity.
   */
  setAdjustQuota(set: IoasidSet, quota: number): void {
    const st = this.lookupSet(set);
    if (!Number.isInteger(quota) || quota <= 0) fail('EINVAL', `set quota ${String(quota)} is not a positive integer`);
    if (quota < st.nr) fail('EINVAL', `quota ${quota} is below the ${st.nr} IOASIDs ${set} holds`);
    if (quota - st.quota > this.capAvail) fail('ENOSPC', `raising ${set} quota by ${quota - st.quota} exceeds the ${this.capAvail} available IOASIDs`);
    this.capAvail += st.quota - quota;
    st.quota = quota;
  }

  /** ioasid_set_free: destroy an empty set. EINVAL: dead set; EBUSY: IDs outstanding. */
  setFree(set: IoasidSet): void {
    const st = this.lookupSet(set);
    if (st.nr > 0) fail('EBUSY', `${set} still has ${st.nr} IOASIDs`);
    this.destroySet(st);
  }

  /**
   * ioasid_set_get: hold the set so it survives the reclaim of its last ID (an owner such as a
   * VM does this for its lifetime). EINVAL: dead set.
   */
  setGet(set: IoasidSet): void {
    const st = this.lookupSet(set);
    st.holds++;
  }

  /**
   * ioasid_set_put: drop a hold. The set is destroyed when no holds and no IDs remain (returns
   * true then). EINVAL: dead set or no hold.
   */
  setPut(set: IoasidSet): boolean {
    const st = this.lookupSet(set);
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
    return set instanceof IoasidSet && set.owner === this && this.sets.get(set.id)?.handle === set;
  }

  /** ioasid_find_mm_set: the MM set of `token`, or null. */
  findMmSet(token: IoasidToken): IoasidSet | null {
    return this.mmSets.get(token)?.handle ?? null;
  }

  /** ioasid_find_set: the set owning `id`. ENOENT: unknown ID. */
  findSet(id: number): IoasidSet {
    this.checkKnown(id, 'ENOENT');
    return this.sets.get(this.setOf[id]!)!.handle;
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
    const st = this.lookupSet(set);
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || max < 0) fail('EINVAL', `IOASID range [${String(min)}, ${String(max)}] is not a pair of non-negative integers`);
    if (min > max) fail('EINVAL', `IOASID range [${min}, ${max}] is empty (min > max)`);
    if (st.nr >= st.quota) fail('ENOSPC', `${set} is out of quota (${st.quota})`);
    const lo = Math.max(min, 1);
    const hi = Math.min(max, this.capTotal);
    const id = lo <= hi ? this.bitmap.findClear(lo, hi) : -1;
    if (id < 0) fail('ENOSPC', `no free IOASID in [${min}, ${max}]`);
    if (st.cgroup) this.cgroups.tryCharge(st.cgroup);

    this.bitmap.set(id);
    this.stateOf[id] = ST_IDLE;
    this.refsOf[id] = 1;
    this.setOf[id] = set.id;
    // spidOf[id] is already INVALID_IOASID (reset at reclaim); user counts are already 0.
    this.link(st, id);
    st.nr++;
    if (privateData !== undefined) this.privateData.set(id, privateData);

    if (this.trace?.active) this.trace.emit({ kind: 'alloc', side: 'host', vm: set.name ?? undefined, name: 'IOASID alloc', args: { id, set: set.id } });
    if (st.chain.size > 0) this.fire(st, id, 'ALLOC', undefined, IOASID_NOTIFY_FLAG_SET);
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
    if (this.stateOf[id] === ST_FREE_PENDING) fail('EBUSY', `IOASID ${id} is being freed; no new references`);
    this.takeRef(id, user);
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
    if (this.userCount(id, user) === 0) fail('EINVAL', `user '${user}' holds no reference on IOASID ${id}`);
    this.addUserCount(id, user, -1);
    const refs = this.refsOf[id]! - 1;
    this.refsOf[id] = refs;
    if (this.stateOf[id] === ST_FREE_PENDING) {
      if (refs === 0) {
        this.reclaim(id);
        return true;
      }
    } else if (refs === 1) {
      this.stateOf[id] = ST_IDLE;
    }
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
    const data = this.privateData.get(id);
    if (getter && !getter(data)) return undefined;
    return data;
  }

  /** ioasid_attach_data. EINVAL: data undefined, bad set; ENOENT; EACCES; EBUSY: data already attached. */
  attachData(set: IoasidSet | null, id: number, data: unknown): void {
    if (data === undefined) fail('EINVAL', 'private data must not be undefined');
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    if (this.privateData.has(id)) fail('EBUSY', `IOASID ${id} already has private data`);
    this.privateData.set(id, data);
  }

  /** ioasid_detach_data: remove and return the private data (undefined when none). ENOENT; EACCES. */
  detachData(set: IoasidSet | null, id: number): unknown {
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    const data = this.privateData.get(id);
    this.privateData.delete(id);
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
    const st = this.sets.get(this.setOf[id]!)!;
    const cur = this.spidOf[id]!;
    if (cur !== INVALID_IOASID) fail('EBUSY', `IOASID ${id} already has SPID ${cur}`);
    const other = st.spids.get(spid);
    if (other !== undefined) fail('EINVAL', `SPID ${spid} is already used by IOASID ${other} in ${st.handle}`);
    this.spidOf[id] = spid;
    st.spids.set(spid, id);
  }

  /** ioasid_detach_spid: remove and return the SPID. ENOENT: unknown ID; EACCES; EINVAL: no SPID. */
  detachSpid(set: IoasidSet | null, id: number): number {
    this.checkKnown(id, 'ENOENT');
    this.checkOwner(set, id);
    const spid = this.spidOf[id]!;
    if (spid === INVALID_IOASID) fail('EINVAL', `IOASID ${id} has no SPID`);
    this.sets.get(this.setOf[id]!)!.spids.delete(spid);
    this.spidOf[id] = INVALID_IOASID;
    return spid;
  }

  /**
   * ioasid_find_by_spid: the ID of `set` carrying `spid`, or null. With `getUser`, that user
   * also takes a reference; a FREE_PENDING ID then yields null (no new references to a dying
   * ID). EINVAL: dead set, bad user; EOVERFLOW.
   */
  findBySpid(set: IoasidSet, spid: number, getUser?: string): number | null {
    const st = this.lookupSet(set);
    if (getUser !== undefined) checkUser(getUser);
    const id = st.spids.get(spid);
    if (id === undefined) return null;
    if (getUser !== undefined) {
      if (this.stateOf[id] === ST_FREE_PENDING) return null;
      this.takeRef(id, getUser);
    }
    return id;
  }

  /**
   * ioasid_set_for_each_ioasid: call `fn(id, privateData)` for every ID of the set, ascending
   * (FREE_PENDING ones included). IDs reclaimed by `fn` before their turn are skipped.
   * Returns the number of calls. EINVAL: dead set.
   */
  forEach(set: IoasidSet, fn: (id: number, data: unknown) => void): number {
    const st = this.lookupSet(set);
    let n = 0;
    for (const id of this.members(st)) {
      if (this.stateOf[id] === ST_FREE || this.setOf[id] !== set.id) continue;
      fn(id, this.privateData.get(id));
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
    const st = this.lookupSet(set);
    let reclaimed = 0;
    for (const id of this.members(st)) {
      if (this.stateOf[id] === ST_FREE || this.setOf[id] !== set.id) continue;
      if (this.freeKnown(id)) reclaimed++;
    }
    let pending = 0;
    if (this.sets.get(set.id) === st) for (let id = st.head; id !== 0; id = this.nextOf[id]!) pending++;
    return { reclaimed, pending };
  }

  // ---------------------------------------------------------------- notifiers

  /**
   * ioasid_register_notifier: add `nb` to the set's chain, or to the global chain when `set`
   * is null. EINVAL: dead set; EEXIST: already on that chain; EBUSY: an MM set that already
   * holds IDs (MM sets accept notifiers only while empty).
   */
  registerNotifier(set: IoasidSet | null, nb: IoasidNotifier): void {
    checkNotifier(nb);
    if (set === null) {
      if (this.globalChain.has(nb)) fail('EEXIST', 'notifier already registered on the global chain');
      this.globalChain.add(nb);
      return;
    }
    const st = this.lookupSet(set);
    if (st.chain.has(nb)) fail('EEXIST', `notifier already registered on ${set}`);
    if (set.type === 'MM' && st.nr > 0) fail('EBUSY', `${set} is an MM set with IOASIDs; notifiers register only on empty MM sets`);
    st.chain.add(nb);
  }

  /** ioasid_unregister_notifier. EINVAL: dead set; ENOENT: not registered there. */
  unregisterNotifier(set: IoasidSet | null, nb: IoasidNotifier): void {
    if (set === null) {
      if (!this.globalChain.remove(nb)) fail('ENOENT', 'notifier is not on the global chain');
      return;
    }
    const st = this.lookupSet(set);
    if (!st.chain.remove(nb)) fail('ENOENT', `notifier is not registered on ${set}`);
    st.mmNotifiers.delete(nb);
  }

  /**
   * ioasid_register_notifier_mm: join the chain of the MM set of `token`; if that set does not
   * exist yet, wait on a pending list and join when it is created (past events are not
   * replayed). When the set is destroyed the block goes back to waiting.
   * EINVAL: null token; EEXIST: already registered for the token; EBUSY: the set has IDs.
   */
  registerMmNotifier(token: IoasidToken, nb: IoasidNotifier): void {
    checkNotifier(nb);
    if (token === null || token === undefined) fail('EINVAL', 'an MM notifier needs a token');
    const st = this.mmSets.get(token);
    if (st) {
      if (st.chain.has(nb)) fail('EEXIST', `notifier already registered on ${st.handle}`);
      if (st.nr > 0) fail('EBUSY', `${st.handle} already holds IOASIDs; notifiers register only on empty MM sets`);
      st.chain.add(nb);
      st.mmNotifiers.add(nb);
      return;
    }
    const waiting = this.pendingMm.get(token) ?? [];
    if (waiting.includes(nb)) fail('EEXIST', `notifier already waiting for token ${tokenLabel(token)}`);
    waiting.push(nb);
    this.pendingMm.set(token, waiting);
  }

  /** ioasid_unregister_notifier_mm. ENOENT: not registered (nor waiting) for the token. */
  unregisterMmNotifier(token: IoasidToken, nb: IoasidNotifier): void {
    const st = this.mmSets.get(token);
    if (st && st.mmNotifiers.has(nb)) {
      st.mmNotifiers.delete(nb);
      st.chain.remove(nb);
      return;
    }
    const waiting = this.pendingMm.get(token);
    const i = waiting ? waiting.indexOf(nb) : -1;
    if (i < 0) fail('ENOENT', `notifier is not registered for token ${tokenLabel(token)}`);
    waiting!.splice(i, 1);
    if (waiting!.length === 0) this.pendingMm.delete(token);
  }

  /** True while `nb` waits for the MM set of `token` to be created. */
  isMmNotifierPending(token: IoasidToken, nb: IoasidNotifier): boolean {
    return this.pendingMm.get(token)?.includes(nb) ?? false;
  }

  /**
   * ioasid_notify: fire `event` for `id` (callers fire BIND at the first device bind and
   * UNBIND at the last). `flags` picks the chains: IOASID_NOTIFY_FLAG_SET, _ALL or both (default).
   * EINVAL: unknown event or flags; ENOENT: unknown ID.
   */
  notify(id: number, event: IoasidEvent, data?: unknown, flags = IOASID_NOTIFY_FLAG_SET | IOASID_NOTIFY_FLAG_ALL): void {
    if (!IOASID_EVENTS.includes(event)) fail('EINVAL', `unknown IOASID event '${String(event)}'`);
    if (!Number.isInteger(flags) || flags === 0 || (flags & ~(IOASID_NOTIFY_FLAG_SET | IOASID_NOTIFY_FLAG_ALL)) !== 0) fail('EINVAL', `notify flags 0x${Number(flags).toString(16)} are not a non-empty combination of SET and ALL`);
    this.checkKnown(id, 'ENOENT');
    this.fire(this.sets.get(this.setOf[id]!)!, id, event, data, flags);
  }

  // ---------------------------------------------------------------- introspection

  /** One ID's state, or null when it is not allocated. No ownership check (diagnostics). */
  idInfo(id: number): IoasidIdSnapshot | null {
    if (!this.isKnown(id)) return null;
    return this.idSnapshot(id);
  }

  /** One set's figures. EINVAL: dead set. */
  setInfo(set: IoasidSet): IoasidSetSnapshot {
    return this.setSnapshot(this.lookupSet(set));
  }

  /** One set and its IDs (ascending); costs O(IDs of the set). EINVAL: dead set. */
  snapshotSet(set: IoasidSet): { set: IoasidSetSnapshot; ids: IoasidIdSnapshot[] } {
    const st = this.lookupSet(set);
    return { set: this.setSnapshot(st), ids: Array.from(this.members(st), (id) => this.idSnapshot(id)) };
  }

  /**
   * The whole core: capacity, sets (ascending id), their IDs unless `ids` is false, and the
   * cgroup tree. Costs O(sets + allocated IDs), never O(ID space).
   */
  snapshot(opts: { ids?: boolean } = {}): IoasidCoreSnapshot {
    const sets = [...this.sets.values()].sort((a, b) => a.handle.id - b.handle.id);
    const ids: IoasidIdSnapshot[] = [];
    if (opts.ids !== false) for (const st of sets) for (const id of this.members(st)) ids.push(this.idSnapshot(id));
    return {
      pasidBits: this.pasidBits,
      capacity: { total: this.capTotal, available: this.capAvail },
      sets: sets.map((st) => this.setSnapshot(st)),
      ids,
      cgroups: this.cgroups.snapshot(),
    };
  }

  /** Reference count `user` holds on `id` (0 when none or unknown). */
  userRefCount(id: number, user: string): number {
    return this.isKnown(id) ? this.userCount(id, user) : 0;
  }

  // ---------------------------------------------------------------- internals

  private lookupSet(set: IoasidSet): SetState {
    const st = set instanceof IoasidSet && set.owner === this ? this.sets.get(set.id) : undefined;
    if (st === undefined || st.handle !== set) fail('EINVAL', `${String(set)} is not a live IOASID set of this core`);
    return st;
  }

  private isKnown(id: number): boolean {
    return Number.isInteger(id) && id >= 1 && id < this.idSpace && this.stateOf[id] !== ST_FREE;
  }

  private checkKnown(id: number, code: 'EINVAL' | 'ENOENT'): void {
    if (!this.isKnown(id)) fail(code, `IOASID ${String(id)} is not allocated`);
  }

  /** EINVAL for a bad set handle, EACCES when `id` belongs to another set; null = no check. */
  private checkOwner(set: IoasidSet | null, id: number): void {
    if (set === null) return;
    const st = this.lookupSet(set);
    if (this.setOf[id] !== st.handle.id) fail('EACCES', `IOASID ${id} does not belong to ${set}`);
  }

  private takeRef(id: number, user: string): void {
    if (this.refsOf[id] === REFS_MAX) fail('EOVERFLOW', `IOASID ${id} has too many references`);
    if (this.userCount(id, user) >= USER_COUNT_MAX) fail('EOVERFLOW', `user '${user}' holds ${USER_COUNT_MAX} references on IOASID ${id}`);
    this.addUserCount(id, user, 1);
    this.refsOf[id]!++;
    if (this.stateOf[id] === ST_IDLE) this.stateOf[id] = ST_ACTIVE;
  }

  private freeKnown(id: number): boolean {
    if (this.stateOf[id] === ST_FREE_PENDING) return false;
    this.stateOf[id] = ST_FREE_PENDING;
    const refs = this.refsOf[id]! - 1;
    this.refsOf[id] = refs;
    if (refs === 0) {
      this.reclaim(id);
      return true;
    }
    const st = this.sets.get(this.setOf[id]!)!;
    if (this.trace?.active) this.trace.emit({ kind: 'free', side: 'host', vm: st.handle.name ?? undefined, name: 'IOASID free (pending)', args: { id, set: st.handle.id, refs } });
    this.fire(st, id, 'FREE', undefined, IOASID_NOTIFY_FLAG_SET | IOASID_NOTIFY_FLAG_ALL);
    return false;
  }

  /** Return `id` to the allocator and drop everything attached to it. refs is already 0. */
  private reclaim(id: number): void {
    const st = this.sets.get(this.setOf[id]!)!;
    this.unlink(st, id);
    const spid = this.spidOf[id]!;
    if (spid !== INVALID_IOASID) {
      st.spids.delete(spid);
      this.spidOf[id] = INVALID_IOASID;
    }
    this.privateData.delete(id);
    this.extraUsers.delete(id);
    this.userRefs.fill(0, id * USER_SLOTS, id * USER_SLOTS + USER_SLOTS);
    this.stateOf[id] = ST_FREE;
    this.refsOf[id] = 0;
    this.setOf[id] = 0;
    this.bitmap.clear(id);
    st.nr--;
    if (st.cgroup) this.cgroups.uncharge(st.cgroup);
    if (this.trace?.active) this.trace.emit({ kind: 'free', side: 'host', vm: st.handle.name ?? undefined, name: 'IOASID reclaim', args: { id, set: st.handle.id } });
    // Reference A.3: the IDs of a set serve as its refcount; the last reclaim destroys it.
    if (st.nr === 0 && st.holds === 0) this.destroySet(st);
  }

  private destroySet(st: SetState): void {
    const set = st.handle;
    this.sets.delete(set.id);
    this.capAvail += st.quota;
    if (st.cgroup) st.cgroup.sets--;
    if (set.type === 'MM') {
      this.mmSets.delete(set.token!);
      if (st.mmNotifiers.size > 0) {
        const waiting = this.pendingMm.get(set.token!) ?? [];
        for (const nb of st.mmNotifiers) if (!waiting.includes(nb)) waiting.push(nb);
        this.pendingMm.set(set.token!, waiting);
      }
    }
    log.debug({ set: set.id, name: set.name }, 'ioasid set destroyed');
  }

  private fire(st: SetState, id: number, event: IoasidEvent, data: unknown, flags: number): void {
    // Only chains with blocks (dispatch skips empty ones; every allocation passes here).
    const onSet = (flags & IOASID_NOTIFY_FLAG_SET) !== 0 && st.chain.size > 0;
    const onAll = (flags & IOASID_NOTIFY_FLAG_ALL) !== 0 && this.globalChain.size > 0;
    if (!onSet && !onAll) return;
    const chains: NotifierChain[] = onSet && onAll ? [st.chain, this.globalChain] : [onSet ? st.chain : this.globalChain];
    const spid = this.spidOf[id]!;
    dispatch(chains, {
      event,
      id,
      spid: spid === INVALID_IOASID ? null : spid,
      set: st.handle,
      pdata: this.privateData.get(id),
      data,
    });
  }

  private link(st: SetState, id: number): void {
    const head = st.head;
    this.nextOf[id] = head;
    this.prevOf[id] = 0;
    if (head !== 0) this.prevOf[head] = id;
    st.head = id;
  }

  private unlink(st: SetState, id: number): void {
    const p = this.prevOf[id]!;
    const n = this.nextOf[id]!;
    if (p !== 0) this.nextOf[p] = n;
    else st.head = n;
    if (n !== 0) this.prevOf[n] = p;
    this.nextOf[id] = 0;
    this.prevOf[id] = 0;
  }

  /** The set's IDs, ascending. */
  private members(st: SetState): Uint32Array {
    const out = new Uint32Array(st.nr);
    let i = 0;
    for (let id = st.head; id !== 0 && i < out.length; id = this.nextOf[id]!) out[i++] = id;
    return out.sort();
  }

  private slotOf(user: string, create: boolean): number {
    let s = this.userSlotNames.indexOf(user);
    if (s < 0 && create && this.userSlotNames.length < USER_SLOTS) s = this.userSlotNames.push(user) - 1;
    return s;
  }

  private userCount(id: number, user: string): number {
    const s = this.slotOf(user, false);
    if (s >= 0) return this.userRefs[id * USER_SLOTS + s]!;
    return this.extraUsers.get(id)?.get(user) ?? 0;
  }

  private addUserCount(id: number, user: string, delta: number): void {
    const s = this.slotOf(user, delta > 0);
    if (s >= 0) {
      this.userRefs[id * USER_SLOTS + s]! += delta;
      return;
    }
    let m = this.extraUsers.get(id);
    if (!m) this.extraUsers.set(id, (m = new Map()));
    const v = (m.get(user) ?? 0) + delta;
    if (v === 0) {
      m.delete(user);
      if (m.size === 0) this.extraUsers.delete(id);
    } else m.set(user, v);
  }

  private idSnapshot(id: number): IoasidIdSnapshot {
    const users: string[] = [];
    for (let s = 0; s < this.userSlotNames.length; s++) if (this.userRefs[id * USER_SLOTS + s]! > 0) users.push(this.userSlotNames[s]!);
    const extra = this.extraUsers.get(id);
    if (extra) for (const u of extra.keys()) users.push(u);
    users.sort();
    const spid = this.spidOf[id]!;
    return {
      id,
      set: this.setOf[id]!,
      state: STATE_NAMES[this.stateOf[id]!]!,
      refs: this.refsOf[id]!,
      users,
      spid: spid === INVALID_IOASID ? null : spid,
    };
  }

  private setSnapshot(st: SetState): IoasidSetSnapshot {
    const s = st.handle;
    return {
      id: s.id,
      name: s.name,
      type: s.type,
      token: s.token === null ? null : tokenLabel(s.token),
      quota: st.quota,
      used: st.nr,
      cgroup: st.cgroup ? st.cgroup.path : null,
    };
  }
}

function checkUser(user: string): void {
  if (typeof user !== 'string' || user.length === 0) fail('EINVAL', `reference holder '${String(user)}' must be a non-empty name`);
}

function checkNotifier(nb: IoasidNotifier): void {
  if (nb === null || typeof nb !== 'object' || typeof nb.call !== 'function') fail('EINVAL', 'a notifier needs a call(args) function');
  if (nb.priority !== undefined && !['CPU', 'IOMMU', 'DEVICE', 'LAST'].includes(nb.priority)) fail('EINVAL', `unknown notifier priority '${String(nb.priority)}'`);
}

/** How a token shows in snapshots and messages. */
export function tokenLabel(token: IoasidToken): string {
  if (typeof token === 'string' || typeof token === 'number') return String(token);
  const name = (token as { name?: unknown }).name;
  return typeof name === 'string' ? name : 'object';
}
