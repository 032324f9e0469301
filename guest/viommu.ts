/**
 * The contract between the VM (guest/vm.ts) and its vIOMMU device model (guest/vtd/ or
 * guest/virtio/). The VM owns guest RAM, the connection to the host and the assigned devices;
 * the model owns the register window and everything the guest programs through it.
 */
import type { Logger } from '../src/log.js';
import type { TraceBus } from '../src/trace/bus.js';
import type { DeviceKind } from '../src/api/types.js';
import type { FrontendClient, BackendEvent } from '../vhost/roles/frontend.js';
import type { GuestRam } from './memory/guest-ram.js';
import type { HostUapi } from './uapi/host-uapi.js';

/** An assigned device as the VM announced it to the host (DEVICE_ADD). */
export interface GuestDevice {
  bdf: string;
  /** Requester ID, bus << 8 | devfn (also the virtio-iommu endpoint ID). */
  rid: number;
  kind: DeviceKind;
  /** DeviceCap bits announced (PASID, ATS, PRI, …). */
  caps: number;
  pasidWidth: number;
}

/**
 * How a model reaches the host: typed requests by message name. In a VM this is the HostLink
 * (guest/reconnect.ts), which survives reconnects; unit tests pass a fake or a bare client.
 */
export type HostCalls = Pick<FrontendClient, 'call'>;

/** What a model's replay re-created on a fresh host (docs/reliability.md §2). */
export interface ReplayReport {
  /** PASIDs allocated again (VT-d: the VCMD PASIDs at their old values; virtio: host PASIDs). */
  pasids: number;
  /** Bindings and PASID attachments made again. */
  bindings: number;
  /** Host domains allocated again (SL shadows, virtio domains). */
  domains: number;
  /** DMA mappings made again (domain 0 not counted). */
  mappings: number;
  /** DEVICE_CONFIG (PRI / ATS enables) sent again. */
  deviceConfigs: number;
  /** What could not be restored, one line each (a PASID another VM took meanwhile, …). */
  failures: string[];
}

export function emptyReplayReport(): ReplayReport {
  return { pasids: 0, bindings: 0, domains: 0, mappings: 0, deviceConfigs: 0, failures: [] };
}

/** What a model holds on the host, for the reconciliation after a resumed session. */
export interface HostResources {
  /** Host PASIDs the model allocated and has not freed. */
  pasids: ReadonlySet<number>;
  /** Host domain ids the model allocated and has not freed (0 excluded). */
  domains: ReadonlySet<number>;
}

/** What a device model is given when the VM creates it. */
export interface GuestContext {
  readonly name: string;
  readonly ram: GuestRam;
  readonly client: HostCalls;
  readonly devices: readonly GuestDevice[];
  readonly log: Logger;
  readonly trace: TraceBus;
  /** PASID quota of the VM's IOASID set on the host. */
  readonly pasidQuota: number;
  /**
   * The VM's host uAPI (guest/uapi/): what the model's host requests go through. Absent (unit
   * tests with a bare client): the VFIO SVA uAPI over `client`.
   */
  readonly uapi?: HostUapi;
}

export interface ViommuModel {
  readonly kind: 'vtd' | 'virtio';
  /**
   * A guest access to the register window (offset from its base, 4 or 8 bytes). Accesses are
   * delivered one at a time in program order (the VM serialises them, as one vCPU would); a
   * model may await host round trips inside (e.g. a VCMD or an invalidation-queue run).
   */
  mmioRead(offset: number, size: 4 | 8): bigint | Promise<bigint>;
  mmioWrite(offset: number, size: 4 | 8, value: bigint): void | Promise<void>;
  /** A back-end → front-end message for this VM (FAULT, PAGE_REQUEST, PASID_FREED, …). */
  onBackendMessage(ev: BackendEvent): void | Promise<void>;
  /**
   * The PASID a pf device puts on the wire when the guest programmed `gpasid` into it. Models
   * whose guest PASIDs are guest-private (virtio-iommu) return the host PASID the VMM programs
   * instead; identity models omit this.
   */
  devicePasid?(rid: number, gpasid: number): number;
  /**
   * The fault reason the guest sees for a DMA fault the host reported. A model that left a
   * guest entry unbound because the entry itself is invalid (VT-d: reserved bits 0x5a, PGTT 3
   * 0x5b) returns that reason — the host only saw "not bound". `addr`: the faulting address.
   * Absent: the host's reason.
   */
  dmaFaultReason?(rid: number, pasid: number | undefined, hostReason: number, addr?: bigint): number;
  /** Release host resources the model holds (called before the connection closes). */
  close(): Promise<void>;
  /**
   * Re-create on a fresh host (after VM_SETUP, SET_MEM_TABLE, DEVICE_ADD and domain 0's
   * DMA_MAP) everything the model's shadows say the host held: PASIDs at their old values,
   * domains and mappings, RID attachments, bindings, device enables. Requests go to `host`
   * directly (the link is not up yet). Guest-visible state does not change.
   */
  replay?(host: HostCalls): Promise<ReplayReport>;
  /** What the model holds on the host (for reconciliation after a resume). */
  hostResources?(): HostResources;
}

export type ViommuFactory = (ctx: GuestContext) => ViommuModel | Promise<ViommuModel>;
