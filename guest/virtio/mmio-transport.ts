/**
 * The virtio-mmio version 2 transport (virtio 1.x §4.2): the register window, feature
 * negotiation, device status, queue configuration and notification, interrupt status, and the
 * config space at 0x100 — for one device (the virtio-iommu, guest/virtio/iommu-device.ts).
 *
 * Contract with the device: the transport calls `notify(queue)` for a QueueNotify while the
 * device is live (DRIVER_OK set, DEVICE_NEEDS_RESET clear), `reset()` when the driver writes 0
 * to Status, and `configRead/configWrite` for the config space. The device reports a malformed
 * ring with `needsReset(reason)`: DEVICE_NEEDS_RESET is set, a configuration-change interrupt
 * raised, and no queue is processed until the driver resets the device (§2.1.2).
 *
 * Control registers are 32 bits wide. An 8-byte access to them is treated as two 32-bit
 * accesses (low word first) — the spec leaves it undefined; config space takes 4- and 8-byte
 * accesses at any offset inside it.
 */
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import type { GuestRam } from '../memory/guest-ram.js';
import {
  VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VENDOR_VSVA, VIRTIO_MMIO_VERSION, VirtioInterrupt, VirtioMmio, VirtioStatus, VirtioTransportFeature,
} from './mmio-regs.js';
import { SplitVirtqueue, checkLayout } from './virtqueue.js';

export interface VirtioDevice {
  readonly deviceId: number;
  /** Feature bits offered (device and transport bits). */
  readonly offeredFeatures: bigint;
  readonly numQueues: number;
  readonly queueNumMax: number;
  readonly configSize: number;
  configRead(offset: number, size: 4 | 8): bigint;
  configWrite(offset: number, size: 4 | 8, value: bigint): void | Promise<void>;
  /** The driver notified queue `index` (only while the device is live). */
  notify(index: number): void | Promise<void>;
  /** The driver wrote DRIVER_OK. */
  driverOk(): void | Promise<void>;
  /** The driver wrote 0 to Status: forget everything the driver set up. */
  reset(): void | Promise<void>;
}

interface QueueState {
  num: number;
  desc: bigint;
  driver: bigint;
  device: bigint;
  ready: boolean;
  vq: SplitVirtqueue | null;
}

const REG_NAMES: Record<number, string> = Object.fromEntries(Object.entries(VirtioMmio).map(([k, v]) => [v, k]));

export class VirtioMmioTransport {
  status = 0;
  interruptStatus = 0;
  configGeneration = 0;
  driverFeatures = 0n;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  private queues: QueueState[] = [];
  /** Why the device asked for a reset, when it did. */
  resetReason: string | null = null;
  private device!: VirtioDevice;

  constructor(
    private readonly ram: GuestRam,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  attach(device: VirtioDevice): void {
    this.device = device;
    this.queues = Array.from({ length: device.numQueues }, () => freshQueue(device.queueNumMax));
  }

  /** DRIVER_OK and not DEVICE_NEEDS_RESET: queues may be processed. */
  get live(): boolean {
    return (this.status & VirtioStatus.DRIVER_OK) !== 0 && (this.status & VirtioStatus.DEVICE_NEEDS_RESET) === 0;
  }

  /** Negotiated feature bit (after FEATURES_OK). */
  has(bit: bigint): boolean {
    return (this.status & VirtioStatus.FEATURES_OK) !== 0 && ((this.driverFeatures >> bit) & 1n) === 1n;
  }

  /** A ready queue, while the device is live. */
  queue(index: number): SplitVirtqueue | null {
    if (!this.live) return null;
    return this.queues[index]?.vq ?? null;
  }

  raiseUsed(): void {
    this.interruptStatus |= VirtioInterrupt.VRING;
  }

  /** The device found the driver's structures malformed: stop and ask for a reset. */
  needsReset(reason: string): void {
    if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    this.resetReason = reason;
    this.status |= VirtioStatus.DEVICE_NEEDS_RESET;
    this.interruptStatus |= VirtioInterrupt.CONFIG;
    this.log.warn({ reason }, 'virtio-iommu: DEVICE_NEEDS_RESET');
    this.trace.emit({ kind: 'descriptor', side: 'guest', vm: this.vm, name: 'virtio DEVICE_NEEDS_RESET', args: { reason } });
  }

  /** The device changed its config space. */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    this.interruptStatus |= VirtioInterrupt.CONFIG;
  }

  async read(offset: number, size: 4 | 8): Promise<bigint> {
    let v: bigint;
    if (offset >= VirtioMmio.CONFIG) {
      const off = offset - VirtioMmio.CONFIG;
      v = off + size <= this.device.configSize ? this.device.configRead(off, size) : 0n;
    } else if (size === 8) {
      v = BigInt(this.readReg(offset)) | (BigInt(this.readReg(offset + 4)) << 32n);
    } else {
      v = BigInt(this.readReg(offset));
    }
    this.traceAccess('read', offset, size, v);
    return v;
  }

  async write(offset: number, size: 4 | 8, value: bigint): Promise<void> {
    this.traceAccess('write', offset, size, value);
    if (offset >= VirtioMmio.CONFIG) {
      const off = offset - VirtioMmio.CONFIG;
      if (off + size <= this.device.configSize) await this.device.configWrite(off, size, value);
      return;
    }
    if (size === 8) {
      await this.writeReg(offset, Number(value & 0xffff_ffffn));
      await this.writeReg(offset + 4, Number(value >> 32n));
      return;
    }
    await this.writeReg(offset, Number(value));
  }

  private readReg(offset: number): number {
    const q = this.queues[this.queueSel];
    switch (offset) {
      case VirtioMmio.MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
      case VirtioMmio.VERSION: return VIRTIO_MMIO_VERSION;
      case VirtioMmio.DEVICE_ID: return this.device.deviceId;
      case VirtioMmio.VENDOR_ID: return VIRTIO_MMIO_VENDOR_VSVA;
      case VirtioMmio.DEVICE_FEATURES:
        return this.deviceFeaturesSel < 2 ? Number((this.device.offeredFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffff_ffffn) : 0;
      case VirtioMmio.QUEUE_NUM_MAX: return q ? this.device.queueNumMax : 0;
      case VirtioMmio.QUEUE_NUM: return q ? q.num : 0;
      case VirtioMmio.QUEUE_READY: return q?.ready ? 1 : 0;
      case VirtioMmio.QUEUE_DESC_LOW: return q ? lo(q.desc) : 0;
      case VirtioMmio.QUEUE_DESC_HIGH: return q ? hi(q.desc) : 0;
      case VirtioMmio.QUEUE_DRIVER_LOW: return q ? lo(q.driver) : 0;
      case VirtioMmio.QUEUE_DRIVER_HIGH: return q ? hi(q.driver) : 0;
      case VirtioMmio.QUEUE_DEVICE_LOW: return q ? lo(q.device) : 0;
      case VirtioMmio.QUEUE_DEVICE_HIGH: return q ? hi(q.device) : 0;
      case VirtioMmio.INTERRUPT_STATUS: return this.interruptStatus;
      case VirtioMmio.STATUS: return this.status;
      // No shared memory regions: a length of all ones means "does not exist" (§4.2.2).
      case VirtioMmio.SHM_LEN_LOW:
      case VirtioMmio.SHM_LEN_HIGH:
      case VirtioMmio.SHM_BASE_LOW:
      case VirtioMmio.SHM_BASE_HIGH:
        return 0xffff_ffff;
      case VirtioMmio.CONFIG_GENERATION: return this.configGeneration;
      default: return 0;
    }
  }

  private async writeReg(offset: number, v: number): Promise<void> {
    v >>>= 0;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case VirtioMmio.DEVICE_FEATURES_SEL: this.deviceFeaturesSel = v; return;
      case VirtioMmio.DRIVER_FEATURES_SEL: this.driverFeaturesSel = v; return;
      case VirtioMmio.DRIVER_FEATURES: {
        // Features are fixed once FEATURES_OK was written (§3.1.1).
        if (this.status & VirtioStatus.FEATURES_OK || this.driverFeaturesSel > 1) return;
        const shift = BigInt(32 * this.driverFeaturesSel);
        this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(v) << shift);
        return;
      }
      case VirtioMmio.QUEUE_SEL: this.queueSel = v; return;
      case VirtioMmio.QUEUE_NUM: if (q && !q.ready) q.num = v; return;
      case VirtioMmio.QUEUE_DESC_LOW: if (q && !q.ready) q.desc = setLo(q.desc, v); return;
      case VirtioMmio.QUEUE_DESC_HIGH: if (q && !q.ready) q.desc = setHi(q.desc, v); return;
      case VirtioMmio.QUEUE_DRIVER_LOW: if (q && !q.ready) q.driver = setLo(q.driver, v); return;
      case VirtioMmio.QUEUE_DRIVER_HIGH: if (q && !q.ready) q.driver = setHi(q.driver, v); return;
      case VirtioMmio.QUEUE_DEVICE_LOW: if (q && !q.ready) q.device = setLo(q.device, v); return;
      case VirtioMmio.QUEUE_DEVICE_HIGH: if (q && !q.ready) q.device = setHi(q.device, v); return;
      case VirtioMmio.QUEUE_READY: if (q) this.setQueueReady(this.queueSel, q, (v & 1) === 1); return;
      case VirtioMmio.QUEUE_NOTIFY:
        if (this.live && v < this.queues.length && this.queues[v]!.vq) await this.device.notify(v);
        return;
      case VirtioMmio.INTERRUPT_ACK: this.interruptStatus &= ~v; return;
      case VirtioMmio.STATUS: await this.writeStatus(v & 0xff); return;
      default: return;
    }
  }

  private setQueueReady(index: number, q: QueueState, ready: boolean): void {
    if (!ready) {
      q.ready = false;
      q.vq = null;
      return;
    }
    if (q.ready) return;
    const layout = { num: q.num, desc: safe(q.desc), driver: safe(q.driver), device: safe(q.device) };
    const err = checkLayout(layout, this.device.queueNumMax, this.ram.size);
    if (err) {
      this.needsReset(`queue ${index}: ${err}`);
      return;
    }
    q.ready = true;
    q.vq = new SplitVirtqueue(this.ram, layout, this.has(VirtioTransportFeature.INDIRECT_DESC));
  }

  private async writeStatus(v: number): Promise<void> {
    if (v === 0) {
      await this.resetDevice();
      return;
    }
    const before = this.status;
    let next = v | (before & VirtioStatus.DEVICE_NEEDS_RESET);
    if (next & VirtioStatus.FEATURES_OK && !(before & VirtioStatus.FEATURES_OK)) {
      // Accept the driver's features only if they are a subset of the offer and include VERSION_1.
      const extra = this.driverFeatures & ~this.device.offeredFeatures;
      const v1 = (this.driverFeatures >> VirtioTransportFeature.VERSION_1) & 1n;
      if (extra !== 0n || v1 !== 1n) {
        this.log.warn({ driverFeatures: `0x${this.driverFeatures.toString(16)}` }, 'virtio-iommu: driver features rejected');
        next &= ~VirtioStatus.FEATURES_OK;
      }
    }
    if (next & VirtioStatus.DRIVER_OK && !(next & VirtioStatus.FEATURES_OK)) {
      // DRIVER_OK without accepted features is a driver error (§3.1.1).
      next &= ~VirtioStatus.DRIVER_OK;
      this.needsReset('DRIVER_OK written before FEATURES_OK was accepted');
      next |= VirtioStatus.DEVICE_NEEDS_RESET;
    }
    this.status = next;
    if (next & VirtioStatus.DRIVER_OK && !(before & VirtioStatus.DRIVER_OK)) await this.device.driverOk();
  }

  private async resetDevice(): Promise<void> {
    this.status = 0;
    this.interruptStatus = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.resetReason = null;
    this.queues = this.queues.map(() => freshQueue(this.device.queueNumMax));
    await this.device.reset();
  }

  private traceAccess(dir: 'read' | 'write', offset: number, size: number, value: bigint): void {
    if (!this.trace.active) return;
    const reg = offset >= VirtioMmio.CONFIG ? `config+0x${(offset - VirtioMmio.CONFIG).toString(16)}` : (REG_NAMES[offset] ?? `0x${offset.toString(16)}`);
    this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: `virtio-mmio ${dir} ${reg}`, args: { offset, size, value: `0x${value.toString(16)}` } });
  }
}

function freshQueue(num: number): QueueState {
  return { num, desc: 0n, driver: 0n, device: 0n, ready: false, vq: null };
}
function lo(v: bigint): number {
  return Number(v & 0xffff_ffffn);
}
function hi(v: bigint): number {
  return Number(v >> 32n);
}
function setLo(v: bigint, w: number): bigint {
  return (v & ~0xffff_ffffn) | BigInt(w >>> 0);
}
function setHi(v: bigint, w: number): bigint {
  return (v & 0xffff_ffffn) | (BigInt(w >>> 0) << 32n);
}
/** Queue addresses beyond 2^53 cannot be in guest RAM; map them to a value checkLayout rejects. */
function safe(v: bigint): number {
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}
