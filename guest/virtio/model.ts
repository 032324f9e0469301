/**
 * The virtio-iommu as the VM's vIOMMU model (guest/viommu.ts): the virtio-mmio register window
 * for the guest's accesses, host backend messages to the device, and `devicePasid` for the
 * guest-private PASIDs of the PASID extension.
 */
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import type { GuestContext, HostCalls, HostResources, ReplayReport, ViommuModel } from '../viommu.js';
import { VirtioIommuDevice, type VirtioIommuOptions } from './iommu-device.js';

export class VirtioIommuModel implements ViommuModel {
  readonly kind = 'virtio' as const;
  readonly device: VirtioIommuDevice;

  private constructor(ctx: GuestContext, opts: VirtioIommuOptions) {
    this.device = new VirtioIommuDevice(ctx, opts);
  }

  static async create(ctx: GuestContext, opts: VirtioIommuOptions = {}): Promise<VirtioIommuModel> {
    const m = new VirtioIommuModel(ctx, opts);
    await m.device.init();
    return m;
  }

  mmioRead(offset: number, size: 4 | 8): Promise<bigint> {
    return this.device.transport.read(offset, size);
  }

  mmioWrite(offset: number, size: 4 | 8, value: bigint): Promise<void> {
    return this.device.transport.write(offset, size, value);
  }

  onBackendMessage(ev: BackendEvent): void {
    this.device.onBackendMessage(ev);
  }

  /** A pf device programmed with guest PASID `gpasid` uses the host PASID bound for it. */
  devicePasid(_rid: number, gpasid: number): number {
    return this.device.pasid.hostPasid(gpasid) ?? gpasid;
  }

  close(): Promise<void> {
    return this.device.close();
  }

  replay(host: HostCalls): Promise<ReplayReport> {
    return this.device.replay(host);
  }

  hostResources(): HostResources {
    return this.device.hostResources();
  }
}
