/**
 * A virtual machine's guest half (the "QEMU" side of docs/design.md §1): guest RAM in shared
 * memory (docs/architecture.md "Memory model"), the connection to the host, the assigned devices
 * and one vIOMMU device model.
 *
 * Bring-up mirrors a VMM with VFIO: vhost-user handshake, VM_SETUP (IOASID set quota, session
 * token), SET_MEM_TABLE (RAM's memfd as a descriptor, or the RAM file's path, plus the DMA
 * staging area with mapped RAM), DEVICE_ADD per assigned device, and a DMA_MAP of all
 * guest RAM into domain 0 (the VM's GPA domain, the second level every nested bind sits on).
 * That is the VFIO SVA uAPI; a VM of the iommufd uAPI (`uapi: 'iommufd'`: VSVA_IOMMUFD
 * negotiated, UAPI_IOMMUFD at VM_SETUP) brings up an IOAS with guest RAM, DEVICE_BIND per device
 * and a nest-parent HWPT instead (guest/uapi/iommufd.ts, docs/protocol.md §13.12).
 *
 * Reconnect (guest/reconnect.ts, docs/reliability.md): the VM talks to the host through a
 * HostLink. When the connection is lost the link reconnects with backoff and calls
 * `establish`: VM_SETUP with the session token resumes the VM (the host kept its state for the
 * grace period; the VM then reconciles what requests in flight may have left behind); when the
 * host no longer has the VM — a restarted host that kept its name for the token sets it up
 * afresh on that VM_SETUP (docs/reliability.md §2.4), else ENOENT and a fresh VM_SETUP — the VM
 * re-announces memory, devices and domain 0, and the vIOMMU model replays its shadows.
 */
import { randomUUID } from 'node:crypto';
import { childLogger, type Logger } from '../src/log.js';
import { fail, isVsvaError, VsvaError } from '../src/errors.js';
import { TraceBus } from '../src/trace/bus.js';
import { parseBdf } from '../src/pci.js';
import type { DeviceSpec, DmaRequest, DmaResult, GuestHandle, IommufdObjectsSnapshot } from '../src/api/types.js';
import { FrontendClient } from '../vhost/roles/frontend.js';
import { DeviceCap } from '../vhost/messages/device.js';
import { VM_SETUP_REPLY_RESUMED, VM_SETUP_UAPI_IOMMUFD, VmViommu } from '../vhost/messages/vm.js';
import { ProtocolFeature } from '../vhost/wire/features.js';
import { DEFAULT_PROTOCOL_FEATURES } from '../vhost/roles/frontend.js';
import { DeviceDmaFlag, DeviceDmaOp, DeviceDmaStatus, DEVICE_DMA_MAX_LENGTH, type DeviceDmaReply } from '../vhost/messages/device-dma.js';
import type { Transport } from '../vhost/transport/transport.js';
import { GuestRam } from './memory/guest-ram.js';
import { DMA_STAGING_BYTES, DMA_STAGING_GPA, DmaStaging } from './memory/dma-staging.js';
import { resolveMemoryBackend, type MemoryBackend } from '../src/memory/memory-backend.js';
import type { MemTable } from '../vhost/messages/handshake.js';
import { SerialQueue } from './serial-queue.js';
import { DmaFaultSync } from './dma-fault-sync.js';
import { HostLink, type ReconnectPolicy } from './reconnect.js';
import type { GuestContext, GuestDevice, HostCalls, ReplayReport, ViommuFactory, ViommuModel } from './viommu.js';
import { createHostUapi, type HostUapi, type UapiKind } from './uapi/index.js';

export interface GuestVmOptions {
  /** The host's socket path (or `connect` for an in-memory transport). */
  socket?: string;
  connect?: () => Promise<Transport>;
  name?: string;
  viommu: 'vtd' | 'virtio';
  memory?: number;
  pasidQuota?: number;
  devices?: DeviceSpec[];
  /**
   * Where guest RAM lives: shared memory (default: a memfd when the connection passes
   * descriptors, else a file under the memory directory), explicitly a file, or an in-process
   * buffer.
   */
  ramBacking?: 'file' | 'inproc';
  /**
   * Create guest RAM as a file in this directory (a memory filesystem such as /dev/shm)
   * instead of a memfd. It is passed as a descriptor when the connection
   * carries them, else by path (the host must allow DIR: `vsva host --allow-memory-paths`). Its
   * name is removed as soon as both halves hold it. Default for file RAM: $VSVA_MEM_DIR, else
   * /dev/shm, else the OS temp dir.
   */
  memoryPath?: string;
  /** Map guest RAM (default when the native addon loaded) or use positioned I/O. */
  memoryBackend?: MemoryBackend;
  /** Per-request timeout towards the host, ms. */
  timeoutMs?: number;
  trace?: TraceBus;
  /** Reconnect after a lost connection (default: on, DEFAULT_RECONNECT_POLICY). */
  reconnect?: ReconnectPolicy;
  /** The host uAPI the VM uses (docs/protocol.md §13.12), default 'vfio-sva'. */
  uapi?: UapiKind;
}

/** What the VM did at its last reconnect. */
export interface ReconnectRecord {
  /** The host resumed the session (true) or the VM was set up afresh and replayed (false). */
  resumed: boolean;
  /** Fresh set-up: what the model replayed. */
  replay: ReplayReport | null;
  /** Resume: host PASIDs and domains (iommufd: IOAS / HWPT IDs) the VM did not know of, freed by the reconciliation. */
  reconciled: { pasids: number[]; domains: number[] } | null;
}

export const DEFAULT_GUEST_MEMORY = 256 * 1024 * 1024;
export const DEFAULT_PASID_QUOTA = 1024;
export const DEFAULT_DEVICES: DeviceSpec[] = [{ bdf: '00:03.0', kind: 'pf' }];

/** Capabilities every assigned test device reports: 20-bit PASID, ATS, PRI, exec and priv. */
const TEST_DEVICE_CAPS = DeviceCap.PASID | DeviceCap.ATS | DeviceCap.PRI | DeviceCap.PASID_EXEC | DeviceCap.PASID_PRIV;

export class GuestVm implements GuestHandle {
  readonly name: string;
  readonly ram: GuestRam;
  readonly link: HostLink;
  readonly devices: GuestDevice[];
  readonly trace: TraceBus;
  readonly log: Logger;
  readonly pasidQuota: number;
  vmId = 0;
  sessionToken: Uint8Array = new Uint8Array(16);
  /** The last reconnect's outcome (null before any). */
  lastReconnect: ReconnectRecord | null = null;
  private model!: ViommuModel;
  /** The host uAPI the model's requests go through (guest/uapi/). */
  readonly uapi: HostUapi;
  private readonly queue = new SerialQueue();
  /** A faulted dma() resolves once the model has processed its FAULT (guest/dma-fault-sync.ts). */
  private readonly faultSync = new DmaFaultSync();
  /** device() by the address string the caller used. */
  private readonly deviceByBdf = new Map<string, GuestDevice>();
  private closed = false;
  private readonly viommuKind: 'vtd' | 'virtio';
  /** SET_MEM_TABLE passes RAM's descriptor (fd form) rather than its path. */
  private readonly ramFdForm: boolean;
  /** DEVICE_DMA data goes through shared memory when this exists (mapped RAM). */
  private readonly staging: DmaStaging | undefined;

  private constructor(name: string, ram: GuestRam, client: FrontendClient, devices: GuestDevice[], pasidQuota: number, trace: TraceBus, opts: GuestVmOptions) {
    this.name = name;
    this.ram = ram;
    this.ramFdForm = ram.fd !== undefined && client.conn.transport.carriesFds === true;
    // The fd form never needs the file's name: the host gets the descriptor.
    if (this.ramFdForm) ram.releaseName();
    this.staging = ram.staging !== undefined ? new DmaStaging(ram.staging) : undefined;
    this.viommuKind = opts.viommu;
    this.link = new HostLink(client, {
      connect: () => FrontendClient.connect({ path: opts.socket, connect: opts.connect, timeoutMs: opts.timeoutMs }),
      establish: (c) => this.establish(c),
      log: childLogger('guest-link', { vm: name }),
      ...(opts.reconnect ? { policy: opts.reconnect } : {}),
    });
    this.uapi = createHostUapi(opts.uapi ?? 'vfio-sva', this.link);
    this.devices = devices;
    this.pasidQuota = pasidQuota;
    this.trace = trace;
    this.log = childLogger('guest', { vm: name });
  }

  /** Create RAM, connect, bring the VM up on the host and build its vIOMMU model. */
  static async start(opts: GuestVmOptions, factory: ViommuFactory): Promise<GuestVm> {
    const name = opts.name ?? `vm-${randomUUID().slice(0, 8)}`;
    const memory = opts.memory ?? DEFAULT_GUEST_MEMORY;
    const quota = opts.pasidQuota ?? DEFAULT_PASID_QUOTA;
    const devices = (opts.devices ?? DEFAULT_DEVICES).map((d): GuestDevice => ({
      bdf: d.bdf,
      rid: parseBdf(d.bdf),
      kind: d.kind ?? 'pf',
      caps: TEST_DEVICE_CAPS,
      pasidWidth: 20,
    }));
    const rids = new Set(devices.map((d) => d.rid));
    if (rids.size !== devices.length) fail('EINVAL', 'two devices share one PCI address');

    const backend = opts.ramBacking === 'inproc' ? 'pread' : resolveMemoryBackend(opts.memoryBackend);
    const client = await FrontendClient.connect({ path: opts.socket, connect: opts.connect, timeoutMs: opts.timeoutMs });
    let ram: GuestRam;
    try {
      ram = createRam(memory, opts.ramBacking, backend, client.conn.transport.carriesFds === true, opts.memoryPath);
    } catch (e) {
      client.close();
      throw e;
    }
    const vm = new GuestVm(name, ram, client, devices, quota, opts.trace ?? new TraceBus(), opts);
    try {
      await vm.handshake(client);
      await vm.freshSetup(client);
      vm.model = await factory(vm.context());
      client.onBackendMessage(vm.backendHandler);
      vm.trace.emit({ kind: 'vm', side: 'guest', vm: name, name: 'VM up', args: { viommu: opts.viommu, uapi: vm.uapi.kind, memory, devices: devices.length } });
      return vm;
    } catch (e) {
      vm.link.close();
      ram.close();
      throw e;
    }
  }

  /** Back-end messages go to the model, serialised with the guest's register accesses. */
  private readonly backendHandler = (ev: Parameters<ViommuModel['onBackendMessage']>[0]): Promise<void> =>
    this.queue.run(async () => {
      // iommufd's IOMMUFD_FAULT reaches the model as the PAGE_REQUEST it reports.
      const e = this.uapi.backendEvent(ev);
      await this.model.onBackendMessage(e);
      this.faultSync.processed(e);
    });

  /**
   * The memory table: RAM at GPA 0 and, with mapped RAM, the DMA staging area after it in the
   * same file at DMA_STAGING_GPA; fd form (RAM's descriptor once per region, paths empty) or
   * path form.
   */
  private memTable(): MemTable {
    const ram = this.ram;
    const path = this.ramFdForm ? '' : ram.path;
    const regions = [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path }];
    if (ram.staging !== undefined) {
      regions.push({ guest_phys_addr: DMA_STAGING_GPA, memory_size: BigInt(ram.staging.length), userspace_addr: 0n, mmap_offset: BigInt(ram.size), path });
    }
    return this.ramFdForm ? { regions, fds: regions.map(() => ram.fd!) } : { regions };
  }

  /**
   * SET_MEM_TABLE, then the devices and all of guest RAM in the GPA domain, in the VM's uAPI
   * (VFIO SVA: DEVICE_ADD per device and a DMA_MAP of domain 0; iommufd: IOAS, DEVICE_BIND,
   * GET_HW_INFO, the nest-parent HWPT — guest/uapi/).
   */
  private async announce(c: HostCalls): Promise<void> {
    // Path form: the file's name lasts only until the host opened it; a host that has not
    // (restarted, or the VM is set up afresh) gets a new name with the same bytes.
    const pathForm = !this.ramFdForm && this.ram.backing.kind === 'file';
    if (pathForm && !this.ram.named) this.ram.relink();
    try {
      await c.call('SET_MEM_TABLE', this.memTable());
    } catch (e) {
      if (pathForm && isVsvaError(e, 'EPERM')) {
        throw e.withContext(`the host takes guest RAM by path only from a directory it allows: start it with --allow-memory-paths DIR and this guest with --memory-path DIR (RAM is in ${this.ram.path})`);
      }
      throw e;
    }
    if (pathForm) this.ram.releaseName();
    await this.uapi.via(c).announce(this.devices, this.ram.size);
  }

  /** The handshake; an iommufd VM also needs the VSVA_IOMMUFD protocol feature (docs/protocol.md §13). */
  private async handshake(c: FrontendClient): Promise<void> {
    if (this.uapi.kind !== 'iommufd') {
      await c.handshake();
      return;
    }
    await c.handshake({
      want: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD,
      require: ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA | ProtocolFeature.VSVA_IOMMUFD,
    });
  }

  /**
   * Re-establish the VM on a new client (HostLink's reconnect). With the session token the host
   * resumes it; ENOENT (the host restarted, or the grace period expired) sets it up afresh and
   * replays the model. A fresh set-up interrupted before its replay finished leaves a half-built
   * VM on the host: the token is forgotten, so the next attempt waits (EEXIST) until that VM's
   * grace period releases it and then starts over.
   */
  private async establish(c: FrontendClient): Promise<void> {
    c.onBackendMessage(this.backendHandler);
    await this.handshake(c);
    const token = this.sessionToken;
    let reclaimed = false;
    if (token.some((b) => b !== 0)) {
      try {
        const setup = await c.setupVm({ name: this.name, pasid_quota: this.pasidQuota, flags: this.viommuFlags, session_token: token });
        this.vmId = setup.vm_id;
        this.sessionToken = setup.session_token;
        if ((setup.flags & VM_SETUP_REPLY_RESUMED) !== 0) {
          const reconciled = await this.reconcile(c);
          this.lastReconnect = { resumed: true, replay: null, reconciled };
          this.trace.emit({ kind: 'vm', side: 'guest', vm: this.name, name: 'VM resumed', args: { freedPasids: reconciled?.pasids.length ?? 0 } });
          return;
        }
        // A restarted host gave the VM its reserved name back for its token (docs/reliability.md
        // "Host restart"): set up afresh on this very VM_SETUP — announce, then replay.
        reclaimed = true;
      } catch (e) {
        if (!isVsvaError(e, 'ENOENT')) throw e;
        this.log.info('the host does not know this VM (restarted, or grace period over): setting it up again');
      }
    }
    try {
      if (reclaimed) await this.announce(c);
      else await this.freshSetup(c);
      const replay = (await this.model?.replay?.(c)) ?? null;
      this.lastReconnect = { resumed: false, replay, reconciled: null };
      if (replay && replay.failures.length > 0) this.log.error({ failures: replay.failures }, 'replay could not restore everything');
      this.trace.emit({ kind: 'vm', side: 'guest', vm: this.name, name: 'VM replayed', args: { pasids: replay?.pasids ?? 0, bindings: replay?.bindings ?? 0, failures: replay?.failures.length ?? 0 } });
    } catch (e) {
      this.sessionToken = new Uint8Array(16);
      throw e;
    }
  }

  /** VM_SETUP flags: the vIOMMU kind, and UAPI_IOMMUFD for an iommufd VM. */
  private get viommuFlags(): number {
    return (this.viommuKind === 'vtd' ? VmViommu.VTD : VmViommu.VIRTIO) | (this.uapi.kind === 'iommufd' ? VM_SETUP_UAPI_IOMMUFD : 0);
  }

  /** VM_SETUP with a zero token on a connection whose handshake is done, then the announcement. */
  private async freshSetup(c: FrontendClient): Promise<void> {
    const setup = await c.setupVm({
      name: this.name,
      pasid_quota: this.pasidQuota,
      flags: this.viommuFlags,
      session_token: ZERO_TOKEN,
    });
    this.vmId = setup.vm_id;
    this.sessionToken = setup.session_token;
    await this.announce(c);
  }

  /**
   * After a resume: requests in flight when the connection dropped may have taken effect on the
   * host without the model knowing (a PASID_ALLOC, a DOMAIN_ALLOC). Free the host PASIDs and
   * empty domains of this VM that the model does not hold.
   */
  private async reconcile(c: FrontendClient): Promise<{ pasids: number[]; domains: number[] } | null> {
    const known = this.model?.hostResources?.();
    if (!known) return null;
    const { json } = await c.call('GET_STATE');
    const snap = JSON.parse(json) as { vms: { name: string; pasids: { hpasid: number; state: string }[]; domains?: { id: number; rids: string[] }[]; iommufd?: IommufdObjectsSnapshot }[] };
    const me = snap.vms.find((v) => v.name === this.name);
    const out = { pasids: [] as number[], domains: [] as number[] };
    if (!me) return out;
    for (const p of me.pasids) {
      if (p.state === 'free-pending' || known.pasids.has(p.hpasid)) continue;
      try {
        await c.call('PASID_FREE', { min: p.hpasid, max: p.hpasid });
        out.pasids.push(p.hpasid);
      } catch (e) {
        this.log.warn({ err: e, pasid: p.hpasid }, 'reconcile: freeing an unknown host PASID failed');
      }
    }
    for (const d of me.domains ?? []) {
      if (d.id === 0 || known.domains.has(d.id) || d.rids.length > 0) continue;
      try {
        await c.call('DOMAIN_FREE', { domain: d.id });
        out.domains.push(d.id);
      } catch (e) {
        this.log.warn({ err: e, domain: d.id }, 'reconcile: freeing an unknown host domain failed');
      }
    }
    // iommufd: HWPTs and IOASes of an allocation whose reply was lost (nested before paging before IOAS).
    const held = this.uapi.hostObjects();
    if (held !== null && me.iommufd !== undefined) {
      const fd = me.iommufd;
      const orphans = [
        ...fd.hwpts.filter((h) => h.kind === 'nested' && !held.has(h.id)),
        ...fd.hwpts.filter((h) => h.kind === 'paging' && !h.auto && !held.has(h.id)),
        ...fd.ioas.filter((i) => !held.has(i.id)),
      ];
      for (const o of orphans) {
        try {
          await c.call('IOMMUFD_DESTROY', { id: o.id });
          out.domains.push(o.id);
        } catch (e) {
          this.log.warn({ err: e, id: o.id }, 'reconcile: destroying an unknown iommufd object failed');
        }
      }
    }
    if (out.pasids.length + out.domains.length > 0) this.log.warn(out, 'reconcile: freed host resources left by requests in flight at the drop');
    return out;
  }

  /** The client requests currently go to (it changes at each reconnect). */
  get client(): FrontendClient {
    return this.link.current;
  }

  context(): GuestContext {
    return { name: this.name, ram: this.ram, client: this.link, devices: this.devices, log: this.log, trace: this.trace, pasidQuota: this.pasidQuota, uapi: this.uapi };
  }

  get viommu(): ViommuModel {
    return this.model;
  }

  device(bdf: string): GuestDevice {
    // Every dma() names its device: the address string is parsed once (the device list is fixed).
    const known = this.deviceByBdf.get(bdf);
    if (known !== undefined) return known;
    const rid = parseBdf(bdf);
    const d = this.devices.find((x) => x.rid === rid);
    if (!d) fail('ENODEV', `VM '${this.name}' has no device at ${bdf}`);
    this.deviceByBdf.set(bdf, d);
    return d;
  }

  // --- register window (qtest names) ---------------------------------------------------------

  /*
   * The guest's vCPU and the VMM share one event loop here, so a guest that polls in a tight
   * loop must not starve the host replies it is waiting for. A register access costs no extra
   * turn of the loop (an idle serial queue runs it at once); a VCRSP read while a virtual command
   * is in flight is held until the command completes (bounded: guest/vtd/virtual-commands.ts),
   * so polling VCRSP.IP needs no yield; a guest-memory read (a wait descriptor's status) yields
   * to pending I/O first whenever a host request is in flight (memread).
   */
  readl(offset: number): Promise<number> {
    checkOffset(offset, 4);
    return this.queue.run(() => {
      const v = this.model.mmioRead(offset, 4);
      return typeof v === 'bigint' ? low32(v) : v.then(low32);
    });
  }
  readq(offset: number): Promise<bigint> {
    checkOffset(offset, 8);
    return this.queue.run(() => {
      const v = this.model.mmioRead(offset, 8);
      return typeof v === 'bigint' ? BigInt.asUintN(64, v) : v.then(u64);
    });
  }
  writel(offset: number, value: number): Promise<void> {
    checkOffset(offset, 4);
    const v = BigInt(value >>> 0);
    return this.queue.run(() => this.model.mmioWrite(offset, 4, v));
  }
  writeq(offset: number, value: bigint): Promise<void> {
    checkOffset(offset, 8);
    const v = BigInt.asUintN(64, value);
    return this.queue.run(() => this.model.mmioWrite(offset, 8, v));
  }

  // --- guest physical memory -----------------------------------------------------------------

  async memread(gpa: bigint, length: number): Promise<Uint8Array> {
    // A guest polling guest memory must let in-flight host replies land.
    if (this.client.outstanding > 0) await yieldToIo();
    return this.ram.read(toGpa(gpa), length);
  }
  async memwrite(gpa: bigint, data: Uint8Array): Promise<void> {
    this.ram.write(toGpa(gpa), data);
  }

  // --- device DMA ----------------------------------------------------------------------------

  async dma(bdf: string, req: DmaRequest): Promise<DmaResult> {
    const dev = this.device(bdf);
    const write = req.data !== undefined;
    const length = write ? req.data!.length : req.length;
    if (write && req.length !== undefined && req.length !== req.data!.length) fail('EINVAL', `dma: length ${req.length} does not match ${req.data!.length} bytes of data`);
    if (length === undefined || !Number.isSafeInteger(length) || length <= 0 || length > DEVICE_DMA_MAX_LENGTH) {
      fail('EINVAL', `dma: length must be 1..${DEVICE_DMA_MAX_LENGTH} bytes (got ${length})`);
    }
    const hasPasid = req.pasid !== undefined;
    // A pf puts on the wire the PASID the VMM programmed (devicePasid); an ADI is programmed
    // with the guest PASID and the host's VDCM translates it (find_by_spid).
    const pasid = !hasPasid ? 0 : dev.kind === 'adi' ? req.pasid! : (this.model.devicePasid?.(dev.rid, req.pasid!) ?? req.pasid!);
    let flags = hasPasid ? DeviceDmaFlag.PASID_VALID : 0;
    if (req.privileged) flags |= DeviceDmaFlag.PRIV;
    if (req.execute) flags |= DeviceDmaFlag.EXEC;
    const mark = this.faultSync.mark(dev.rid);
    const op = write ? DeviceDmaOp.WRITE : DeviceDmaOp.READ;
    const addr = BigInt.asUintN(64, req.addr);
    // With mapped RAM the data goes through the staging slot the host maps
    // (guest/memory/dma-staging.ts), not through the socket: a write's bytes are put there first,
    // a read's bytes are copied out after the reply. When the slot is busy (concurrent DMAs) or
    // RAM is not mapped, the bytes travel in the messages.
    const slot = this.staging?.acquire();
    let reply: DeviceDmaReply;
    let data: Uint8Array | undefined;
    if (slot === undefined) {
      reply = await this.link.call('DEVICE_DMA', { rid: dev.rid, op, flags, pasid, addr, length, data: req.data });
      data = reply.data;
    } else {
      try {
        if (write) slot.set(req.data!);
        reply = await this.link.call('DEVICE_DMA', { rid: dev.rid, op, flags: flags | DeviceDmaFlag.STAGED, pasid, addr, length, staging_gpa: DMA_STAGING_GPA });
        if (reply.status === DeviceDmaStatus.OK && !write) data = Uint8Array.prototype.slice.call(slot, 0, reply.staged_length ?? 0);
      } finally {
        this.staging!.release();
      }
    }
    if (reply.status === DeviceDmaStatus.OK) return write ? { ok: true } : { ok: true, data: data ?? new Uint8Array(0) };
    await this.faultSync.settle(dev.rid, mark, reply);
    const reason = this.model.dmaFaultReason?.(dev.rid, req.pasid, reply.reason, reply.fault_addr) ?? reply.reason;
    const fault: { reason: number; addr: bigint; pasid?: number } = { reason, addr: reply.fault_addr };
    if (hasPasid) fault.pasid = req.pasid!;
    return { ok: false, fault };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.queue.run(() => this.model?.close());
    } catch (e) {
      this.log.warn({ err: e }, 'vIOMMU model close failed');
    } finally {
      this.link.close();
      this.ram.close();
    }
  }
}

const ZERO_TOKEN = new Uint8Array(16);

/**
 * Guest RAM for a backend: in-process; a file with positioned I/O ('pread'); or mapped — a
 * sealed memfd when the connection passes descriptors (unless a file or a memory path `dir`
 * was asked for), else a mapped file — with the DMA staging area after it.
 */
function createRam(size: number, backing: 'file' | 'inproc' | undefined, backend: MemoryBackend, passesFds: boolean, dir: string | undefined): GuestRam {
  if (backing === 'inproc') return GuestRam.create(size, { backing: 'inproc' });
  const where = dir !== undefined ? { dir } : {};
  if (backend === 'pread') return GuestRam.create(size, { backing: 'file', ...where });
  const kind = backing === undefined && dir === undefined && passesFds ? 'memfd' : 'file';
  return GuestRam.create(size, { backing: kind, access: 'mapped', stagingBytes: DMA_STAGING_BYTES, ...where });
}

/** A register value as the guest's 32-bit read returns it. */
function low32(v: bigint): number {
  return Number(v & 0xffff_ffffn);
}

/** A register value as the guest's 64-bit read returns it. */
function u64(v: bigint): bigint {
  return BigInt.asUintN(64, v);
}

function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function checkOffset(offset: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % size !== 0) {
    throw new VsvaError('EINVAL', `register offset ${offset} is not a ${size}-byte aligned offset`);
  }
}

function toGpa(gpa: bigint): number {
  if (typeof gpa !== 'bigint' || gpa < 0n || gpa > BigInt(Number.MAX_SAFE_INTEGER)) fail('EFAULT', `guest physical address ${String(gpa)} is out of range`);
  return Number(gpa);
}
