/**
 * A virtio-iommu VM on an in-process host, with the Linux-like driver bound to it, for the
 * virtio unit tests. Guest RAM: 16 MiB; the driver's pages come from the top 8 MiB.
 */
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { startHost, type StartedHost } from '../../../../src/app/harness/start-host.js';
import { GuestVm } from '../../../../guest/vm.js';
import { createVirtioIommuModel, type VirtioIommuModel, type VirtioIommuOptions } from '../../../../guest/virtio/index.js';
import { VirtioIommuDriver, type VirtioIommuDriverOptions } from '../../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../../guest/driver/page-allocator.js';
import type { DeviceSpec } from '../../../../src/api/types.js';

export const MEMORY = 16 << 20;
export const EP = 0x18; // 00:03.0
export const EP2 = 0x20; // 00:04.0

export interface VirtioRig {
  host: StartedHost;
  vm: GuestVm;
  model: VirtioIommuModel;
  alloc: PageAllocator;
  close(): Promise<void>;
}

export async function startRig(opts: { devices?: DeviceSpec[]; model?: VirtioIommuOptions; host?: StartedHost } = {}): Promise<VirtioRig> {
  const host = opts.host ?? (await startHost({ spawn: false }));
  const vm = await GuestVm.start(
    { socket: host.socket, viommu: 'virtio', memory: MEMORY, devices: opts.devices },
    (ctx) => createVirtioIommuModel(ctx, opts.model),
  );
  const alloc = new PageAllocator(vm, { base: BigInt(MEMORY / 2), size: MEMORY / 2 });
  return {
    host,
    vm,
    model: vm.viommu as VirtioIommuModel,
    alloc,
    async close() {
      await vm.close();
      if (!opts.host) await host.close();
    },
  };
}

/** The two endpoints most tests use: 00:03.0 (EP) and 00:04.0 (EP2). */
export const TWO_DEVICES: DeviceSpec[] = [{ bdf: '00:03.0' }, { bdf: '00:04.0' }];

/**
 * One in-process host for the test file and a fresh rig for each test (closed after it):
 * `setUp` receives each new rig (assign it, probe the driver, ...).
 */
export function rigPerTest(opts: { devices?: DeviceSpec[] }, setUp: (rig: VirtioRig) => Promise<void> | void): void {
  let host: StartedHost;
  let rig: VirtioRig | undefined;
  beforeAll(async () => {
    host = await startHost({ spawn: false });
  });
  afterAll(async () => {
    await host.close();
  });
  beforeEach(async () => {
    rig = await startRig({ host, ...(opts.devices ? { devices: opts.devices } : {}) });
    await setUp(rig);
  });
  afterEach(async () => {
    await rig?.close();
  });
}

export async function probeDriver(rig: VirtioRig, opts: Partial<VirtioIommuDriverOptions> = {}): Promise<VirtioIommuDriver> {
  return VirtioIommuDriver.probe(rig.vm, { alloc: rig.alloc, ...opts });
}

/** A data page in the low half of guest RAM (below the allocator), filled with `fill`. */
export async function dataPage(rig: VirtioRig, index: number, fill: number): Promise<bigint> {
  const gpa = BigInt(0x10_0000 + index * 0x1000);
  await rig.vm.memwrite(gpa, new Uint8Array(0x1000).fill(fill));
  return gpa;
}

/** The VM's host-side domains (id, mapping count, attached RIDs) from the snapshot. */
export async function hostDomains(rig: VirtioRig): Promise<{ id: number; mappings: number; rids: string[] }[]> {
  const snap = (await rig.host.snapshot()) as unknown as { vms: { name: string; domains?: { id: number; mappings: number; rids: string[] }[] }[] };
  return snap.vms.find((v) => v.name === rig.vm.name)?.domains ?? [];
}
