/**
 * The IOASID sets and the capacity they share (Jacob Pan's "ioasid: Add set and quota support"
 * patches for Linux drivers/iommu/ioasid.c: ioasid_install_capacity, ioasid_reserve_capacity,
 * ioasid_cancel_capacity, ioasid_set_alloc, ioasid_adjust_set, ioasid_find_mm_set).
 *
 * Capacity: `total` IDs (default 2^pasidBits − 1). Every ID of capacity is in exactly one of:
 * `available`, a set's quota, or reserved. Invariant: available + Σ quota + reserved = total.
 * A set's quota comes out of `available` when the set is created and goes back when it is
 * removed (the kernel series leaks it; see ioasid-core.ts).
 *
 * This file checks and keeps the sets' figures; when a set is removed is IoasidCore's
 * (ioasid-core.ts), and what its notifiers and listeners do is IoasidNotifiers' (notifiers.ts).
 */
import { fail } from '../../src/errors.js';
import type { IoasidCgroup, IoasidCgroupTree } from './cgroup.js';
import type { MemberList } from './id-table.js';
import { IoasidSet } from './ioasid-set.js';
import { NotifierChain, type IoasidNotifier } from './notifier-chain.js';
import type { IoasidChangeListener, IoasidSetSnapshot, IoasidSetType, IoasidToken } from './types.js';

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

/**
 * One live set (the kernel's `struct ioasid_set`). `head`/`nr` are its member list in the ID
 * table (nr = IDs charged to it); `chain`, `mmBlocks` and `listeners` are kept by notifiers.ts.
 */
export interface SetState extends MemberList {
  readonly handle: IoasidSet;
  quota: number;
  /** SPID → ID. */
  readonly spids: Map<number, number>;
  /** setGet holds; while > 0 the set survives the reclaim of its last ID. */
  holds: number;
  readonly cgroup: IoasidCgroup | null;
  /** The set's notifier chain (`set->nh`). */
  readonly chain: NotifierChain;
  /** Blocks that joined through ioasid_register_notifier_mm (they wait again when the set goes). */
  readonly mmBlocks: Set<IoasidNotifier>;
  readonly listeners: IoasidChangeListener[];
}

export class SetTable {
  private capTotal: number;
  private capAvail: number;
  private capReserved = 0;
  private capInstalled = false;
  private readonly byId = new Map<number, SetState>();
  private readonly mmByToken = new Map<IoasidToken, SetState>();
  private nextSetId = 1;

  constructor(
    /** IDs the space holds besides ID 0: the largest capacity that can be installed. */
    private readonly maxTotal: number,
    /** The core the handles belong to (IoasidSet.owner). */
    private readonly owner: object,
    private readonly cgroups: IoasidCgroupTree,
  ) {
    this.capTotal = maxTotal;
    this.capAvail = maxTotal;
  }

  get capacity(): { total: number; available: number; reserved: number } {
    return { total: this.capTotal, available: this.capAvail, reserved: this.capReserved };
  }

  get total(): number {
    return this.capTotal;
  }

  /** ioasid_install_capacity (IoasidCore.installCapacity). */
  installCapacity(total: number): 'installed' | 'already-installed' {
    if (!Number.isInteger(total) || total < 1 || total > this.maxTotal) fail('EINVAL', `capacity ${String(total)} is not an integer in 1..${this.maxTotal}`);
    if (this.capInstalled) return 'already-installed';
    if (this.byId.size > 0 || this.capReserved > 0) fail('EBUSY', 'IOASID capacity can only be installed before any set or reservation exists');
    this.capTotal = total;
    this.capAvail = total;
    this.capInstalled = true;
    return 'installed';
  }

  /** ioasid_reserve_capacity (IoasidCore.reserveCapacity). */
  reserveCapacity(n: number): number {
    if (!Number.isInteger(n) || n < 0) fail('EINVAL', `reserve count ${String(n)} is not a non-negative integer`);
    if (n > this.capAvail) fail('ENOSPC', `cannot reserve ${n} IOASIDs: ${this.capAvail} available`);
    const take = n === 0 ? this.capAvail : n;
    this.capAvail -= take;
    this.capReserved += take;
    return take;
  }

  /** ioasid_cancel_capacity (IoasidCore.cancelCapacity). */
  cancelCapacity(n: number): number {
    if (!Number.isInteger(n) || n < 0) fail('EINVAL', `cancel count ${String(n)} is not a non-negative integer`);
    if (n > this.capReserved) fail('EINVAL', `cannot cancel ${n} IOASIDs: only ${this.capReserved} reserved (available would exceed the total)`);
    this.capReserved -= n;
    this.capAvail += n;
    return this.capAvail;
  }

  /** ioasid_set_alloc without the notifier side (IoasidCore.setAlloc). */
  create(opts: SetAllocOptions): SetState {
    const type = opts.type ?? 'NULL';
    const token = opts.token ?? null;
    const quota = opts.quota ?? 0;
    if (type !== 'NULL' && type !== 'MM') fail('EINVAL', `unknown IOASID set type '${String(type)}'`);
    if (type === 'MM' && token === null) fail('EINVAL', 'an MM set needs a token');
    if (type === 'NULL' && token !== null) fail('EINVAL', 'a NULL set takes no token');
    if (!Number.isInteger(quota) || quota < 0) fail('EINVAL', `set quota ${String(quota)} is not a non-negative integer`);
    if (opts.name !== undefined && typeof opts.name !== 'string') fail('EINVAL', 'set name must be a string');
    if (opts.cgroup !== undefined) this.cgroups.check(opts.cgroup);
    if (type === 'MM' && this.mmByToken.has(token!)) fail('EEXIST', `an MM set already exists for token ${tokenLabel(token!)}`);
    if (quota > this.capAvail) fail('ENOSPC', `set quota ${quota} exceeds the ${this.capAvail} available IOASIDs`);
    if (quota === 0 && this.capAvail === 0) fail('ENOSPC', 'no IOASID capacity is available for a set');

    const handle = new IoasidSet(this.nextSetId++, type, token, opts.name ?? null, this.owner);
    const st: SetState = {
      handle,
      quota: quota === 0 ? this.capAvail : quota,
      nr: 0,
      head: 0,
      spids: new Map(),
      holds: 0,
      cgroup: opts.cgroup ?? null,
      chain: new NotifierChain(),
      mmBlocks: new Set(),
      listeners: [],
    };
    this.capAvail -= st.quota;
    this.byId.set(handle.id, st);
    if (st.cgroup) st.cgroup.sets++;
    if (type === 'MM') this.mmByToken.set(token!, st);
    return st;
  }

  /** ioasid_adjust_set (IoasidCore.setAdjustQuota). */
  adjustQuota(set: IoasidSet, quota: number): void {
    const st = this.lookup(set);
    if (!Number.isInteger(quota) || quota <= 0) fail('EINVAL', `set quota ${String(quota)} is not a positive integer`);
    if (quota < st.nr) fail('EINVAL', `quota ${quota} is below the ${st.nr} IOASIDs ${set} holds`);
    if (quota - st.quota > this.capAvail) fail('ENOSPC', `raising ${set} quota by ${quota - st.quota} exceeds the ${this.capAvail} available IOASIDs`);
    this.capAvail += st.quota - quota;
    st.quota = quota;
  }

  /** Forget the set and return its quota to available capacity. */
  remove(st: SetState): void {
    const set = st.handle;
    this.byId.delete(set.id);
    this.capAvail += st.quota;
    if (st.cgroup) st.cgroup.sets--;
    if (set.type === 'MM') this.mmByToken.delete(set.token!);
  }

  /** The live set behind a handle. EINVAL: freed, or a handle of another core. */
  lookup(set: IoasidSet): SetState {
    const st = set instanceof IoasidSet && set.owner === this.owner ? this.byId.get(set.id) : undefined;
    if (st === undefined || st.handle !== set) fail('EINVAL', `${String(set)} is not a live IOASID set of this core`);
    return st;
  }

  isLive(set: IoasidSet): boolean {
    return set instanceof IoasidSet && set.owner === this.owner && this.byId.get(set.id)?.handle === set;
  }

  /** The set with id `setId`, which the caller knows is live (the owner of an allocated ID). */
  byIdLive(setId: number): SetState {
    return this.byId.get(setId)!;
  }

  /** The MM set of `token`, if any. */
  mmSet(token: IoasidToken): SetState | undefined {
    return this.mmByToken.get(token);
  }

  /** The live sets, ascending by id. */
  sorted(): SetState[] {
    return [...this.byId.values()].sort((a, b) => a.handle.id - b.handle.id);
  }

  snapshot(st: SetState): IoasidSetSnapshot {
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

/** How a token shows in snapshots and messages. */
export function tokenLabel(token: IoasidToken): string {
  if (typeof token === 'string' || typeof token === 'number') return String(token);
  const name = (token as { name?: unknown }).name;
  return typeof name === 'string' ? name : 'object';
}
