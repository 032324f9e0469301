/**
 * The PASID table of one VM as the snapshot shows it (docs/design.md §7 `pasids`), kept up to
 * date row by row (docs/design.md §9: 64 VMs × 1024 bound PASIDs, dashboard snapshot under
 * 50 ms).
 *
 * A row shows what IoasidCore.idInfo shows (state, refs, users, SPID) plus the PASID's
 * bindings. The table registers a change listener on the VM's IOASID set
 * (IoasidCore.registerChangeListener), which names every ID whose record a core call changed;
 * only those rows are rebuilt, or every row when more than an eighth changed. Rows are rebuilt
 * as they change, not when read: the first change of an event-loop turn schedules a refresh
 * for the next turn (setImmediate), so the cost of a row is paid next to the request that
 * changed it and a read after many changes (the dashboard's first refresh, a GET_STATE page)
 * finds the rows current. A read also refreshes first, so it never sees a stale row.
 * Bindings need no listener of their own: every route of the container is added and removed
 * together with the 'iommu' reference it holds (host/vfio/container.ts), i.e. with a get / put
 * on the same ID in the same synchronous call.
 *
 * Rows are kept in hPASID order, each with its JSON text (made with the row), so GET_STATE
 * serialises no unchanged row. The table's JSON text is those texts joined into one flat
 * string (in brackets), once per change set, at the first read after it: a read of an
 * unchanged table then copies one string. (Concatenating cached pieces instead leaves V8 a
 * rope of thousands of pieces — the row texts are ropes themselves, and a VM's hPASIDs
 * interleave with other VMs' — which is walked again on every write-out: at 4 VMs × 1024
 * PASIDs among 64 VMs that cost a GET_STATE page several milliseconds, against a fraction of
 * one for flat copies.)
 *
 * Bindings that can change without a core call — an iommufd VM's global PASID moved to another
 * HWPT by IOMMUFD_DEVICE_REPLACE keeps its one IOASID reference (docs/protocol.md §13.6) — are
 * covered by `recheck`: at each refresh the rows of the IDs it names are rebuilt too.
 *
 * Rows handed out are never changed afterwards: a changed PASID gets a new row object, and
 * `rows()` returns a fresh array each time.
 */
import type { PasidBindingSnapshot, PasidSnapshot } from '../../src/api/types.js';
import type { IoasidCore, IoasidIdSnapshot, IoasidSet } from '../ioasid/index.js';

/** Bindings that change without a core call: the IDs whose rows to rebuild at a refresh. */
export interface PasidRowsRecheck {
  changedIds(): Iterable<number>;
}

/** Above this share of changed rows a full rebuild is cheaper than row-by-row updates. */
const FULL_REBUILD_SHARE = 1 / 8;

interface Memo {
  version: number;
  value: unknown;
  json: string | null;
}

export class PasidRows {
  /** Bumped whenever a row appears, changes or goes. */
  version = 0;
  private rowList: PasidSnapshot[] = [];
  /** JSON text of rowList[i], made with the row. */
  private jsonList: string[] = [];
  /** JSON text of the table (one flat string), until the next change. */
  private tableJson: string | null = null;
  private readonly dirty = new Set<number>();
  private all = true;
  private listening: boolean;
  private readonly memos = new Map<string, Memo>();
  /** A refresh is scheduled for the next turn. */
  private scheduled = false;
  private readonly listener = (id: number): void => {
    if (!this.all) {
      this.dirty.add(id);
      if (this.dirty.size > this.rowList.length * FULL_REBUILD_SHARE + 16) {
        this.all = true;
        this.dirty.clear();
      }
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.refreshLater);
    }
  };
  private readonly refreshLater = (): void => {
    this.scheduled = false;
    if (this.listening) this.refresh();
  };

  constructor(
    private readonly core: IoasidCore,
    private readonly set: IoasidSet,
    /** The bindings of a host PASID (the container's routes). */
    private readonly bindingsOf: (hpasid: number) => PasidBindingSnapshot[],
    private readonly recheck?: PasidRowsRecheck,
  ) {
    core.registerChangeListener(set, this.listener);
    this.listening = true;
  }

  /** The rows in hPASID order (a fresh array; the row objects are shared and never mutated). */
  rows(): PasidSnapshot[] {
    this.refresh();
    return this.rowList.slice();
  }

  /** JSON text of `rows()`: the row texts joined (Array.prototype.join makes a flat string). */
  json(): string {
    this.refresh();
    this.tableJson ??= `[${this.jsonList.join(',')}]`;
    return this.tableJson;
  }

  /**
   * A value derived from the VM's PASIDs only (e.g. KVM's gPASID → hPASID table, which moves
   * only with 'kvm' references): `make` runs again only after a row changed. The value is
   * shared between calls: callers must not change it.
   */
  derived<T>(key: string, make: () => T): T {
    return this.memo(key, make).value as T;
  }

  /** JSON text of `derived(key, make)` (by `toJson`, default JSON.stringify), cached with it. */
  derivedJson<T>(key: string, make: () => T, toJson: (value: T) => string = JSON.stringify): string {
    const m = this.memo(key, make);
    m.json ??= toJson(m.value as T);
    return m.json;
  }

  /** Changes the rows do not show yet (the whole table counts as its row count when it is to be rebuilt). */
  get pendingChanges(): number {
    return this.all ? Math.max(this.rowList.length, 1) : this.dirty.size;
  }

  /**
   * Stop listening to the set (VM release begins, or teardown; the listener went already if
   * the set did). Reads still work: each rebuilds the table from the core.
   */
  dispose(): void {
    if (this.listening && this.core.isSetValid(this.set)) this.core.unregisterChangeListener(this.set, this.listener);
    this.listening = false;
    this.all = true;
  }

  private memo(key: string, make: () => unknown): Memo {
    this.refresh();
    let m = this.memos.get(key);
    if (m === undefined || m.version !== this.version) {
      m = { version: this.version, value: make(), json: null };
      this.memos.set(key, m);
    }
    return m;
  }

  private refresh(): void {
    if (!this.listening) this.all = true;
    if (this.recheck !== undefined) for (const id of this.recheck.changedIds()) if (!this.all) this.dirty.add(id);
    if (this.all) {
      this.rebuild();
      return;
    }
    if (this.dirty.size === 0) return;
    for (const id of this.dirty) this.update(id);
    this.dirty.clear();
    this.changed();
  }

  private rebuild(): void {
    this.all = false;
    this.dirty.clear();
    const ids = this.core.isSetValid(this.set) ? this.core.snapshotSet(this.set).ids : [];
    const rows = new Array<PasidSnapshot>(ids.length);
    for (let i = 0; i < ids.length; i++) rows[i] = this.row(ids[i]!);
    // snapshotSet lists IDs ascending; keep the order whatever it is.
    for (let i = 1; i < rows.length; i++) {
      if (rows[i - 1]!.hpasid > rows[i]!.hpasid) {
        rows.sort((a, b) => a.hpasid - b.hpasid);
        break;
      }
    }
    this.rowList = rows;
    this.jsonList = rows.map(rowJson);
    this.changed();
  }

  /** Bring the row of `id` in line with the core: add, replace or remove it. */
  private update(id: number): void {
    const info = this.core.idInfo(id);
    const rows = this.rowList;
    const lo = this.lowerBound(id, 0);
    const present = lo < rows.length && rows[lo]!.hpasid === id;
    if (info === null || info.set !== this.set.id) {
      if (present) {
        rows.splice(lo, 1);
        this.jsonList.splice(lo, 1);
      }
      return;
    }
    const row = this.row(info);
    const json = rowJson(row);
    if (present) {
      rows[lo] = row;
      this.jsonList[lo] = json;
    } else {
      rows.splice(lo, 0, row);
      this.jsonList.splice(lo, 0, json);
    }
  }

  /** Index of the first row at or after `from` whose hPASID is ≥ `hpasid`. */
  private lowerBound(hpasid: number, from: number): number {
    const rows = this.rowList;
    let lo = from;
    let hi = rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (rows[mid]!.hpasid < hpasid) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private row(info: IoasidIdSnapshot): PasidSnapshot {
    return { hpasid: info.id, gpasid: info.spid, state: info.state, refs: info.refs, users: info.users, bindings: this.bindingsOf(info.id) };
  }

  private changed(): void {
    this.version++;
    this.tableJson = null;
  }
}

/**
 * `JSON.stringify(row)`, the same text, built by hand: the fields in PasidSnapshot's order, the
 * state a fixed ASCII name (IoasidStateName), the arrays through JSON.stringify unless empty.
 * A row is made on every PASID change (an allocation, a free) and the generic stringify of the
 * six fields cost several times the rest of the row's upkeep. Array.prototype.join makes a flat
 * string (a template literal makes a rope of a dozen pieces, which the table's join walks
 * again): cheaper to make, and a 64K-row table joins about three times faster.
 */
export function rowJson(row: PasidSnapshot): string {
  const users = row.users.length === 0 ? '[]' : JSON.stringify(row.users);
  const bindings = row.bindings.length === 0 ? '[]' : JSON.stringify(row.bindings);
  return [
    '{"hpasid":', row.hpasid, ',"gpasid":', row.gpasid === null ? 'null' : row.gpasid, ',"state":"', row.state,
    '","refs":', row.refs, ',"users":', users, ',"bindings":', bindings, '}',
  ].join('');
}
