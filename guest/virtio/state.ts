/**
 * The virtio-iommu's guest-visible state: endpoints (the VM's assigned devices, by requester ID),
 * domains with their mapping trees, and the PASID tables attached per endpoint.
 */
import type { GuestDevice } from '../viommu.js';
import { MappingTree } from './mapping-tree.js';

export interface Domain {
  /** Guest domain id (within domain_range). */
  readonly id: number;
  /** Created by an ATTACH with ATTACH_F_BYPASS: identity (the VM's GPA domain on the host). */
  readonly bypass: boolean;
  /** Host domain id: DOMAIN_ALLOC's, or 0 (the GPA domain) for a bypass domain (a replay renews it). */
  hostId: number;
  readonly endpoints: Set<Endpoint>;
  readonly mappings: MappingTree;
}

/** A first-level table attached for one PASID of an endpoint (ATTACH_TABLE). */
export interface TableBinding {
  gpasid: number;
  hpasid: number;
  domain: Domain;
  pgd: bigint;
  flFlags: bigint;
  addrWidth: number;
  /** Attached with ATTACH_TABLE_F_PRI. */
  pri: boolean;
}

export interface Endpoint {
  readonly dev: GuestDevice;
  /** Endpoint ID = requester ID. */
  readonly id: number;
  domain: Domain | null;
  /** Host domain the RID is attached to (null: none, DMA without PASID faults). */
  host: number | null;
  /** First-level tables by guest PASID. */
  readonly tables: Map<number, TableBinding>;
}

export function newDomain(id: number, bypass: boolean, hostId: number): Domain {
  return { id, bypass, hostId, endpoints: new Set(), mappings: new MappingTree() };
}

/** Little-endian field access on a gathered request. */
export class ReqReader {
  private readonly v: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(off: number): number {
    return this.v.getUint8(off);
  }
  u16(off: number): number {
    return this.v.getUint16(off, true);
  }
  u32(off: number): number {
    return this.v.getUint32(off, true);
  }
  u64(off: number): bigint {
    return this.v.getBigUint64(off, true);
  }
  isZero(off: number, len: number): boolean {
    for (let i = off; i < off + len; i++) if (this.bytes[i] !== 0) return false;
    return true;
  }
}

/** Little-endian field writes into a fixed-size buffer. */
export class LeWriter {
  readonly bytes: Uint8Array;
  private readonly v: DataView;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.v = new DataView(this.bytes.buffer);
  }
  u8(off: number, x: number): this {
    this.v.setUint8(off, x);
    return this;
  }
  u16(off: number, x: number): this {
    this.v.setUint16(off, x, true);
    return this;
  }
  u32(off: number, x: number): this {
    this.v.setUint32(off, x >>> 0, true);
    return this;
  }
  u64(off: number, x: bigint): this {
    this.v.setBigUint64(off, BigInt.asUintN(64, x), true);
    return this;
  }
}
