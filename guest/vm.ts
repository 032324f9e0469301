/**
 * A virtual machine's guest half (the "QEMU" side of DESIGN §1): guest RAM in a shared file,
 * the connection to the host, the assigned devices and one vIOMMU device model.
 *
 * Bring-up mirrors a VMM with VFIO: vhost-user handshake, VM_SETUP (IOASID set quota, session
 * token), SET_MEM_TABLE (the RAM file), DEVICE_ADD per assigned device, and a DMA_MAP of all
 * guest RAM into domain 0 (the VM's GPA domain, the second level every nested bind sits on).
 */
import { randomUUID } from 'node:crypto';
import { childLogger, type Logger } from '../src/log.js';
import { fail, VsvaError } from '../src/errors.js';
import { TraceBus } from '../src/trace/bus.js';
import { parseBdf } from '../src/pci.js';
import type { DeviceSpec, DmaRequest, DmaResult, GuestHandle } from '../src/api/types.js';
import { FrontendClient } from '../vhost/roles/frontend.js';
import { DeviceCap, DeviceKind } from '../vhost/messages/device.js';
import { VmViommu } from '../vhost/messages/vm.js';
import { DeviceDmaFlag, DeviceDmaOp, DeviceDmaStatus, DEVICE_DMA_MAX_LENGTH } from '../vhost/messages/page.js';
import { DmaMapFlag } from '../vhost/messages/dma.js';
import type { Transport } from '../vhost/transport/transport.js';
import { GuestRam } from './memory/guest-ram.js';
import { SerialQueue } from './serial-queue.js';
import type { GuestContext, GuestDevice, ViommuFactory, ViommuModel } from './viommu.js';

export interface GuestVmOptions {
  /** The host's socket path (or `connect` for an in-memory transport). */
  socket?: string;
  connect?: () => Promise<Transport>;
  name?: string;
  viommu: 'vtd' | 'virtio';
  memory?: number;
  pasidQuota?: number;
  devices?: DeviceSpec[];
  /** Where guest RAM lives: a shared file (default) or an in-process buffer. */
  ramBacking?: 'file' | 'inproc';
  /** Per-request timeout towards the host, ms. */
  timeoutMs?: number;
  trace?: TraceBus;
}

export const DEFAULT_GUEST_MEMORY = 256 * 1024 * 1024;
export const DEFAULT_PASID_QUOTA = 1024;
export const DEFAULT_DEVICES: DeviceSpec[] = [{ bdf: '00:03.0', kind: 'pf' }];

/** Capabilities every assigned test device reports: 20-bit PASID, ATS, PRI, exec and priv. */
const TEST_DEVICE_CAPS = DeviceCap.PASID | DeviceCap.ATS | DeviceCap.PRI | DeviceCap.PASID_EXEC | DeviceCap.PASID_PRIV;

export class GuestVm implements GuestHandle {
  readonly name: string;
  readonly ram: GuestRam;
  readonly client: FrontendClient;
  readonly devices: GuestDevice[];
  readonly trace: TraceBus;
  readonly log: Logger;
  readonly pasidQuota: number;
  vmId = 0;
  sessionToken: Uint8Array = new Uint8Array(16);
  private model!: ViommuModel;
  private readonly queue = new SerialQueue();
  private closed = false;

  private constructor(name: string, ram: GuestRam, client: FrontendClient, devices: GuestDevice[], pasidQuota: number, trace: TraceBus) {
    this.name = name;
    this.ram = ram;
    this.client = client;
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

    const ram = GuestRam.create(memory, { backing: opts.ramBacking ?? 'file' });
    let client: FrontendClient | undefined;
    try {
      client = await FrontendClient.connect({ path: opts.socket, connect: opts.connect, timeoutMs: opts.timeoutMs });
      const vm = new GuestVm(name, ram, client, devices, quota, opts.trace ?? new TraceBus());
      await vm.bringUp(opts.viommu);
      vm.model = await factory(vm.context());
      client.onBackendMessage((ev) => vm.queue.run(() => vm.model.onBackendMessage(ev)));
      vm.trace.emit({ kind: 'vm', side: 'guest', vm: name, name: 'VM up', args: { viommu: opts.viommu, memory, devices: devices.length } });
      return vm;
    } catch (e) {
      client?.close();
      ram.close();
      throw e;
    }
  }

  private async bringUp(viommu: 'vtd' | 'virtio'): Promise<void> {
    const c = this.client;
    await c.handshake();
    const setup = await c.setupVm({
      name: this.name,
      pasid_quota: this.pasidQuota,
      flags: viommu === 'vtd' ? VmViommu.VTD : VmViommu.VIRTIO,
      session_token: new Uint8Array(16),
    });
    this.vmId = setup.vm_id;
    this.sessionToken = setup.session_token;
    await c.call('SET_MEM_TABLE', {
      regions: [{ guest_phys_addr: 0n, memory_size: BigInt(this.ram.size), userspace_addr: 0n, mmap_offset: 0n, path: this.ram.path }],
    });
    for (const d of this.devices) {
      await c.call('DEVICE_ADD', { rid: d.rid, kind: d.kind === 'adi' ? DeviceKind.ADI : DeviceKind.PF, pasid_width: d.pasidWidth, caps: d.caps });
    }
    await c.call('DMA_MAP', { domain: 0, flags: DmaMapFlag.READ | DmaMapFlag.WRITE, iova: 0n, gpa: 0n, size: BigInt(this.ram.size) });
  }

  context(): GuestContext {
    return { name: this.name, ram: this.ram, client: this.client, devices: this.devices, log: this.log, trace: this.trace, pasidQuota: this.pasidQuota };
  }

  get viommu(): ViommuModel {
    return this.model;
  }

  device(bdf: string): GuestDevice {
    const rid = parseBdf(bdf);
    const d = this.devices.find((x) => x.rid === rid);
    if (!d) fail('ENODEV', `VM '${this.name}' has no device at ${bdf}`);
    return d;
  }

  // --- register window (qtest names) ---------------------------------------------------------

  readl(offset: number): Promise<number> {
    checkOffset(offset, 4);
    return this.queue.run(async () => Number((await this.model.mmioRead(offset, 4)) & 0xffff_ffffn));
  }
  readq(offset: number): Promise<bigint> {
    checkOffset(offset, 8);
    return this.queue.run(async () => BigInt.asUintN(64, await this.model.mmioRead(offset, 8)));
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
    const pasid = hasPasid ? (this.model.devicePasid?.(dev.rid, req.pasid!) ?? req.pasid!) : 0;
    let flags = hasPasid ? DeviceDmaFlag.PASID_VALID : 0;
    if (req.privileged) flags |= DeviceDmaFlag.PRIV;
    if (req.execute) flags |= DeviceDmaFlag.EXEC;
    const reply = await this.client.call('DEVICE_DMA', {
      rid: dev.rid,
      op: write ? DeviceDmaOp.WRITE : DeviceDmaOp.READ,
      flags,
      pasid,
      addr: BigInt.asUintN(64, req.addr),
      length,
      data: req.data,
    });
    if (reply.status === DeviceDmaStatus.OK) return write ? { ok: true } : { ok: true, data: reply.data ?? new Uint8Array(0) };
    const reason = this.model.dmaFaultReason?.(dev.rid, req.pasid, reply.reason) ?? reply.reason;
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
      this.client.close();
      this.ram.close();
    }
  }
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
