/**
 * Shared set-up of the VT-d integration tests: one host in another process per test file, and
 * VMs driven as a Linux guest drives its IOMMU — the VT-d driver through registers and guest
 * memory only.
 */
import { afterAll, beforeAll } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../../src/app/harness/start-guest.js';
import type { DeviceSpec, PasidBindingSnapshot, VmSnapshot } from '../../../src/api/types.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import type { GuestProcess } from '../../../guest/driver/guest-process.js';
import { VtdDriver } from '../../../guest/driver/vtd-driver.js';
import { DMAR } from '../../../src/vtd/registers.js';
import { scaled, sleep, waitFor } from '../../support/wait.js';

export const PF = '00:03.0'; // PRI-capable, attached with PRE
export const PF2 = '00:04.0'; // attached without PRE: translation faults are recorded
export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** A host process for the whole test file; the getter returns it once `beforeAll` has run. */
export function hostPerFile(): () => StartedHost {
  let host: StartedHost | undefined;
  beforeAll(async () => {
    host = await startHost();
  });
  afterAll(async () => {
    await host?.close();
  });
  return () => host!;
}

export interface VtdVm {
  vm: StartedGuest;
  alloc: PageAllocator;
  drv: VtdDriver;
}

export interface VtdVmOptions {
  name: string;
  memory: number;
  devices: DeviceSpec[];
  /** Devices attached with PRE (page requests) in their context entry. */
  pri: string[];
  vcmd?: '3.1' | '3.3' | false;
  pasidQuota?: number;
  /** The host uAPI (default VFIO SVA). */
  uapi?: Uapi;
}

/** The host uAPIs every integration flow runs on (describe.each). */
export type Uapi = 'vfio-sva' | 'iommufd';
export const UAPIS: readonly Uapi[] = ['vfio-sva', 'iommufd'];

/** A VT-d VM with the driver initialised (root table, queues, TE) and every device attached. */
export async function bootVtdVm(host: StartedHost, o: VtdVmOptions): Promise<VtdVm> {
  const vm = await startGuest({
    socket: host.socket,
    name: o.name,
    viommu: 'vtd',
    memory: o.memory,
    devices: o.devices,
    ...(o.vcmd !== undefined ? { vcmd: o.vcmd } : {}),
    ...(o.pasidQuota !== undefined ? { pasidQuota: o.pasidQuota } : {}),
    ...(o.uapi !== undefined ? { uapi: o.uapi } : {}),
  });
  const alloc = new PageAllocator(vm, { base: 0x10_0000n, size: o.memory - 0x10_0000 });
  const drv = await VtdDriver.init(vm, alloc, o.vcmd ? { vcmd: o.vcmd } : {});
  for (const d of o.devices) await drv.attachDevice(d.bdf, o.pri.includes(d.bdf) ? { pri: true } : {});
  return { vm, alloc, drv };
}

/** Boot a VM, run `body` with it, close it whatever happens. */
export async function withVtdVm<T extends VtdVm>(boot: () => Promise<T>, body: (v: T) => Promise<void>): Promise<void> {
  const v = await boot();
  try {
    await body(v);
  } finally {
    await v.vm.close();
  }
}

export async function vmSnapshot(host: StartedHost, name: string) {
  return (await host.snapshot()).vms.find((v) => v.name === name);
}

/** Poll until FSTS shows `bit` (the host's FAULT arrives on its own channel). */
export async function waitForFsts(vm: StartedGuest, bit: number): Promise<void> {
  await waitFor(async () => ((await vm.readl(DMAR.FSTS)) & bit) !== 0, { what: `FSTS bit 0x${bit.toString(16)} (fault recorded)`, timeoutMs: 5000, intervalMs: 1 });
}

/**
 * Service the page request queue until a request arrives (or 5 s, scaled, pass: then none is
 * returned and the caller's assertion says so); each is answered by mapping a fresh page.
 */
export async function servicePageRequestsByMapping(drv: VtdDriver, proc: GuestProcess): Promise<Awaited<ReturnType<VtdDriver['servicePageRequests']>>> {
  let requests: Awaited<ReturnType<VtdDriver['servicePageRequests']>> = [];
  const end = Date.now() + scaled(5000);
  while (requests.length === 0 && Date.now() < end) {
    requests = await drv.servicePageRequests(async (req): Promise<'success'> => {
      await proc.mapNew(req.addr, 0x1000);
      return 'success';
    });
    if (requests.length === 0) await sleep(1);
  }
  return requests;
}

/**
 * What the host routes a PASID through, whichever the VM's uAPI: the bindings of the PASID's row
 * (VFIO SVA), or the HWPTs the VM's iommufd devices have attached at that PASID — a nested HWPT
 * is 'nested' with its first-level table, the nest parent 'pt', another paging HWPT 'sl'.
 */
export function pasidRoutes(vm: VmSnapshot | undefined, pasid: number): PasidBindingSnapshot[] {
  if (vm === undefined) return [];
  const fd = vm.iommufd;
  if (fd === undefined) return vm.pasids.find((p) => p.hpasid === pasid)?.bindings ?? [];
  const out: PasidBindingSnapshot[] = [];
  for (const d of fd.devices) {
    const a = d.pasids.find((x) => x.pasid === pasid);
    const h = a === undefined ? undefined : fd.hwpts.find((x) => x.id === a.hwpt);
    if (h === undefined) continue;
    if (h.kind === 'nested') out.push({ bdf: d.bdf, pgtt: 'nested', flptr: h.flptr! });
    else out.push({ bdf: d.bdf, pgtt: h.nestParent ? 'pt' : 'sl' });
  }
  return out;
}
