/**
 * The per-ID records of the IOASID core: typed arrays indexed by ID (state, references, owning
 * set, SPID, member-list links), the reference counts of each user, private data, and the
 * allocator bitmap. This file stores and counts; the rules of the life cycle (which call may
 * move an ID where, and the errors) are IoasidCore's (ioasid-core.ts).
 *
 * Layout: every ID has a Uint8 state, Uint32 refs / set / SPID / next / prev, and Uint16
 * reference counts for the first USER_SLOTS user names seen; the counts of further user names
 * and private data live in sparse Maps. A set's IDs form an intrusive doubly linked list
 * through next/prev (`MemberList`), so one set's IDs are listed without scanning the ID space.
 */
import { fail } from '../../src/errors.js';
import { IdBitmap } from './id-bitmap.js';
import { INVALID_IOASID, type IoasidIdSnapshot, type IoasidStateName } from './types.js';

/** The head and length of one set's member list (the set's record in set-table.ts). */
export interface MemberList {
  /** First member; 0 = empty (ID 0 is never allocated). */
  head: number;
  /** Number of members. */
  nr: number;
}

/** Per-ID state codes (IdTable.stateOf). FREE = not allocated. */
export const ST_FREE = 0;
export const ST_IDLE = 1;
export const ST_ACTIVE = 2;
export const ST_FREE_PENDING = 3;
const STATE_NAMES: readonly IoasidStateName[] = ['idle', 'idle', 'active', 'free-pending'];

/** User names whose counts live in typed arrays; further names use a sparse Map. */
const USER_SLOTS = 4;
const USER_COUNT_MAX = 0xffff;
const REFS_MAX = 0xffff_ffff;

export class IdTable {
  readonly stateOf: Uint8Array;
  readonly refsOf: Uint32Array;
  /** Owning set's id; 0 while FREE. */
  readonly setOf: Uint32Array;
  /** INVALID_IOASID when no SPID is attached. */
  readonly spidOf: Uint32Array;
  readonly privateData = new Map<number, unknown>();
  private readonly nextOf: Uint32Array;
  private readonly prevOf: Uint32Array;
  private readonly userRefs: Uint16Array;
  private readonly extraUsers = new Map<number, Map<string, number>>();
  private readonly userSlotNames: string[] = [];
  private readonly bitmap: IdBitmap;

  /** Records for IDs 0 … space − 1; ID 0 (VT-d's RID_PASID) is marked used and never handed out. */
  constructor(readonly space: number) {
    this.stateOf = new Uint8Array(space);
    this.refsOf = new Uint32Array(space);
    this.setOf = new Uint32Array(space);
    this.spidOf = new Uint32Array(space).fill(INVALID_IOASID);
    this.nextOf = new Uint32Array(space);
    this.prevOf = new Uint32Array(space);
    this.userRefs = new Uint16Array(space * USER_SLOTS);
    this.bitmap = new IdBitmap(space);
    this.bitmap.set(0);
  }

  /** Bytes of the fixed per-ID tables (typed arrays and bitmap), allocated up front. */
  get byteLength(): number {
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

  /** True when `id` is an allocated ID (any state but FREE). */
  isKnown(id: number): boolean {
    return Number.isInteger(id) && id >= 1 && id < this.space && this.stateOf[id] !== ST_FREE;
  }

  /** The lowest free ID in [lo, hi], or −1. */
  findFree(lo: number, hi: number): number {
    return this.bitmap.findClear(lo, hi);
  }

  /** Allocate `id` (free, found by findFree) to the set `setId`: IDLE, refs 1, first in `list`. */
  claim(list: MemberList, id: number, setId: number, privateData: unknown): void {
    this.bitmap.set(id);
    this.stateOf[id] = ST_IDLE;
    this.refsOf[id] = 1;
    this.setOf[id] = setId;
    // spidOf[id] is already INVALID_IOASID and the user counts are 0 (reset by release).
    const head = list.head;
    this.nextOf[id] = head;
    this.prevOf[id] = 0;
    if (head !== 0) this.prevOf[head] = id;
    list.head = id;
    list.nr++;
    if (privateData !== undefined) this.privateData.set(id, privateData);
  }

  /** Return `id` to the allocator with every field reset. Returns the SPID it had (INVALID_IOASID: none). */
  release(list: MemberList, id: number): number {
    const p = this.prevOf[id]!;
    const n = this.nextOf[id]!;
    if (p !== 0) this.nextOf[p] = n;
    else list.head = n;
    if (n !== 0) this.prevOf[n] = p;
    list.nr--;
    const spid = this.spidOf[id]!;
    this.nextOf[id] = 0;
    this.prevOf[id] = 0;
    this.spidOf[id] = INVALID_IOASID;
    this.privateData.delete(id);
    this.extraUsers.delete(id);
    this.userRefs.fill(0, id * USER_SLOTS, id * USER_SLOTS + USER_SLOTS);
    this.stateOf[id] = ST_FREE;
    this.refsOf[id] = 0;
    this.setOf[id] = 0;
    this.bitmap.clear(id);
    return spid;
  }

  /** The IDs of `list` in list order (most recently claimed first): O(members), no sort. */
  membersUnordered(list: MemberList): Uint32Array {
    const out = new Uint32Array(list.nr);
    let i = 0;
    for (let id = list.head; id !== 0 && i < out.length; id = this.nextOf[id]!) out[i++] = id;
    return out;
  }

  /** The IDs of `list`, ascending. */
  members(list: MemberList): Uint32Array {
    const out = new Uint32Array(list.nr);
    let i = 0;
    for (let id = list.head; id !== 0 && i < out.length; id = this.nextOf[id]!) out[i++] = id;
    return out.sort();
  }

  /** `user` takes one reference on a live ID (IDLE → ACTIVE). EOVERFLOW: counter limits; nothing changes then. */
  takeRef(id: number, user: string): void {
    if (this.refsOf[id] === REFS_MAX) fail('EOVERFLOW', `IOASID ${id} has too many references`);
    if (this.userCount(id, user) >= USER_COUNT_MAX) fail('EOVERFLOW', `user '${user}' holds ${USER_COUNT_MAX} references on IOASID ${id}`);
    this.addUserCount(id, user, 1);
    this.refsOf[id]!++;
    if (this.stateOf[id] === ST_IDLE) this.stateOf[id] = ST_ACTIVE;
  }

  /** `user` drops one of its references (the caller checked it holds one). Returns the refs left. */
  dropRef(id: number, user: string): number {
    this.addUserCount(id, user, -1);
    const refs = this.refsOf[id]! - 1;
    this.refsOf[id] = refs;
    return refs;
  }

  /** References `user` holds on `id`. */
  userCount(id: number, user: string): number {
    const s = this.slotOf(user, false);
    if (s >= 0) return this.userRefs[id * USER_SLOTS + s]!;
    return this.extraUsers.get(id)?.get(user) ?? 0;
  }

  snapshot(id: number): IoasidIdSnapshot {
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

  private slotOf(user: string, create: boolean): number {
    let s = this.userSlotNames.indexOf(user);
    if (s < 0 && create && this.userSlotNames.length < USER_SLOTS) s = this.userSlotNames.push(user) - 1;
    return s;
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
}
