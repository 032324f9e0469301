/**
 * Public harness types (docs/design.md §7). These names and fields are a contract: harnesses and the
 * dashboard depend on them. Add fields; never rename or remove one.
 */

export type DeviceKind = 'pf' | 'adi';

export interface DeviceSpec {
  /** PCI bus:device.function, e.g. '00:03.0'. */
  bdf: string;
  kind?: DeviceKind;
}

export type DmaResult =
  | { ok: true; data?: Uint8Array }
  | { ok: false; fault: { reason: number; addr: bigint; pasid?: number } };

export interface DmaRequest {
  pasid?: number;
  addr: bigint;
  /** Bytes to read; omit when writing `data`. */
  length?: number;
  /** Bytes to write. */
  data?: Uint8Array;
  privileged?: boolean;
  execute?: boolean;
}

export type PasidState = 'idle' | 'active' | 'free-pending';

export interface PasidBindingSnapshot {
  bdf: string;
  pgtt: 'nested' | 'sl' | 'pt';
  /** First-level table pointer (guest physical), hex with 0x prefix. */
  flptr?: string;
}

export interface PasidSnapshot {
  hpasid: number;
  /** SPID (the guest's PASID); null when none is attached. */
  gpasid: number | null;
  state: PasidState;
  refs: number;
  users: string[];
  bindings: PasidBindingSnapshot[];
}

export interface VmSnapshot {
  name: string;
  connected: boolean;
  set: { quota: number; used: number };
  devices: { bdf: string; kind: DeviceKind }[];
  pasids: PasidSnapshot[];
  /** The host uAPI the VM chose at VM_SETUP (docs/protocol.md §13); absent from older hosts. */
  uapi?: 'vfio-sva' | 'iommufd';
  /** The VM's iommufd objects (iommufd VMs only). */
  iommufd?: IommufdObjectsSnapshot;
}

/**
 * The iommufd objects of a VM (drivers/iommu/iommufd/ object kinds): IOASes, HWPTs with their
 * parent / children and host DID, bound devices with their RID and PASID attachments, fault queues.
 */
export interface IommufdObjectsSnapshot {
  ioas: { id: number; areas: number; mappedBytes: number; hwpts: number[] }[];
  hwpts: {
    id: number;
    kind: 'paging' | 'nested';
    /** Paging: the IOAS it is built from. */
    ioas?: number;
    /** Nested: the nest-parent paging HWPT. */
    parent?: number;
    children: number[];
    nestParent: boolean;
    /** Created by attaching a device to an IOAS directly. */
    auto: boolean;
    /** Allocated with IOMMU_HWPT_ALLOC_PASID. */
    pasid: boolean;
    /** Host domain ID (a nested HWPT's is its parent's). */
    did: number;
    /** Nested: the guest first-level table (GPA), hex with 0x prefix. */
    flptr?: string;
    fault: number | null;
    users: number;
  }[];
  devices: { id: number; bdf: string; hostBdf: string; rid: number | null; pasids: { pasid: number; hwpt: number; global: boolean }[] }[];
  faults: { id: number; queued: number; unanswered: number; users: number }[];
}

export interface HostSnapshot {
  pasidBits: number;
  capacity: { total: number; available: number };
  vms: VmSnapshot[];
}

export interface StartHostOptions {
  /** Unix socket path; default: a fresh path under the OS temp dir. */
  socket?: string;
  /** Default true: the host half runs as a child process (`vsva host`). */
  spawn?: boolean;
  /** Default 20. */
  pasidBits?: number;
  /** Default false. */
  dashboard?: { port: number; host?: string } | false;
}

export interface HostHandle {
  socket: string;
  snapshot(): Promise<HostSnapshot>;
  close(): Promise<void>;
}

export interface StartGuestOptions {
  /** The host's socket. */
  socket: string;
  name?: string;
  viommu: 'vtd' | 'virtio';
  /** Bytes of guest RAM, default 256 MiB. */
  memory?: number;
  /** Quota of this VM's IOASID set, default 1024. */
  pasidQuota?: number;
  /** VT-d only, default '3.1'. */
  vcmd?: '3.1' | '3.3' | false;
  /** Default [{ bdf: '00:03.0', kind: 'pf' }]. */
  devices?: DeviceSpec[];
  /**
   * The host uAPI the VM uses (docs/protocol.md §13.12): the VFIO SVA uAPI of docs/protocol.md
   * §10 (default) or iommufd (§13; physical-function devices only).
   */
  uapi?: 'vfio-sva' | 'iommufd';
}

export interface GuestHandle {
  name: string;
  /** The vIOMMU's register window (VT-d register file, or virtio-mmio), offsets from its base. */
  readl(offset: number): Promise<number>;
  readq(offset: number): Promise<bigint>;
  writel(offset: number, value: number): Promise<void>;
  writeq(offset: number, value: bigint): Promise<void>;
  /** Guest physical memory. */
  memread(gpa: bigint, length: number): Promise<Uint8Array>;
  memwrite(gpa: bigint, data: Uint8Array): Promise<void>;
  /** Ask an assigned device to perform one DMA: a read of `length` bytes or a write of `data`. */
  dma(bdf: string, req: DmaRequest): Promise<DmaResult>;
  close(): Promise<void>;
}
