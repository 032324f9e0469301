/**
 * One VM as the host sees it: its IOASID set (with its quota, held for the VM's lifetime), its
 * memory table, its container, its KVM and VDCM state, its outstanding page requests, and the
 * session (main connection + backend channel) it is currently reached through.
 *
 * Life cycle: created by VM_SETUP; `detachSession` when its connection ends (the host keeps
 * everything for the grace period); `attachSession` when VM_SETUP presents its token again
 * within the grace period; `release` when the grace period expires or the host shuts down —
 * everything it held is released, in bounded steps between other VMs' requests, and its set's
 * quota returns to the capacity (`teardown` does the same at once).
 */
import { randomBytes } from 'node:crypto';
import { VsvaError } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { VmSnapshot } from '../../src/api/types.js';
import type { Session } from '../../vhost/roles/server.js';
import type { FreeAllResult, IoasidCore, IoasidSet } from '../ioasid/index.js';
import { Kvm, type KvmVm } from '../kvm/kvm.js';
import { Vdcm, type VdcmVm } from '../vdcm/vdcm.js';
import type { HostMemory } from '../memory/host-memory.js';
import { PageRequestTracker } from '../devices/page-requests.js';
import { VfioContainer, type ContainerCounters } from '../vfio/container.js';
import type { PasidNumbering } from '../vfio/container-state.js';
import { nextSlice, sliceTimer } from '../vfio/slice-budget.js';
import type { HostIommu } from '../iommu/host-iommu.js';
import { MemTableMap, type MemoryAccess, type MemoryFileOwners } from '../vfio/mem-table.js';
import type { MemoryPathDir } from '../memory/memory-path-dir.js';
import { peerOf } from './peer.js';
import { PasidRows } from './pasid-rows.js';
import { IommufdContext } from '../iommufd/index.js';
import { GlobalPasidTracker, globalPasidBindings } from '../iommufd/snapshot.js';
import type { DeviceDmaReply, DeviceDmaRequest } from '../../vhost/messages/device-dma.js';
import type { DeviceConfigRequest } from '../../vhost/messages/device-config.js';

const log = childLogger('host-vm');

/**
 * PASIDs one release step frees (free_all_in_set in steps): a PASID without users left costs a
 * few µs (reclaim, change listeners, trace), so a step stays near 0.5 ms.
 */
export const RELEASE_STEP_IDS = 128;
/** PASIDs freed between two looks at the step's time budget (slice-budget.ts). */
const RELEASE_CHUNK_IDS = 8;

export type ViommuKind = 'unspecified' | 'vtd' | 'virtio';
/** The host uAPI a VM chose at VM_SETUP (docs/protocol.md §13). */
export type Uapi = 'vfio-sva' | 'iommufd';

export interface VmDeps {
  core: IoasidCore;
  iommu: HostIommu;
  memory: HostMemory;
  kvm: Kvm;
  vdcm: Vdcm;
  trace?: TraceBus;
  allocHostRid(): number;
  freeHostRid(rid: number): void;
  pageRequestTimeoutMs: number;
  maxPendingPageRequests: number;
  /** Memory files mapped by the host's VMs (one VM per file). */
  memoryFileOwners: MemoryFileOwners;
  /** How guest RAM passed as descriptors is reached (default 'pread'). */
  memoryAccess?: MemoryAccess;
  /** `--allow-memory-paths DIR`: the directory socket peers may name in the path form (else none). */
  memoryPaths?: MemoryPathDir;
  /** Host-wide PASID numbering across a restart (host/vfio/container-state.ts ContainerEnv). */
  pasidNumbering?: PasidNumbering;
}

/** A fresh session token: 16 random bytes, never all zero. */
export function newToken(): Uint8Array {
  for (;;) {
    const t = randomBytes(16);
    if (t.some((b) => b !== 0)) return new Uint8Array(t);
  }
}

export function tokenHex(t: Uint8Array): string {
  return Buffer.from(t.buffer, t.byteOffset, t.byteLength).toString('hex');
}

export class Vm {
  readonly token = newToken();
  readonly set: IoasidSet;
  readonly kvm: KvmVm;
  readonly vdcm: VdcmVm;
  readonly mem: MemTableMap;
  readonly container: VfioContainer;
  readonly pageRequests: PageRequestTracker;
  /** The snapshot's PASID table, updated row by row as the VM's PASIDs change. */
  readonly pasidRows: PasidRows;
  session: Session | null = null;
  /** The VM's uAPI; its iommufd context when that is 'iommufd' (useIommufd). */
  uapi: Uapi = 'vfio-sva';
  iommufd: IommufdContext | null = null;
  /** Grace-period timer while disconnected. */
  graceTimer: NodeJS.Timeout | null = null;
  disconnectedAt: number | null = null;
  tornDown = false;
  /**
   * Bumped by every request that can change the VM's devices (handlers.ts lists the ones that
   * cannot); the snapshot's device list is rebuilt only when it moved. PASID rows have their
   * own change tracking (pasidRows).
   */
  generation = 0;
  private cached: { generation: number; devices: VmSnapshot['devices'] } | null = null;

  constructor(
    readonly id: number,
    readonly name: string,
    quota: number,
    readonly viommu: ViommuKind,
    private readonly deps: VmDeps,
  ) {
    const core = deps.core;
    this.set = core.setAlloc({ quota, name });
    const undo: (() => void)[] = [];
    try {
      core.setGet(this.set);
      undo.push(() => core.setPut(this.set));
      this.kvm = deps.kvm.createVm(this.set, name);
      undo.push(() => deps.kvm.destroyVm(this.kvm));
      this.vdcm = deps.vdcm.createVm(this.set, name);
      this.vdcm.onChange = () => this.generation++;
      undo.push(() => deps.vdcm.destroyVm(this.vdcm));
      const paths = { peer: () => peerOf(this.session), ...(deps.memoryPaths !== undefined ? { dir: deps.memoryPaths } : {}) };
      this.mem = new MemTableMap(deps.memory, name, deps.memoryFileOwners, paths, deps.memoryAccess ?? 'pread');
      this.pageRequests = new PageRequestTracker(deps.maxPendingPageRequests, deps.pageRequestTimeoutMs);
      this.container = new VfioContainer({
        vmName: name,
        core,
        set: this.set,
        iommu: deps.iommu,
        mem: this.mem,
        vdcm: this.vdcm,
        trace: deps.trace,
        allocHostRid: deps.allocHostRid,
        freeHostRid: deps.freeHostRid,
        ...(deps.pasidNumbering !== undefined ? { pasidNumbering: deps.pasidNumbering } : {}),
        channel: {
          pageRequests: this.pageRequests,
          sendFault: (msg) => {
            const s = this.session;
            if (s === null || !s.backendAttached) return;
            s.send('FAULT', msg).catch((e: unknown) => log.debug({ vm: name, err: String(e) }, 'FAULT not delivered'));
          },
          sendPageRequest: (msg) => {
            const s = this.session;
            if (s === null) return Promise.reject(new VsvaError('ENOTCONN', `${name} is disconnected`));
            return s.send('PAGE_REQUEST', msg);
          },
        },
      });
    } catch (e) {
      for (const u of undo.reverse()) u();
      throw e;
    }
    // An iommufd VM's global PASIDs are bound by its device attachments (docs/protocol.md §13);
    // a REPLACE moves one without a core call: the tracker names those rows.
    const moved = new GlobalPasidTracker();
    this.pasidRows = new PasidRows(core, this.set, (id) => (this.iommufd === null ? this.container.bindingsOf(id) : [...this.container.bindingsOf(id), ...globalPasidBindings(this.iommufd.objects, id)]), {
      changedIds: () => (this.iommufd === null ? [] : moved.changed(this.iommufd.objects, this.generation)),
    });
  }

  /** VM_SETUP chose iommufd: create the VM's iommufd context (a new VM only). */
  useIommufd(): IommufdContext {
    if (this.iommufd === null) {
      this.iommufd = new IommufdContext({
        vmName: this.name,
        counters: this.container.counters,
        iommu: this.deps.iommu,
        core: this.deps.core,
        set: this.set,
        gpaToHpa: (gpa, size) => this.mem.gpaToHpa(gpa, size),
        allocHostRid: this.deps.allocHostRid,
        freeHostRid: this.deps.freeHostRid,
        dma: {
          vdcm: this.vdcm,
          trace: this.deps.trace,
          sendFault: (msg) => {
            const s = this.session;
            if (s === null || !s.backendAttached) return;
            s.send('FAULT', msg).catch((e: unknown) => log.debug({ vm: this.name, err: String(e) }, 'FAULT not delivered'));
          },
          pageRequestTimeoutMs: this.deps.pageRequestTimeoutMs,
          maxPendingPageRequests: this.deps.maxPendingPageRequests,
          sendFaultRecords: (faultId, records) => {
            const s = this.session;
            if (s === null || !s.backendAttached) return false;
            for (const r of records) {
              s.send('IOMMUFD_FAULT', { fault_id: faultId, ...r }).catch((e: unknown) => log.debug({ vm: this.name, err: String(e) }, 'IOMMUFD_FAULT not delivered'));
            }
            return true;
          },
        },
      });
      this.uapi = 'iommufd';
    }
    return this.iommufd;
  }

  /** DEVICE_DMA: by a device bound to the VM's iommufd context, else by a container device. */
  deviceDma(r: DeviceDmaRequest, into?: Uint8Array): DeviceDmaReply | Promise<DeviceDmaReply> {
    const dma = this.iommufd?.dma;
    return dma?.has(r.rid) === true ? dma.deviceDma(r, into) : this.container.deviceDma(r, into);
  }

  /** DEVICE_CONFIG: as deviceDma. */
  deviceConfig(r: DeviceConfigRequest): void {
    const dma = this.iommufd?.dma;
    if (dma?.has(r.rid) === true) dma.deviceConfig(r);
    else this.container.deviceConfig(r);
  }

  get connected(): boolean {
    return this.session !== null && !this.session.closed;
  }

  get counters(): ContainerCounters {
    return this.container.counters;
  }

  /** The connection ended: outstanding page requests fail; state is kept. */
  detachSession(): void {
    this.session = null;
    this.disconnectedAt = Date.now();
    this.pageRequests.cancelAll();
    this.iommufd?.dma?.pageRequests.cancelAll();
  }

  attachSession(s: Session): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.session = s;
    this.disconnectedAt = null;
  }

  /**
   * Release everything the VM held (docs/design.md §4) at once: page requests, bindings and
   * attachments (with their references and UNBIND notifications), devices, mappings, domains,
   * KVM and VDCM references, then every PASID (free_all_in_set) and the set itself, then the
   * memory table. Finishes a `release()` in progress. Idempotent.
   */
  teardown(): void {
    const steps = this.releaseSteps();
    while (!steps.next().done);
  }

  /**
   * `teardown()` in bounded steps (at most RELEASE_STEP_ROUTES routes, RELEASE_STEP_IDS PASIDs,
   * one device or one domain each; route and PASID steps also end once they ran
   * SLICE_BUDGET_MS), yielding to the event loop (setImmediate) between them so that other
   * VMs' requests are served meanwhile (docs/protocol.md "Disconnect"). From the
   * first step the VM is `tornDown`: its requests are refused and its session is closed.
   * Resolves when everything is released; rejects if a step threw (the rest is not released).
   */
  release(): Promise<void> {
    this.releasing ??= (async () => {
      const steps = this.releaseSteps();
      const stats = this.releaseStats;
      const start = performance.now();
      for (;;) {
        const t = performance.now();
        const done = steps.next().done === true;
        stats.steps++;
        stats.longestStepMs = Math.max(stats.longestStepMs, performance.now() - t);
        if (done) break;
        await nextSlice();
      }
      stats.ms = performance.now() - start;
    })();
    return this.releasing;
  }

  /** How `release()` went: steps run, the longest one and the whole release (ms; for logs and benches). */
  readonly releaseStats = { steps: 0, longestStepMs: 0, ms: 0 };

  /** True once every step of the release ran. */
  get released(): boolean {
    return this.releaseDone;
  }

  private releaseGen: Generator<unknown, void, void> | null = null;
  private releasing: Promise<void> | null = null;
  private releaseDone = false;

  private releaseSteps(): Generator<unknown, void, void> {
    this.releaseGen ??= this.releaseStepsGen();
    return this.releaseGen;
  }

  private *releaseStepsGen(): Generator<unknown, void, void> {
    this.tornDown = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    const session = this.session;
    this.session = null;
    session?.close();
    this.pageRequests.cancelAll();
    // The connection's own teardown (its close handlers, the backend channel) is a turn of its
    // own: the container's first slice follows in the next.
    yield;
    const core = this.deps.core;
    this.iommufd?.close();
    yield* this.container.releaseSteps();
    yield; // the last domain's step (the GPA domain with the guest's RAM) ends here
    this.deps.vdcm.destroyVm(this.vdcm);
    this.deps.kvm.destroyVm(this.kvm);
    if (core.isSetValid(this.set)) {
      const r = yield* this.freeAllSteps();
      if (r.pending > 0) log.warn({ vm: this.name, pending: r.pending }, 'PASIDs still referenced after teardown');
      if (core.isSetValid(this.set)) core.setPut(this.set);
      yield; // unmapping the guest's RAM (the memory table) is a turn of its own
    }
    this.mem.clear();
    this.releaseDone = true;
  }

  /**
   * free_all_in_set of the VM's set in release steps of at most RELEASE_STEP_IDS PASIDs, each
   * ending early once it ran SLICE_BUDGET_MS (checked every RELEASE_CHUNK_IDS PASIDs).
   */
  private *freeAllSteps(): Generator<unknown, FreeAllResult, void> {
    const ids = this.deps.core.freeAllInSetSteps(this.set, RELEASE_CHUNK_IDS);
    const step = sliceTimer();
    let n = 0;
    for (;;) {
      const r = ids.next();
      if (r.done === true) return r.value;
      n += RELEASE_CHUNK_IDS;
      if (n >= RELEASE_STEP_IDS || step.spent()) {
        n = 0;
        yield;
        step.restart();
      }
    }
  }

  /**
   * The VM's part of the host snapshot. `rows: false` leaves `pasids` and `kvm` empty for a
   * caller that takes them from `pasidRows` as JSON text (GET_STATE), so no row array is copied.
   * `extras: false` gives the fields of the contract only (docs/design.md §7: what the dashboard
   * shows), without the KVM table, domains, device state and counters that cost O(their size).
   */
  snapshot(opts: { rows?: boolean; extras?: boolean } = {}): VmSnapshot & Record<string, unknown> {
    const rows = opts.rows !== false;
    const core = this.deps.core;
    const valid = core.isSetValid(this.set);
    const info = valid ? core.setInfo(this.set) : null;
    let c = this.cached;
    if (c === null || c.generation !== this.generation) {
      const devices: VmSnapshot['devices'] = this.container.listDevices().map((d) => ({ bdf: d.bdf, kind: d.kind }));
      // Devices bound through iommufd (always physical functions here).
      for (const d of this.iommufd?.snapshot().devices ?? []) devices.push({ bdf: d.bdf, kind: 'pf' });
      c = { generation: this.generation, devices };
      this.cached = c;
    }
    const contract: VmSnapshot & Record<string, unknown> = {
      name: this.name,
      connected: this.connected,
      set: { quota: info?.quota ?? 0, used: info?.used ?? 0 },
      devices: c.devices.slice(),
      pasids: rows ? this.pasidRows.rows() : [],
      uapi: this.uapi,
      ...(this.iommufd === null ? {} : { iommufd: this.iommufd.snapshot() }),
    };
    if (opts.extras === false) return contract;
    return {
      ...contract,
      // Extras (not part of the contract of docs/design.md §7).
      id: this.id,
      viommu: this.viommu,
      stats: { ...this.container.counters },
      memory: { regions: this.mem.list.length, bytes: this.mem.totalBytes },
      domains: this.container.listDomains(),
      deviceState: this.container.listDevices(),
      kvm: rows ? this.pasidRows.derived('kvm', () => this.kvm.entries()).slice() : [],
      adis: this.vdcm.list(),
      pendingPageRequests: this.pageRequests.size,
      // Present only while the VM is being released (docs/protocol.md "Disconnect").
      ...(this.tornDown ? { releasing: true } : {}),
      disconnectedForMs: this.disconnectedAt === null ? null : Date.now() - this.disconnectedAt,
    };
  }
}
