/**
 * The host half as a service (docs/design.md §1, §4): one IOASID core, one host IOMMU, one host
 * physical memory, KVM and VDCM, and the VMs — each reached through its own protocol session
 * (main connection + backend channel) on a Unix socket or in-memory connections.
 *
 * Sessions and VMs:
 * - Before VM_SETUP a connection can only do the handshake and GET_STATE; every other request
 *   is EPERM (vhost's "no owner" answer).
 * - VM_SETUP with an all-zero token creates a VM (EEXIST: the name is taken, by a connected VM or
 *   one in its grace period; ENOSPC: the quota exceeds the available capacity). With a token it
 *   resumes that VM (ENOENT: no such VM — e.g. its grace period expired; EBUSY: its connection
 *   is still open; EINVAL: the name differs). The quota of a resumed VM is unchanged. A second
 *   VM_SETUP on one connection is EBUSY.
 * - When a VM's connection ends, its outstanding page requests fail and everything else is kept
 *   for `graceMs` (0: released at once); then everything it held is released.
 */
import { childLogger } from '../../src/log.js';
import { fail } from '../../src/errors.js';
import { TraceBus } from '../../src/trace/bus.js';
import type { HostSnapshot } from '../../src/api/types.js';
import { BackendServer, type Session } from '../../vhost/roles/server.js';
import type { Transport } from '../../vhost/transport/transport.js';
import { HostIommu } from '../iommu/host-iommu.js';
import { HostMemory } from '../memory/host-memory.js';
import { Kvm, type KvmEntry } from '../kvm/kvm.js';
import { Vdcm } from '../vdcm/vdcm.js';
import { EVENT_COUNTER_NAMES, type CounterSet, type MonitorSource, type MonitorStats } from '../monitor/types.js';
import { zeroCounters } from '../monitor/summary.js';
import { IoasidCore } from '../ioasid/index.js';
import { DEFAULT_MAX_PENDING_PAGE_REQUESTS, DEFAULT_PAGE_REQUEST_TIMEOUT_MS } from '../devices/page-requests.js';
import { buildHandlers } from './handlers.js';
import { resolveMemoryBackend } from '../../src/memory/memory-backend.js';
import type { MemoryAccess } from '../vfio/mem-table.js';
import type { SessionHost } from './session-host.js';
import { tokenHex, Vm } from './vm.js';
import { GET_STATE_MAX_PAGE_VMS } from '../../vhost/messages/vm.js';

/**
 * A GET_STATE page stops taking VMs once it holds this much JSON (it always holds one): pages
 * stay far below the 64 MiB reply limit (MAX_REPLY_PAYLOAD, docs/protocol.md §7) and cheap to
 * build, whatever the VMs hold.
 */
export const GET_STATE_PAGE_BYTES = 4 * 1024 * 1024;

const log = childLogger('host-server');

/** Default grace period for a disconnected VM (ms). */
export const DEFAULT_GRACE_MS = 2000;
/** Default cap on VMs one host serves (connected or in their grace period); VM_SETUP past it is ENOSPC. */
export const DEFAULT_MAX_VMS = 1024;
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
}

/** JSON text of KVM's table: what JSON.stringify gives, written directly (numbers only). */
function kvmJson(entries: readonly KvmEntry[]): string {
  const parts = new Array<string>(entries.length);
  for (let i = 0; i < entries.length; i++) parts[i] = `{"gpasid":${entries[i]!.gpasid},"hpasid":${entries[i]!.hpasid}}`;
  return `[${parts.join(',')}]`;
}

/** The IOMMU figures of the snapshot: IOTLB hits and misses, walks, faults. */
function iommuTotals(iommu: HostIommu): { iotlbHits: number; iotlbMisses: number; walks: number; faults: number } {
  const s = iommu.stats();
  return { iotlbHits: s.hits, iotlbMisses: s.misses, walks: s.walks, faults: s.faults };
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
  private readonly memoryFileOwners = new Map<string, string>();
  private readonly retired = zeroCounters();
  private nextVmId = 1;
  private readonly pageRequestTimeoutMs: number;
  private readonly maxPendingPageRequests: number;
  private readonly maxVms: number;
  /** How guest RAM passed as descriptors is reached (HostServerOptions.memoryBackend). */
  readonly memoryBackend: MemoryAccess;
  private closed = false;

  constructor(opts: HostServerOptions = {}) {
    this.trace = opts.trace ?? new TraceBus();
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    if (!Number.isInteger(this.graceMs) || this.graceMs < 0) fail('EINVAL', `grace period ${this.graceMs} ms is not a non-negative integer`);
    this.pageRequestTimeoutMs = opts.pageRequestTimeoutMs ?? DEFAULT_PAGE_REQUEST_TIMEOUT_MS;
    this.maxPendingPageRequests = opts.maxPendingPageRequests ?? DEFAULT_MAX_PENDING_PAGE_REQUESTS;
    this.maxVms = opts.maxVms ?? DEFAULT_MAX_VMS;
    this.memoryBackend = resolveMemoryBackend(opts.memoryBackend);
    this.core = new IoasidCore({ pasidBits: opts.pasidBits ?? 20, trace: this.trace });
    this.memory = new HostMemory();
    this.iommu = new HostIommu({ memory: this.memory, trace: this.trace });
    this.kvm = new Kvm(this.core);
    this.vdcm = new Vdcm(this.core);
    this.backend = new BackendServer({ handlers: (s) => buildHandlers(this, s) });
    this.backend.onSession((s) => s.onClose(() => this.onSessionClosed(s)));
  }

  /** Serve on a Unix socket path. */
  listen(path: string): Promise<void> {
    return this.backend.listen(path);
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

  /** VM_SETUP: create or resume. Returns the VM and whether it was resumed. */
  setupVm(s: Session, name: string, quota: number, viommu: Vm['viommu'], token: Uint8Array | null): { vm: Vm; resumed: boolean } {
    if (this.closed) fail('ENOTCONN', 'the host is shutting down');
    if (this.sessionVm.has(s)) fail('EBUSY', 'VM_SETUP: this connection already set up a VM');
    if (token !== null) {
      const vm = this.vmsByToken.get(tokenHex(token));
      if (!vm || vm.tornDown) fail('ENOENT', 'VM_SETUP: no VM has this session token (grace period over?)');
      if (vm.connected) fail('EBUSY', `VM_SETUP: VM '${vm.name}' is still connected`);
      if (vm.name !== name) fail('EINVAL', `VM_SETUP: the token belongs to VM '${vm.name}', not '${name}'`);
      vm.attachSession(s);
      this.sessionVm.set(s, vm);
      this.traceVm(vm, 'VM resumed');
      log.info({ vm: name }, 'VM resumed');
      return { vm, resumed: true };
    }
    if (this.vmsByName.has(name)) fail('EEXIST', `VM_SETUP: a VM named '${name}' exists`);
    if (this.vmsByName.size >= this.maxVms) fail('ENOSPC', `VM_SETUP: the host serves ${this.maxVms} VMs (the cap)`);
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
    });
    this.nextVmId++;
    vm.attachSession(s);
    this.vmsByName.set(name, vm);
    this.vmsByToken.set(tokenHex(vm.token), vm);
    this.sessionVm.set(s, vm);
    this.traceVm(vm, 'VM created');
    log.info({ vm: name, quota }, 'VM created');
    return { vm, resumed: false };
  }

  /**
   * The snapshot of docs/design.md §7 (plus extras: per-VM stats, domains, KVM and VDCM state; IOMMU stats).
   * Each VM's PASID table is kept row by row (pasid-rows.ts), so a snapshot costs O(VMs +
   * changed PASIDs) plus copying the row arrays, whatever the number of PASIDs.
   */
  snapshot(): HostSnapshot & Record<string, unknown> {
    const cap = this.core.capacity;
    return {
      pasidBits: this.core.pasidBits,
      capacity: { total: cap.total, available: cap.available },
      vms: this.vmsById().map((vm) => vm.snapshot()),
      iommu: iommuTotals(this.iommu),
    };
  }

  /**
   * JSON text of `snapshot()` (GET_STATE without a payload), built from each VM's cached
   * PASID-table and KVM-table text instead of serialising every row again. Same fields and
   * values; in each VM object the `pasids` and `kvm` keys come last. O(everything): large hosts
   * are read page by page (`snapshotPageJson`).
   */
  snapshotJson(): string {
    const vms = this.vmsById().map((vm) => this.vmJson(vm));
    return `${this.headJson().slice(0, -1)},"vms":[${vms.join(',')}],"iommu":${JSON.stringify(iommuTotals(this.iommu))}}`;
  }

  /**
   * One page of the snapshot (GET_STATE with a page request, docs/protocol.md §10.9): the host
   * fields, `vmCount` (VMs now), the VMs with id ≥ `cursor` in id order — at most `maxVms`, and
   * no more once the page holds GET_STATE_PAGE_BYTES of JSON (at least one VM) — and `next`,
   * the cursor of the following page (null after the last VM). A page costs only its VMs (plus
   * their changed PASID rows). VMs are never renumbered, so a VM that comes or goes between
   * pages shifts nothing: each VM present throughout is in exactly one page.
   * EINVAL: maxVms outside 1–GET_STATE_MAX_PAGE_VMS, or a cursor past every VM id issued.
   */
  snapshotPageJson(cursor: number, maxVms: number): string {
    if (!Number.isInteger(maxVms) || maxVms < 1 || maxVms > GET_STATE_MAX_PAGE_VMS) fail('EINVAL', `GET_STATE: max_vms ${maxVms} is not 1–${GET_STATE_MAX_PAGE_VMS}`);
    if (!Number.isInteger(cursor) || cursor < 0 || cursor > this.nextVmId) fail('EINVAL', `GET_STATE: cursor ${cursor} is past every VM id issued (next id ${this.nextVmId})`);
    const all = this.vmsById();
    let i = 0;
    while (i < all.length && all[i]!.id < cursor) i++;
    const vms: string[] = [];
    let bytes = 0;
    while (i < all.length && vms.length < maxVms && (vms.length === 0 || bytes < GET_STATE_PAGE_BYTES)) {
      const text = this.vmJson(all[i]!);
      bytes += text.length;
      vms.push(text);
      i++;
    }
    const next = i < all.length ? all[i]!.id : null;
    return `${this.headJson().slice(0, -1)},"vmCount":${all.length},"next":${next},"vms":[${vms.join(',')}],"iommu":${JSON.stringify(iommuTotals(this.iommu))}}`;
  }

  private headJson(): string {
    const cap = this.core.capacity;
    return JSON.stringify({ pasidBits: this.core.pasidBits, capacity: { total: cap.total, available: cap.available } });
  }

  /** One VM of the snapshot as JSON text, its PASID and KVM tables from their cached text. */
  private vmJson(vm: Vm): string {
    const { pasids, kvm, ...rest } = vm.snapshot({ rows: false });
    void pasids;
    void kvm;
    const head = JSON.stringify(rest);
    const rows = vm.pasidRows;
    return `${head.slice(0, -1)},"pasids":${rows.json()},"kvm":${rows.derivedJson('kvm', () => vm.kvm.entries(), kvmJson)}}`;
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
      snapshot: () => this.snapshot(),
      stats: () => this.stats(),
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

  /** Stop serving: close every connection and release every VM at once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.backend.close();
    for (const vm of this.vms) this.teardown(vm);
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
      this.teardown(vm);
      return;
    }
    vm.graceTimer = setTimeout(() => this.teardown(vm), this.graceMs);
    vm.graceTimer.unref?.();
  }

  private teardown(vm: Vm): void {
    if (vm.tornDown) return;
    const c = vm.counters;
    for (const k of EVENT_COUNTER_NAMES) this.retired[k] += c[k];
    try {
      vm.teardown();
    } catch (e) {
      log.error({ err: e, vm: vm.name }, 'VM teardown failed');
    }
    vm.pasidRows.dispose();
    this.vmsByName.delete(vm.name);
    this.vmsByToken.delete(tokenHex(vm.token));
    this.traceVm(vm, 'VM released');
    log.info({ vm: vm.name }, 'VM released');
  }

  private traceVm(vm: Vm, name: string): void {
    if (this.trace.active) this.trace.emit({ kind: 'vm', side: 'host', vm: vm.name, name });
  }
}
