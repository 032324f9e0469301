/**
 * startGuest (docs/design.md §7): bring one VM up against a host and return its GuestHandle.
 *
 * The VM (guest/vm.ts) creates guest RAM, connects, announces itself, its memory and devices,
 * and builds the vIOMMU model: the virtual VT-d of guest/vtd/ for `viommu: 'vtd'` (with the
 * chosen VCMD layout), the virtio-iommu of guest/virtio/ for `viommu: 'virtio'`; either speaks
 * the host uAPI `uapi` selects ('vfio-sva', default, or 'iommufd'; guest/uapi/).
 *
 * The handle is the GuestVm itself: the GuestHandle methods of docs/design.md §7, plus `viommu`
 * (the device model, for inspection: e.g. the VT-d model's shadow()) and `device(bdf)`.
 */
import { fail } from '../../errors.js';
import type { TraceBus } from '../../trace/bus.js';
import { resolveMemoryBackend, type MemoryBackend } from '../../memory/memory-backend.js';
import { existingHarnessMemoryDir } from './harness-memory-dir.js';
import type { StartGuestOptions } from '../../api/types.js';
import type { Transport } from '../../../vhost/transport/transport.js';
import { GuestVm, type GuestVmOptions } from '../../../guest/vm.js';
import type { ViommuFactory } from '../../../guest/viommu.js';
import { createVirtioIommuModel } from '../../../guest/virtio/index.js';
import { createVtdModel } from '../../../guest/vtd/index.js';

/** Options beyond docs/design.md §7's, for harnesses and tests. */
export interface StartGuestExtraOptions {
  /** Open the connection to the host yourself (in-memory transport); replaces `socket`. */
  connect?: () => Promise<Transport>;
  /** Guest RAM in shared memory (default) or an in-process buffer (in-process hosts only). */
  ramBacking?: 'file' | 'inproc';
  /**
   * Map guest RAM — a sealed memfd passed to the host as a descriptor — ('mapped', default when
   * the native addon loaded) or use a file with positioned I/O ('pread'); `vsva guest --memory-backend`.
   */
  memoryBackend?: MemoryBackend;
  /**
   * Guest RAM as a file in this directory (a memory filesystem) instead of a memfd; passed as a
   * descriptor, or by path to a host that allows DIR. `vsva guest --memory-path`. Default when
   * RAM goes by path (no native addon, or 'pread'): $VSVA_MEM_DIR, else the harness directory
   * that hosts startHost started in this process allow, else the default memory directory.
   */
  memoryPath?: string;
  /** Per-request timeout towards the host, ms. */
  timeoutMs?: number;
  trace?: TraceBus;
  /** Reconnect policy of the VM's link to the host (default: DEFAULT_RECONNECT_POLICY). */
  reconnect?: GuestVmOptions['reconnect'];
}

export type StartGuestAllOptions = Omit<StartGuestOptions, 'socket'> & { socket?: string } & StartGuestExtraOptions;

export type StartedGuest = GuestVm;

export async function startGuest(opts: StartGuestAllOptions): Promise<StartedGuest> {
  if (opts.viommu !== 'vtd' && opts.viommu !== 'virtio') fail('EINVAL', `viommu must be 'vtd' or 'virtio', not '${String(opts.viommu)}'`);
  if (opts.socket === undefined && opts.connect === undefined) fail('EINVAL', 'startGuest needs the host socket');
  const vcmd = opts.vcmd ?? '3.1';
  if (vcmd !== '3.1' && vcmd !== '3.3' && vcmd !== false) fail('EINVAL', `vcmd must be '3.1', '3.3' or false, not '${String(vcmd)}'`);
  if (opts.viommu === 'virtio' && opts.vcmd !== undefined) fail('EINVAL', 'vcmd is a VT-d option');
  if (opts.uapi !== undefined && opts.uapi !== 'vfio-sva' && opts.uapi !== 'iommufd') fail('EINVAL', `uapi must be 'vfio-sva' or 'iommufd', not '${String(opts.uapi)}'`);
  const vmOpts: GuestVmOptions = { viommu: opts.viommu };
  if (opts.socket !== undefined) vmOpts.socket = opts.socket;
  if (opts.connect !== undefined) vmOpts.connect = opts.connect;
  if (opts.name !== undefined) vmOpts.name = opts.name;
  if (opts.memory !== undefined) vmOpts.memory = opts.memory;
  if (opts.pasidQuota !== undefined) vmOpts.pasidQuota = opts.pasidQuota;
  if (opts.devices !== undefined) vmOpts.devices = opts.devices;
  if (opts.ramBacking !== undefined) vmOpts.ramBacking = opts.ramBacking;
  if (opts.memoryBackend !== undefined) vmOpts.memoryBackend = opts.memoryBackend;
  if (opts.memoryPath !== undefined) vmOpts.memoryPath = opts.memoryPath;
  else if (opts.ramBacking !== 'inproc' && opts.connect === undefined && !process.env.VSVA_MEM_DIR && resolveMemoryBackend(opts.memoryBackend) === 'pread') {
    // RAM announced by path: in the directory this process's hosts allow (harness-memory-dir.ts).
    const dir = existingHarnessMemoryDir();
    if (dir !== undefined) vmOpts.memoryPath = dir;
  }
  if (opts.timeoutMs !== undefined) vmOpts.timeoutMs = opts.timeoutMs;
  if (opts.trace !== undefined) vmOpts.trace = opts.trace;
  if (opts.reconnect !== undefined) vmOpts.reconnect = opts.reconnect;
  if (opts.uapi !== undefined) vmOpts.uapi = opts.uapi;
  const factory: ViommuFactory = opts.viommu === 'vtd' ? (ctx) => createVtdModel(ctx, { vcmd }) : (ctx) => createVirtioIommuModel(ctx);
  return GuestVm.start(vmOpts, factory);
}
