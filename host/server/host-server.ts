/**
 * The host half as a service (docs/design.md §1, §4): one IOASID core, one host IOMMU, one host
 * physical memory, KVM and VDCM, and the VMs — each reached through its own protocol session
 * (main connection + backend channel) on a Unix socket or in-memory connections.
 *
 * Sessions and VMs:
 * - Before VM_SETUP a connection can only do the handshake and GET_STATE with the monitor
 *   token; every other request is EPERM (vhost's "no owner" answer). After it, GET_STATE shows
 *   the connection its own VM; the whole host needs the monitor token (stateJson).
 * - VM_SETUP with an all-zero token creates a VM (EEXIST: the name is taken, by a connected VM or
 *   one in its grace period; ENOSPC: the quota exceeds the available capacity). With a token it
 *   resumes that VM (ENOENT: no such VM — e.g. its grace period expired; EBUSY: its connection
 *   is still open; EINVAL: the name differs). The quota of a resumed VM is unchanged. A second
 *   VM_SETUP on one connection is EBUSY.
 * - When a VM's connection ends, its outstanding page requests fail and everything else is kept
 *   for `graceMs` (0: no grace period); then everything it held is released, in bounded steps
 *   between other VMs' requests (Vm.release; docs/protocol.md §12 "Disconnect").
 */
import { childLogger } from '../../src/log.js';
import { fail } from '../../src/errors.js';
import { TraceBus } from '../../src/trace/bus.js';
import type { HostSnapshot } from '../../src/api/types.js';
import { BackendServer, type ServerListenOptions, type Session } from '../../vhost/roles/server.js';
import { connectionCapWithinFileLimit, type ConnectionLimits } from '../../vhost/roles/connection-limits.js';
import type { Transport } from '../../vhost/transport/transport.js';
import { HostIommu } from '../iommu/host-iommu.js';
import { HostMemory } from '../memory/host-memory.js';
import { Kvm } from '../kvm/kvm.js';
import { Vdcm } from '../vdcm/vdcm.js';
import { EVENT_COUNTER_NAMES, type CounterSet, type MonitorSource, type MonitorStats } from '../monitor/types.js';
import { zeroCounters } from '../monitor/summary.js';
import { IoasidCore } from '../ioasid/index.js';
import { DEFAULT_MAX_PENDING_PAGE_REQUESTS, DEFAULT_PAGE_REQUEST_TIMEOUT_MS } from '../devices/page-requests.js';
import { buildHandlers } from './handlers.js';
import { resolveMemoryBackend } from '../../src/memory/memory-backend.js';
import type { MemoryAccess } from '../vfio/mem-table.js';
import type { PasidNumbering } from '../vfio/container-state.js';
import type { SessionHost } from './session-host.js';
import { tokenHex, Vm } from './vm.js';
import { MemoryPathDir } from '../memory/memory-path-dir.js';
import { MIN_RESERVATION_MS, VmReservations, type ReservationRecord } from './vm-reservations.js';
import { OwnedMemoryFiles } from './owned-memory-files.js';
import { peerOf } from './peer.js';
import { checkMonitorToken, type GetStatePageRequest } from '../../vhost/messages/vm.js';
import { StateJson, checkStateReplySize, iommuTotals } from './state-json.js';
import { tokenMatches } from '../monitor/access.js';
import { HostFiguresReader } from '../monitor/host-figures.js';

export { GET_STATE_PAGE_BYTES, checkStateReplySize } from './state-json.js';

const log = childLogger('host-server');

/** Default grace period for a disconnected VM (ms). */
export const DEFAULT_GRACE_MS = 2000;
/** Default cap on VMs one host serves (connected or in their grace period); VM_SETUP past it is ENOSPC. */
export const DEFAULT_MAX_VMS = 1024;
/** Default cap on VMs created from one peer uid (SO_PEERCRED); one more VM_SETUP is EUSERS. */
export const DEFAULT_MAX_VMS_PER_UID = 256;
/** What a VM_SETUP quota of 0 means by default: this many PASIDs (or what is left, if less). */
export const DEFAULT_VM_QUOTA = 1024;
/** Host requester ids handed to VM devices: bus 0x80 and up (unique across VMs). */
const HOST_RID_BASE = 0x8000;

export interface HostServerOptions {
  /** IOASID space width, 1–20 (default 20). */
  pasidBits?: number;
  /** How long a disconnected VM's state is kept for a reconnect (ms; 0 = release at once). */
  graceMs?: number;
  /** How long a device waits for a PAGE_RESPONSE (ms). */
  pageRequestTimeoutMs?: number;
  /** Outstanding page requests per VM before a device's DMA fails with EAGAIN. */
  maxPendingPageRequests?: number;
  /** Trace events go here (the dashboard listens); a fresh bus when absent. */
  trace?: TraceBus;
  /** VMs served at once, grace periods included (default DEFAULT_MAX_VMS). */
  maxVms?: number;
  /**
   * How guest RAM received as descriptors is reached: 'mapped' (sealed memfds mapped MAP_SHARED;
   * the default when the native addon loaded) or 'pread' (positioned I/O; the default without it).
   */
  memoryBackend?: MemoryAccess;
  /**
   * `--allow-memory-paths DIR`: socket peers may name guest-RAM files in DIR (SET_MEM_TABLE's
   * path form; DIR must be owned by the host's user, mode 0700). Absent: descriptors only.
   */
  allowMemoryPaths?: string;
  /**
   * `--state-dir`: where the host keeps its VM registry across restarts (host/server/
   * vm-reservations.ts; created 0700). Absent: nothing is remembered across a restart.
   */
  stateDir?: string;
  /**
   * How long after start the VMs of the previous run keep their names and RAM files reserved
   * for their session tokens (ms; default max(2 × graceMs, MIN_RESERVATION_MS)).
   */
  reservationMs?: number;
  /**
   * The host's monitor token: a GET_STATE page request that presents it sees every VM
   * (docs/protocol.md §10.9). Without one, GET_STATE shows each connection its own VM only.
   */
  monitorToken?: string;
  /** VMs created from one peer uid, grace periods included (default DEFAULT_MAX_VMS_PER_UID; over: EUSERS). */
  maxVmsPerUid?: number;
  /** The quota a VM_SETUP with quota 0 gets, or what capacity is left if less (default DEFAULT_VM_QUOTA). */
  defaultVmQuota?: number;
  /**
   * Limits on Unix-socket connections (vhost/roles/connection-limits.ts). maxConnections defaults
   * to two per VM (main connection + backend channel) plus 64, kept under the open-file limit
   * (connectionCapWithinFileLimit); per uid to two per VM of maxVmsPerUid plus 32.
   */
  connectionLimits?: Partial<ConnectionLimits>;
}

export class HostServer implements SessionHost {
  readonly trace: TraceBus;
  /** The IOASID core; its change listeners tell each VM's snapshot rows which PASIDs changed. */
  readonly core: IoasidCore;
  readonly memory: HostMemory;
  readonly iommu: HostIommu;
  readonly kvm: Kvm;
  readonly vdcm: Vdcm;
  readonly graceMs: number;
  private readonly backend: BackendServer;
  private readonly vmsByName = new Map<string, Vm>();
  private readonly vmsByToken = new Map<string, Vm>();
  private readonly sessionVm = new Map<Session, Vm>();
  /** Host requester ids in use → the VM whose device has it (per-VM IOTLB statistics). */
  private readonly hostRids = new Map<number, string>();
  private readonly memoryFileOwners: OwnedMemoryFiles;
  /** `--allow-memory-paths`: the directory socket peers may name guest RAM in, else undefined. */
  readonly memoryPaths: MemoryPathDir | undefined;
  /** Names, token hashes and RAM files of the VMs served, kept across restarts. */
  readonly reservations: VmReservations;
  /** Other VMs' PASID allocations stay clear of the numbers VMs of the previous run will replay. */
  private pasidNumbering(replays: boolean): PasidNumbering {
    return {
      floor: () => this.reservations.pasidFloor(),
      replays,
      allocated: (id) => this.reservations.pasidAllocated(id),
    };
  }
  private readonly retired = zeroCounters();
  /** VMs being released (teardown) → the end of their release. */
  private readonly releases = new Map<Vm, Promise<void>>();
  private nextVmId = 1;
  private readonly pageRequestTimeoutMs: number;
  private readonly maxPendingPageRequests: number;
  private readonly maxVms: number;
  private readonly monitorToken: string | undefined;
  private readonly maxVmsPerUid: number;
  private readonly defaultVmQuota: number;
  /** The peer uid each VM was created from, and VMs per uid (maxVmsPerUid). */
  private readonly vmUid = new Map<Vm, number>();
  private readonly vmsPerUid = new Map<number, number>();
  /** GET_STATE's JSON text (state-json.ts). */
  private readonly stateText: StateJson;
  /** How guest RAM passed as descriptors is reached (HostServerOptions.memoryBackend). */
  readonly memoryBackend: MemoryAccess;
  private closed = false;
  /** The process's resource figures for the dashboard's pong (RSS, heap after GC, fds, page-table pool). */
  private readonly figures = new HostFiguresReader(
    () => this.iommu.pool.stats(),
    () => {
      const s = this.iommu.stats();
      return { domains: s.domains, devices: s.devices, iotlbEntries: s.iotlbEntries, iotlbBuckets: s.iotlbBuckets, pasidCacheEntries: s.pasidCacheEntries };
    },
  );

  constructor(opts: HostServerOptions = {}) {
    this.trace = opts.trace ?? new TraceBus();
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    if (!Number.isInteger(this.graceMs) || this.graceMs < 0) fail('EINVAL', `grace period ${this.graceMs} ms is not a non-negative integer`);
    this.pageRequestTimeoutMs = opts.pageRequestTimeoutMs ?? DEFAULT_PAGE_REQUEST_TIMEOUT_MS;
    this.maxPendingPageRequests = opts.maxPendingPageRequests ?? DEFAULT_MAX_PENDING_PAGE_REQUESTS;
    this.maxVms = opts.maxVms ?? DEFAULT_MAX_VMS;
    if (opts.monitorToken !== undefined) checkMonitorToken(opts.monitorToken);
    this.monitorToken = opts.monitorToken;
    this.maxVmsPerUid = opts.maxVmsPerUid ?? DEFAULT_MAX_VMS_PER_UID;
    if (!Number.isInteger(this.maxVmsPerUid) || this.maxVmsPerUid < 1) fail('EINVAL', `maxVmsPerUid ${this.maxVmsPerUid} is not a positive integer`);
    this.defaultVmQuota = opts.defaultVmQuota ?? DEFAULT_VM_QUOTA;
    if (!Number.isInteger(this.defaultVmQuota) || this.defaultVmQuota < 1) fail('EINVAL', `defaultVmQuota ${this.defaultVmQuota} is not a positive integer`);
    this.memoryBackend = resolveMemoryBackend(opts.memoryBackend);
    this.memoryFileOwners = new OwnedMemoryFiles(() => this.reservations.changed());
    this.memoryPaths = opts.allowMemoryPaths !== undefined ? MemoryPathDir.open(opts.allowMemoryPaths) : undefined;
    try {
      this.reservations = VmReservations.open({
        stateDir: opts.stateDir,
        reservationMs: opts.reservationMs ?? Math.max(2 * this.graceMs, MIN_RESERVATION_MS),
        filesOf: (name) => this.memoryFileOwners.filesOf(name),
        onExpire: (r) => this.reservationExpired(r),
      });
    } catch (e) {
      this.memoryPaths?.close();
      throw e;
    }
    for (const r of this.reservations.pendingRecords) for (const f of r.files) this.memoryFileOwners.set(f, r.name);
    this.core = new IoasidCore({ pasidBits: opts.pasidBits ?? 20, trace: this.trace });
    this.memory = new HostMemory();
    this.iommu = new HostIommu({ memory: this.memory, trace: this.trace });
    this.kvm = new Kvm(this.core);
    this.vdcm = new Vdcm(this.core);
    this.stateText = new StateJson({ core: this.core, iommu: this.iommu, vmsById: () => this.vmsById(), nextVmId: () => this.nextVmId });
    this.backend = new BackendServer({
      handlers: (s) => buildHandlers(this, s),
      limits: {
        maxConnections: connectionCapWithinFileLimit(2 * this.maxVms + 64),
        maxConnectionsPerUid: 2 * Math.min(this.maxVmsPerUid, this.maxVms) + 32,
        ...opts.connectionLimits,
      },
    });
    this.backend.onSession((s) => s.onClose(() => this.onSessionClosed(s)));
  }

  /**
   * Serve on a Unix socket path: EADDRINUSE when a live listener has it (a stale socket file is
   * replaced); the socket is mode 0600, or 0660 with `gid` (vhost/transport/socket-file.ts).
   */
  listen(path: string, opts: ServerListenOptions = {}): Promise<void> {
    return this.backend.listen(path, opts);
  }

  /** The connection limits in force (defaults filled in). */
  get connectionLimits(): Readonly<ConnectionLimits> {
    return this.backend.limits;
  }

  /** Unix-socket connections open now: in all, or from `uid`. */
  openConnections(uid?: number): number {
    return this.backend.openConnections(uid);
  }

  /** In-process connections (FrontendClient.connect({ connect })). */
  connector(): () => Promise<Transport> {
    return this.backend.memoryConnector();
  }

  get vms(): readonly Vm[] {
    return [...this.vmsByName.values()];
  }

  vm(name: string): Vm | undefined {
    return this.vmsByName.get(name);
  }

  /** The VM a session set up (EPERM before VM_SETUP). */
  vmOf(s: Session): Vm {
    const vm = this.sessionVm.get(s);
    if (!vm || vm.tornDown) fail('EPERM', 'no VM on this connection: send VM_SETUP first');
    return vm;
  }

  /**
   * VM_SETUP: create or resume. Returns the VM and whether it was resumed. A token the host does
   * not know but that a pending reservation recorded (the host restarted) reclaims the name: the
   * VM is set up afresh under it (resumed false) and then replays. A name reserved for another
   * VM is refused (VmReservations.admit: EEXIST, or EACCES for another uid).
   */
  setupVm(s: Session, name: string, quota: number, viommu: Vm['viommu'], token: Uint8Array | null): { vm: Vm; resumed: boolean } {
    if (this.closed) fail('ENOTCONN', 'the host is shutting down');
    if (this.sessionVm.has(s)) fail('EBUSY', 'VM_SETUP: this connection already set up a VM');
    const uid = peerOf(s).uid;
    if (token !== null) {
      const vm = this.vmsByToken.get(tokenHex(token));
      if (!vm || vm.tornDown) {
        const r = this.reservations.reserved(name);
        if (r === undefined || !VmReservations.tokenMatches(r, token)) fail('ENOENT', 'VM_SETUP: no VM has this session token (grace period over?)');
        this.reservations.admit(name, token, uid);
        if (this.vmsByName.has(name)) fail('EEXIST', `VM_SETUP: a VM named '${name}' exists`);
        const reclaimed = this.createVm(s, name, quota, viommu, uid, true);
        log.info({ vm: name }, 'VM reclaimed its name after a host restart');
        return { vm: reclaimed, resumed: false };
      }
      if (vm.connected) fail('EBUSY', `VM_SETUP: VM '${vm.name}' is still connected`);
      if (vm.name !== name) fail('EINVAL', `VM_SETUP: the token belongs to VM '${vm.name}', not '${name}'`);
      vm.attachSession(s);
      this.sessionVm.set(s, vm);
      this.traceVm(vm, 'VM resumed');
      log.info({ vm: name }, 'VM resumed');
      return { vm, resumed: true };
    }
    if (this.vmsByName.has(name)) fail('EEXIST', `VM_SETUP: a VM named '${name}' exists`);
    this.reservations.admit(name, null, uid);
    return { vm: this.createVm(s, name, quota, viommu, uid, false), resumed: false };
  }

  /**
   * A new VM named `name` on session `s`, recorded in the registry. `replays`: it reclaimed the
   * name of a VM of the previous run (it may ask for that run's PASID numbers again).
   */
  private createVm(s: Session, name: string, quota: number, viommu: Vm['viommu'], uid: number | undefined, replays: boolean): Vm {
    if (this.vmsByName.size >= this.maxVms) fail('ENOSPC', `VM_SETUP: the host serves ${this.maxVms} VMs (the cap)`);
    // VMs per uid: the peer's uid from SO_PEERCRED; without it (no native addon, in-process) the
    // host's own uid (Session.peer), so the cap still holds for all such peers together.
    const limitUid = uid ?? s.peer.uid;
    const ofUid = this.vmsPerUid.get(limitUid) ?? 0;
    if (ofUid >= this.maxVmsPerUid) fail('EUSERS', `VM_SETUP: uid ${limitUid} has ${ofUid} VMs (the cap per uid, maxVmsPerUid)`);
    // Quota 0: a bounded default (or what is left, if less), never "all the rest".
    if (quota === 0) quota = Math.min(this.defaultVmQuota, this.core.capacity.available);
    const vm = new Vm(this.nextVmId, name, quota, viommu, {
      core: this.core,
      iommu: this.iommu,
      memory: this.memory,
      kvm: this.kvm,
      vdcm: this.vdcm,
      trace: this.trace,
      allocHostRid: () => this.allocHostRid(name),
      freeHostRid: (rid) => this.hostRids.delete(rid),
      pageRequestTimeoutMs: this.pageRequestTimeoutMs,
      maxPendingPageRequests: this.maxPendingPageRequests,
      memoryFileOwners: this.memoryFileOwners,
      memoryAccess: this.memoryBackend,
      ...(this.memoryPaths !== undefined ? { memoryPaths: this.memoryPaths } : {}),
      pasidNumbering: this.pasidNumbering(replays),
    });
    this.nextVmId++;
    vm.attachSession(s);
    this.vmUid.set(vm, limitUid);
    this.vmsPerUid.set(limitUid, ofUid + 1);
    this.vmsByName.set(name, vm);
    this.vmsByToken.set(tokenHex(vm.token), vm);
    this.sessionVm.set(s, vm);
    this.reservations.bind(name, vm.token, uid);
    this.traceVm(vm, 'VM created');
    log.info({ vm: name, quota }, 'VM created');
    return vm;
  }

  /** A pending reservation ended unclaimed: its RAM files are no longer held for it. */
  private reservationExpired(r: ReservationRecord): void {
    if (this.vmsByName.has(r.name)) return;
    for (const f of r.files) if (this.memoryFileOwners.get(f) === r.name) this.memoryFileOwners.delete(f);
  }

  /**
   * The snapshot of docs/design.md §7 (plus extras: per-VM stats, domains, KVM and VDCM state; IOMMU stats).
   * Each VM's PASID table is kept row by row (pasid-rows.ts), so a snapshot costs O(VMs +
   * changed PASIDs) plus copying the row arrays, whatever the number of PASIDs. `extras: false`
   * keeps each VM to the fields of the contract (Vm.snapshot).
   */
  snapshot(opts: { extras?: boolean } = {}): HostSnapshot & Record<string, unknown> {
    const cap = this.core.capacity;
    return {
      pasidBits: this.core.pasidBits,
      capacity: { total: cap.total, available: cap.available },
      vms: this.vmsById().map((vm) => vm.snapshot(opts)),
      iommu: iommuTotals(this.iommu),
    };
  }

  /** JSON text of `snapshot()` from the cached row text (StateJson.snapshotJson). */
  snapshotJson(): string {
    return this.stateText.snapshotJson();
  }

  /** One page of the whole-host snapshot (StateJson.snapshotPageJson; docs/protocol.md §10.9). */
  snapshotPageJson(cursor: number, maxVms: number): string {
    return this.stateText.snapshotPageJson(cursor, maxVms);
  }

  /**
   * GET_STATE on session `s` (docs/protocol.md §10.9). With the monitor token (a 72-byte page
   * request): one page of the whole host; a wrong token, or none configured, is EACCES.
   * Otherwise the view is the session's own VM — EPERM before VM_SETUP — as a HostSnapshot
   * whose `vms` holds that VM only, with the host's `pasidBits` and `capacity` (aggregate
   * counts: no other VM's name, PASID or pointer) and without the host-wide `iommu` counters.
   * E2BIG: the reply would exceed MAX_REPLY_PAYLOAD (one VM holding hundreds of thousands of
   * PASIDs).
   */
  registryPersisted(): Promise<void> {
    return this.reservations.persisted();
  }

  stateJson(s: Session, req: GetStatePageRequest | undefined): string {
    let json: string;
    if (req?.monitor_token !== undefined) {
      if (!tokenMatches(this.monitorToken, req.monitor_token)) {
        log.info({ session: s.id }, 'GET_STATE: wrong monitor token');
        fail('EACCES', 'GET_STATE: the monitor token does not match the host\'s');
      }
      s.monitor = true;
      json = this.snapshotPageJson(req.cursor, req.max_vms);
    } else {
      const vm = this.sessionVm.get(s);
      if (!vm || vm.tornDown) fail('EPERM', 'GET_STATE: no VM on this connection (send VM_SETUP, or present the monitor token)');
      json = req === undefined ? this.stateText.ownVmJson(vm) : this.stateText.ownVmPageJson(vm, req.cursor);
    }
    checkStateReplySize(json);
    return json;
  }

  /**
   * Cumulative counters per VM and for the host (MonitorSource.stats). A VM's IOTLB hits and
   * misses are those of its devices' requests (the IOMMU counts them per device; a VM's devices
   * are the host RIDs handed out to it). The host total is the IOMMU's own count, which keeps
   * what released VMs did.
   */
  stats(): MonitorStats {
    const total: CounterSet = { ...this.retired };
    const vms: Record<string, CounterSet> = {};
    for (const vm of this.vms) {
      const c = vm.counters;
      const set: CounterSet = { ...zeroCounters(), iotlbHits: 0, iotlbMisses: 0 };
      for (const k of EVENT_COUNTER_NAMES) {
        set[k] = c[k];
        total[k] += c[k];
      }
      vms[vm.name] = set;
    }
    for (const dev of this.iommu.listDevices()) {
      const owner = this.hostRids.get(dev.rid);
      const set = owner === undefined ? undefined : vms[owner];
      if (set === undefined) continue;
      set.iotlbHits! += dev.iotlbHits;
      set.iotlbMisses! += dev.iotlbMisses;
    }
    const s = this.iommu.stats();
    total.iotlbHits = s.hits;
    total.iotlbMisses = s.misses;
    return { total, vms };
  }

  /** What the dashboard reads. Control action 'disconnect-vm' drops the VM's connection. */
  monitorSource(): MonitorSource {
    return {
      // The fields of the contract (docs/design.md §7) only: the dashboard shows no KVM table,
      // domains or device state, and each of those costs O(its size) per refresh.
      snapshot: () => this.snapshot({ extras: false }),
      stats: () => this.stats(),
      figures: () => this.figures.read(),
      events: this.trace,
      control: async (action, name) => {
        if (action !== 'disconnect-vm') fail('EINVAL', `unknown control action '${String(action)}'`);
        const vm = name === undefined ? undefined : this.vmsByName.get(name);
        if (!vm) fail('ENOENT', `no VM named '${String(name)}'`);
        if (!vm.session) fail('ENOTCONN', `VM '${vm.name}' is not connected`);
        vm.session.close();
        return { disconnected: vm.name };
      },
    };
  }

  /** Stop serving: close every connection and release every VM (resolves when all are released). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // The VMs still served keep their registry records for the next run (written now, before
    // their release empties the memory-file owners; the file lands after any write in flight).
    const registryWritten = this.reservations.close();
    await this.backend.close();
    for (const vm of this.vms) void this.teardown(vm);
    await Promise.all(this.releases.values());
    await registryWritten;
    this.memoryPaths?.close();
  }

  private vmsById(): Vm[] {
    return [...this.vmsByName.values()].sort((a, b) => a.id - b.id);
  }

  private allocHostRid(vmName: string): number {
    for (let rid = HOST_RID_BASE; rid <= 0xffff; rid++) {
      if (!this.hostRids.has(rid)) {
        this.hostRids.set(rid, vmName);
        return rid;
      }
    }
    fail('ENOSPC', 'no host requester id left');
  }

  private onSessionClosed(s: Session): void {
    const vm = this.sessionVm.get(s);
    this.sessionVm.delete(s);
    if (!vm || vm.session !== s || vm.tornDown) return;
    vm.detachSession();
    this.traceVm(vm, 'VM disconnected');
    log.info({ vm: vm.name, graceMs: this.graceMs }, 'VM disconnected');
    if (this.graceMs === 0 || this.closed) {
      void this.teardown(vm);
      return;
    }
    vm.graceTimer = setTimeout(() => void this.teardown(vm), this.graceMs);
    vm.graceTimer.unref?.();
  }

  /**
   * Release `vm` in bounded steps between other VMs' requests (Vm.release). Until it completes
   * the VM keeps its name (VM_SETUP with it: EEXIST), its place in the VM count and its quota;
   * its token is refused at once (ENOENT: the VM is torn down). Then it is forgotten.
   */
  private teardown(vm: Vm): Promise<void> {
    const running = this.releases.get(vm);
    if (running) return running;
    if (vm.tornDown) return Promise.resolve();
    vm.pasidRows.dispose(); // no row upkeep while the PASIDs go; a snapshot meanwhile reads the core
    const done = vm
      .release()
      .catch((e: unknown) => log.error({ err: e, vm: vm.name }, 'VM teardown failed'))
      .then(() => this.forget(vm));
    this.releases.set(vm, done);
    return done;
  }

  /** The VM no longer counts against its creator's maxVmsPerUid. */
  private forgetVmUid(vm: Vm): void {
    const uid = this.vmUid.get(vm);
    if (uid === undefined) return;
    this.vmUid.delete(vm);
    const n = (this.vmsPerUid.get(uid) ?? 1) - 1;
    if (n <= 0) this.vmsPerUid.delete(uid);
    else this.vmsPerUid.set(uid, n);
  }

  /** The end of a release: the VM's counters join the retired ones and it leaves every table. */
  private forget(vm: Vm): void {
    const c = vm.counters;
    for (const k of EVENT_COUNTER_NAMES) this.retired[k] += c[k];
    vm.pasidRows.dispose();
    this.vmsByName.delete(vm.name);
    this.vmsByToken.delete(tokenHex(vm.token));
    this.releases.delete(vm);
    this.forgetVmUid(vm);
    this.memoryFileOwners.dropAll(vm.name);
    this.reservations.release(vm.name);
    this.traceVm(vm, 'VM released');
    log.info({ vm: vm.name, ...vm.releaseStats }, 'VM released');
  }

  private traceVm(vm: Vm, name: string): void {
    if (this.trace.active) this.trace.emit({ kind: 'vm', side: 'host', vm: vm.name, name });
  }
}
