/**
 * Public harness types (DESIGN §7). These names and fields are a contract: harnesses and the
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
}

export interface HostSnapshot {
  pasidBits: number;
  capacity: { total: number; available: number };
  vms: VmSnapshot[];
}
