/**
 * The host service's IOASID core: IoasidCore plus change tracking for the snapshot (DESIGN §9:
 * 64 VMs × 1024 bound PASIDs, dashboard snapshot under 50 ms). A snapshot row of a PASID
 * (state, refs, users, SPID, bindings) changes only through the calls below, so each of them
 * tells the watcher of the ID's set which ID it touched, and the snapshot rebuilds that row
 * alone (host/server/pasid-rows.ts).
 *
 * Why these calls cover a row:
 * - state, refs and users move only by alloc, get, put, free (reclaim happens inside put and
 *   free), freeAllInSet and findBySpid with a getter user (it takes a reference);
 * - the SPID moves by attachSpid / detachSpid (and reclaim);
 * - bindings are the container's routes, and every route is added and removed together with
 *   the 'iommu' reference it holds (seed 003; host/vfio/container.ts), i.e. with a get / put
 *   on the same ID in the same synchronous call.
 * Every other method either reads or changes what a row does not show (quotas, capacity,
 * private data, notifier chains, cgroup limits). `ROW_NEUTRAL_METHODS` lists them; the type
 * check below fails to compile when IoasidCore gains a public member in neither list, so a new
 * mutating method cannot slip by.
 *
 * A watcher is told after the call, whether it succeeded or not (a spurious mark only costs a
 * row rebuild). Without watchers nothing extra happens.
 */
import { IoasidCore, type FreeAllResult, type IoasidSet } from '../ioasid/index.js';

/** Told which ID of its set changed; null: any of them (rebuild all rows). */
export type SetChangeListener = (id: number | null) => void;

/** IoasidCore methods that can change a PASID's snapshot row: TrackedIoasidCore reports each call. */
export const ROW_CHANGING_METHODS = ['alloc', 'get', 'put', 'free', 'attachSpid', 'detachSpid', 'findBySpid', 'freeAllInSet'] as const;

/** IoasidCore members (methods, accessors, fields) that cannot change a PASID's snapshot row. */
export const ROW_NEUTRAL_METHODS = [
  'pasidBits', 'cgroups', 'tableBytes', 'capacity', 'installCapacity', 'reserveCapacity', 'cancelCapacity',
  'setAlloc', 'setAdjustQuota', 'setFree', 'setGet', 'setPut', 'isSetValid', 'findMmSet', 'findSet',
  'find', 'attachData', 'detachData', 'forEach', 'registerNotifier', 'unregisterNotifier',
  'registerMmNotifier', 'unregisterMmNotifier', 'isMmNotifierPending', 'notify', 'idInfo', 'setInfo',
  'snapshotSet', 'snapshot', 'userRefCount',
] as const;

/** Public IoasidCore members in neither list (must stay empty: see above). */
type Unclassified = Exclude<keyof IoasidCore, (typeof ROW_CHANGING_METHODS)[number] | (typeof ROW_NEUTRAL_METHODS)[number]>;
const everyMemberClassified: [Unclassified] extends [never] ? true : Unclassified = true;
void everyMemberClassified;

export class TrackedIoasidCore extends IoasidCore {
  private readonly watchers = new Map<number, SetChangeListener>();

  /** Watch the IDs of `set` (one watcher per set; a second replaces the first). */
  watchSet(set: IoasidSet, listener: SetChangeListener): void {
    this.watchers.set(set.id, listener);
  }

  unwatchSet(set: IoasidSet, listener: SetChangeListener): void {
    if (this.watchers.get(set.id) === listener) this.watchers.delete(set.id);
  }

  override alloc(set: IoasidSet, min: number, max: number, privateData?: unknown): number {
    const id = super.alloc(set, min, max, privateData);
    this.watchers.get(set.id)?.(id);
    return id;
  }

  override get(set: IoasidSet | null, id: number, user: string): void {
    const w = this.watcherOf(id);
    try {
      super.get(set, id, user);
    } finally {
      w?.(id);
    }
  }

  override put(set: IoasidSet | null, id: number, user: string): boolean {
    const w = this.watcherOf(id);
    try {
      return super.put(set, id, user);
    } finally {
      w?.(id);
    }
  }

  override free(set: IoasidSet | null, id: number): boolean {
    const w = this.watcherOf(id);
    try {
      return super.free(set, id);
    } finally {
      w?.(id);
    }
  }

  override attachSpid(set: IoasidSet | null, id: number, spid: number): void {
    const w = this.watcherOf(id);
    try {
      super.attachSpid(set, id, spid);
    } finally {
      w?.(id);
    }
  }

  override detachSpid(set: IoasidSet | null, id: number): number {
    const w = this.watcherOf(id);
    try {
      return super.detachSpid(set, id);
    } finally {
      w?.(id);
    }
  }

  override findBySpid(set: IoasidSet, spid: number, getUser?: string): number | null {
    const id = super.findBySpid(set, spid, getUser);
    if (id !== null && getUser !== undefined) this.watchers.get(set.id)?.(id);
    return id;
  }

  override freeAllInSet(set: IoasidSet): FreeAllResult {
    const w = this.watchers.get(set.id);
    try {
      return super.freeAllInSet(set);
    } finally {
      w?.(null);
    }
  }

  /** The watcher of the set `id` belongs to (looked up before the call: a put may reclaim it). */
  private watcherOf(id: number): SetChangeListener | undefined {
    if (this.watchers.size === 0) return undefined;
    const info = this.idInfo(id);
    return info === null ? undefined : this.watchers.get(info.set);
  }
}
