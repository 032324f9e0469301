/**
 * What the wire handlers of one session (handlers.ts) need from the host service; HostServer
 * (host-server.ts) implements it. A file of its own so that the handlers and the server do not
 * import each other.
 */
import type { TraceBus } from '../../src/trace/bus.js';
import type { Session } from '../../vhost/roles/server.js';
import type { HostMemory } from '../memory/host-memory.js';
import type { ViommuKind, Vm } from './vm.js';
import type { GetStatePageRequest } from '../../vhost/messages/vm.js';

export interface SessionHost {
  /** Where the handlers emit their 'message' trace events. */
  readonly trace: TraceBus;
  /** The host physical address space (DEVICE_DMA's staged data lives in its guest-RAM regions). */
  readonly memory: HostMemory;
  /** The VM a session set up. EPERM before VM_SETUP. */
  vmOf(s: Session): Vm;
  /** VM_SETUP: create a VM (token null) or resume the one the token names. */
  setupVm(s: Session, name: string, quota: number, viommu: ViommuKind, token: Uint8Array | null): { vm: Vm; resumed: boolean };
  /**
   * GET_STATE: JSON text of what session `s` may see (docs/protocol.md §10.9) — its own VM, or
   * with the monitor token one page of the whole host. EPERM before VM_SETUP without the token.
   */
  stateJson(s: Session, req: GetStatePageRequest | undefined): string;
  /**
   * Resolves once the VM registry on disk holds every change made so far (vm-reservations.ts
   * persisted); at once when the host keeps no registry. VM_SETUP and SET_MEM_TABLE reply after it.
   */
  registryPersisted(): Promise<void>;
}
