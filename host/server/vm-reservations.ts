/**
 * What a host remembers across its own restart, so that after it a VM gets back its name and its
 * RAM only with its session token (docs/reliability.md "Host restart", docs/protocol.md
 * VM_SETUP): for every VM it serves, the VM's name, the SHA-256 of its session token, the uid
 * of the peer that set it up (SO_PEERCRED, unix(7); null when unknown) and the identities
 * (`inode:<dev>:<ino>`) of its guest-RAM files.
 *
 * Kept in `<state dir>/vms.json` (written whole on every change through a temporary file and
 * rename(2), mode 0600) inside a state directory the host's user owns with mode 0700 — created
 * so when missing; anything else (another owner, a wider mode, a symbolic link) refuses the
 * start with EACCES, since whoever can write the file could reserve names. Writes while the
 * host serves are asynchronous (libuv's thread pool), one at a time, changes meanwhile coalesced
 * into the next one: a write(2) or rename(2) that waits for the disk (milliseconds, hundreds
 * under I/O load on ext4) must not stall the event loop that serves every VM
 * (docs/performance.md, "Fairness and snapshots"). Shutdown writes last, after the write in
 * flight.
 *
 * On start the file's records become *pending reservations* until `expiresAt`:
 * - a pending name is given only to a VM_SETUP that presents the token whose hash is recorded
 *   (the VM reclaims it: set up afresh under its name, then replays) from the same uid;
 *   anyone else gets EEXIST (same uid) or EACCES (another uid);
 * - the pending VM's RAM files stay owned by its name: another VM announcing one of them is
 *   EACCES (host/vfio/mem-table.ts);
 * - at `expiresAt` the remaining pending reservations are dropped (`onExpire`).
 * PASID numbers too: VT-d VCMD PASIDs are the guest's own numbers, so a returning VM replays
 * them at their old values. The registry keeps `pasidCeiling`, a bound above every PASID the
 * host handed out (raised in steps of PASID_CEILING_STEP, so it is written rarely); while
 * reservations are pending, fresh allocations start at the previous run's ceiling
 * (`pasidFloor`) and cannot take a number a returning VM will ask for.
 * A VM that leaves (its grace period ends) drops its record; a host that shuts down keeps the
 * records of the VMs it still served, and removes the file and the directory when none remain.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';

const log = childLogger('vm-reservations');

/** File name of the registry inside the state directory. */
export const RESERVATIONS_FILE = 'vms.json';
/** Shortest time a restarted host keeps the names of the VMs it served for them (ms). */
export const MIN_RESERVATION_MS = 10_000;
/** `pasidCeiling` grows in steps of this many PASIDs (one registry write per step). */
export const PASID_CEILING_STEP = 1024;
/** PASIDs are 20 bits (PCIe PASID TLP prefix): the ceiling never exceeds 2^20. */
const PASID_SPACE = 1 << 20;

export interface ReservationRecord {
  readonly name: string;
  /** SHA-256 of the session token, hex. */
  readonly tokenSha256: string;
  /** The peer's uid when the VM was set up; null when unknown (no SO_PEERCRED). */
  readonly uid: number | null;
  /** Identities of the VM's guest-RAM files (`inode:<dev>:<ino>`). */
  readonly files: readonly string[];
}

interface LiveVm {
  tokenSha256: string;
  uid: number | null;
}

export function tokenSha256(token: Uint8Array): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Ensure `dir` exists as a directory owned by this process's user with mode 0700 (EACCES otherwise). */
export function ensurePrivateDir(dir: string, what: string): void {
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') fail('EACCES', `${what}: cannot create '${dir}': ${(e as Error).message}`);
  }
  const st = fs.lstatSync(dir);
  const me = process.geteuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== me || (st.mode & 0o777) !== 0o700) {
    fail('EACCES', `${what}: '${dir}' must be a directory owned by uid ${me} with mode 0700 (it is ${st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? `owned by uid ${st.uid}, mode 0${(st.mode & 0o777).toString(8)}` : 'not a directory'})`);
  }
}

function parseRegistry(text: string, file: string): { records: ReservationRecord[]; pasidCeiling: number } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    fail('EINVAL', `${file} is not valid JSON: ${(e as Error).message}`);
  }
  const vms = (doc as { version?: unknown; vms?: unknown }).vms;
  if ((doc as { version?: unknown }).version !== 1 || !Array.isArray(vms)) fail('EINVAL', `${file}: expected { "version": 1, "vms": [...] }`);
  const ceiling = (doc as { pasidCeiling?: unknown }).pasidCeiling ?? 0;
  if (!Number.isInteger(ceiling) || (ceiling as number) < 0 || (ceiling as number) > PASID_SPACE) fail('EINVAL', `${file}: pasidCeiling is not an integer in 0..${PASID_SPACE}`);
  return { records: parseRecords(vms, file), pasidCeiling: ceiling as number };
}

function parseRecords(vms: unknown[], file: string): ReservationRecord[] {
  return vms.map((v: unknown, i: number): ReservationRecord => {
    const r = v as Partial<Record<keyof ReservationRecord, unknown>>;
    const ok = typeof r.name === 'string' && typeof r.tokenSha256 === 'string' && /^[0-9a-f]{64}$/.test(r.tokenSha256)
      && (r.uid === null || (Number.isInteger(r.uid) && (r.uid as number) >= 0))
      && Array.isArray(r.files) && r.files.every((f) => typeof f === 'string');
    if (!ok) fail('EINVAL', `${file}: entry ${i} is malformed`);
    return { name: r.name as string, tokenSha256: r.tokenSha256 as string, uid: r.uid as number | null, files: r.files as string[] };
  });
}

export class VmReservations {
  private readonly live = new Map<string, LiveVm>();
  private readonly pending = new Map<string, ReservationRecord>();
  /** Records loaded at start. */
  private loaded = 0;
  private timer: NodeJS.Timeout | null = null;
  private writeQueued = false;
  /** The asynchronous write in flight, if any (one at a time). */
  private writing: Promise<void> | null = null;
  /** Something changed while `writing` was in flight: write again when it ends. */
  private writeAgain = false;
  /** Advanced by every change the registry must record. */
  private changeGen = 0;
  /** The change generation the last finished write covered. */
  private writtenGen = 0;
  /** persisted() callers, each waiting for a write that covers generation `gen`. */
  private readonly waiters: { gen: number; resolve: () => void }[] = [];
  private closed = false;
  /** This host has written the registry (it is the host the state belongs to). */
  private wrote = false;
  /** The previous run's PASID ceiling: fresh allocations start here while reservations are pending. */
  private previousCeiling = 0;
  /** Above every PASID handed out by this run or the previous one. */
  private ceiling = 0;

  private constructor(
    /** The registry file, or undefined: nothing is persisted (in-process hosts without a state dir). */
    private readonly file: string | undefined,
    /** Until when (Date.now() ms) pending reservations hold. */
    readonly expiresAt: number,
    /** The RAM files a VM owns now (from the host's memory-file owners). */
    private readonly filesOf: (name: string) => string[],
    private readonly onExpire: (r: ReservationRecord) => void,
  ) {}

  /**
   * Open (or create) the registry in `stateDir` and load the records of the previous run as
   * pending reservations for `reservationMs`. Without a state dir nothing is remembered.
   */
  static open(opts: {
    stateDir: string | undefined;
    reservationMs: number;
    filesOf: (name: string) => string[];
    onExpire: (r: ReservationRecord) => void;
  }): VmReservations {
    if (!Number.isInteger(opts.reservationMs) || opts.reservationMs < 0) fail('EINVAL', `reservation period ${opts.reservationMs} ms is not a non-negative integer`);
    const expiresAt = Date.now() + opts.reservationMs;
    if (opts.stateDir === undefined) return new VmReservations(undefined, expiresAt, opts.filesOf, opts.onExpire);
    const dir = path.resolve(opts.stateDir);
    ensurePrivateDir(dir, '--state-dir');
    const file = path.join(dir, RESERVATIONS_FILE);
    const r = new VmReservations(file, expiresAt, opts.filesOf, opts.onExpire);
    let text: string | undefined;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (text !== undefined) {
      const reg = parseRegistry(text, file);
      for (const rec of reg.records) r.pending.set(rec.name, rec);
      r.loaded = r.pending.size;
      r.previousCeiling = reg.pasidCeiling;
      r.ceiling = reg.pasidCeiling;
    }
    if (r.pending.size > 0) {
      log.info({ vms: r.pending.size, expiresInMs: opts.reservationMs }, 'names and RAM of the VMs of the previous run are reserved for them');
      r.timer = setTimeout(() => r.expire(), opts.reservationMs);
      r.timer.unref?.();
    }
    return r;
  }

  /** Pending reservations (loaded at start, not reclaimed, not expired). */
  get pendingRecords(): readonly ReservationRecord[] {
    return [...this.pending.values()];
  }

  /** The pending reservation of `name`, if any. */
  reserved(name: string): ReservationRecord | undefined {
    return this.pending.get(name);
  }

  /** True when `token` is the one `r` was recorded with. */
  static tokenMatches(r: ReservationRecord, token: Uint8Array): boolean {
    const a = Buffer.from(r.tokenSha256, 'hex');
    const b = Buffer.from(tokenSha256(token), 'hex');
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /**
   * May a VM_SETUP from `uid` with `token` (null: a fresh set-up) take `name`? Throws when a
   * pending reservation holds it for someone else: EACCES for another uid, EEXIST for the same
   * uid without the token. Returns the reservation a matching token reclaims, else undefined.
   */
  admit(name: string, token: Uint8Array | null, uid: number | undefined): ReservationRecord | undefined {
    const r = this.pending.get(name);
    if (r === undefined) return undefined;
    const until = new Date(this.expiresAt).toISOString();
    if (r.uid !== null && uid !== undefined && r.uid !== uid) {
      fail('EACCES', `VM_SETUP: the name '${name}' is reserved for the VM of uid ${r.uid} that ran under it before the host restarted (until ${until})`);
    }
    if (token === null || !VmReservations.tokenMatches(r, token)) {
      fail('EEXIST', `VM_SETUP: the name '${name}' is reserved for the VM that ran under it before the host restarted, until ${until}; that VM reclaims it with its session token`);
    }
    return r;
  }

  /**
   * Lowest PASID a fresh allocation should take now: the previous run's ceiling while any of its
   * VMs may still come back (pending reservations), else 0.
   */
  pasidFloor(): number {
    return this.pending.size > 0 ? this.previousCeiling : 0;
  }

  /** PASID `id` was handed out: raise the ceiling past it (written once per PASID_CEILING_STEP). */
  pasidAllocated(id: number): void {
    if (id < this.ceiling) return;
    this.ceiling = Math.min(PASID_SPACE, (Math.floor(id / PASID_CEILING_STEP) + 1) * PASID_CEILING_STEP);
    this.changed();
  }

  /** VM `name` is now served with `token` (created, or reclaimed from its reservation). */
  bind(name: string, token: Uint8Array, uid: number | undefined): void {
    this.pending.delete(name);
    this.live.set(name, { tokenSha256: tokenSha256(token), uid: uid ?? null });
    this.changed();
  }

  /** VM `name` left for good (its grace period ended). */
  release(name: string): void {
    if (this.live.delete(name)) this.changed();
  }

  /** Something recorded changed (a VM's RAM files): written once, at the end of this job. */
  changed(): void {
    if (this.file === undefined || this.closed) return;
    this.changeGen++;
    if (this.writeQueued) return;
    this.writeQueued = true;
    queueMicrotask(() => {
      this.writeQueued = false;
      if (!this.closed) this.startWrite();
    });
  }

  /**
   * Resolves once the file on disk covers every change made before the call — at once when
   * nothing is persisted or nothing is pending. The host answers VM_SETUP and SET_MEM_TABLE only
   * then, so a VM whose name or RAM file was acknowledged is in the registry a restarted host
   * reads, even if this one is SIGKILLed right after the reply. Never rejects: a failed write is
   * logged (startWrite) and the caller goes on, as a synchronous write's failure did.
   */
  persisted(): Promise<void> {
    if (this.file === undefined || this.closed || this.writtenGen >= this.changeGen) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ gen: this.changeGen, resolve }));
  }

  /** A write covering generation `gen` ended (or the registry closed: `gen` Infinity): wake who waited for it. */
  private settle(gen: number): void {
    if (gen > this.writtenGen) this.writtenGen = gen;
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]!;
      if (w.gen <= this.writtenGen) {
        this.waiters.splice(i, 1);
        w.resolve();
      } else i++;
    }
  }

  /** Start an asynchronous write of the registry as it stands, or ask for one after the write in flight. Never rejects. */
  private startWrite(): void {
    if (this.writing !== null) {
      this.writeAgain = true;
      return;
    }
    const file = this.file!;
    const tmp = `${file}.${process.pid}.tmp`;
    const text = this.text();
    const gen = this.changeGen;
    this.writing = (async () => {
      try {
        // The directory may have been removed meanwhile (by a host that failed to start on it).
        ensurePrivateDir(path.dirname(file), '--state-dir');
        await fs.promises.writeFile(tmp, text, { mode: 0o600 });
        await fs.promises.rename(tmp, file);
        this.wrote = true;
      } catch (e) {
        log.error({ err: e, file }, 'could not write the VM registry: after a restart these VMs are not protected');
        await fs.promises.rm(tmp, { force: true }).catch(() => {});
      }
    })().finally(() => {
      this.writing = null;
      this.settle(gen);
      if (this.writeAgain && !this.closed) {
        this.writeAgain = false;
        this.startWrite();
      }
    });
  }

  /** Drop the pending reservations now (their period ended). */
  expire(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const gone = [...this.pending.values()];
    this.pending.clear();
    for (const r of gone) this.onExpire(r);
    if (gone.length > 0) {
      log.info({ vms: gone.map((r) => r.name) }, 'reservations of VMs that did not come back expired');
      this.changed();
    }
  }

  private records(): ReservationRecord[] {
    const out: ReservationRecord[] = [...this.pending.values()];
    for (const [name, v] of this.live) out.push({ name, tokenSha256: v.tokenSha256, uid: v.uid, files: this.filesOf(name) });
    return out;
  }

  private text(): string {
    return `${JSON.stringify({ version: 1, pasidCeiling: this.ceiling, vms: this.records() })}\n`;
  }

  /** Write `text` at once (shutdown). */
  private writeNow(text: string): void {
    const file = this.file!;
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      ensurePrivateDir(path.dirname(file), '--state-dir');
      fs.writeFileSync(tmp, text, { mode: 0o600 });
      fs.renameSync(tmp, file);
      this.wrote = true;
    } catch (e) {
      log.error({ err: e, file }, 'could not write the VM registry: after a restart these VMs are not protected');
      fs.rmSync(tmp, { force: true });
    }
  }

  /**
   * Host shutdown: write the registry as it stands now (the VMs still served keep their records
   * for the next run), or remove it and the state directory when it holds nothing — after the
   * write in flight, if any, so that no older content lands last. The records are taken at the
   * call; the promise resolves when the file is written.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const text = this.records().length > 0 ? this.text() : null;
    const owned = this.wrote || this.writeQueued || this.writing !== null || this.pending.size < this.loaded;
    this.closed = true;
    if (this.writing !== null) await this.writing;
    // A host that never wrote (e.g. it failed to listen: another host owns the socket) leaves
    // the state as it found it.
    if (this.file !== undefined && owned) {
      if (text !== null) this.writeNow(text);
      else {
        fs.rmSync(this.file, { force: true });
        try {
          fs.rmdirSync(path.dirname(this.file));
        } catch {
          /* not empty: someone else's files, leave it */
        }
      }
    }
    this.settle(Infinity);
  }
}
