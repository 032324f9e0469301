/**
 * What the wire handlers of one session (handlers.ts) need from the host service; HostServer
 * (host-server.ts) implements it. A file of its own so that the handlers and the server do not
 * import each other.
 */
import type { TraceBus } from '../../src/trace/bus.js';
import type { Session } from '../../vhost/roles/server.js';
import type { HostMemory } from '../memory/host-memory.js';
import type { ViommuKind, Vm } from './vm.js';

export interface SessionHost {
  /** Where the handlers emit their 'message' trace events. */
  readonly trace: TraceBus;
  /** The host physical address space (DEVICE_DMA's staged data lives in its guest-RAM regions). */
  readonly memory: HostMemory;
  /** The VM a session set up. EPERM before VM_SETUP. */
  vmOf(s: Session): Vm;
  /** VM_SETUP: create a VM (token null) or resume the one the token names. */
  setupVm(s: Session, name: string, quota: number, viommu: ViommuKind, token: Uint8Array | null): { vm: Vm; resumed: boolean };
  /** GET_STATE: JSON text of the host snapshot. */
  snapshotJson(): string;
  /** GET_STATE with a page request: JSON text of one page of it (docs/protocol.md §10.9). */
  snapshotPageJson(cursor: number, maxVms: number): string;
}
