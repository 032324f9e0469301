/**
 * Names, constants and snapshot shapes of the host IOASID core. Constants keep the kernel's
 * names (Linux drivers/iommu/ioasid.c and include/linux/ioasid.h as extended by Jacob Pan's
 * 2020–2021 series "ioasid: Add set and quota support", "Add custom allocators", ioasid_get/put,
 * ioasid_find_by_spid and the notifier patches) so they can be grepped against it.
 *
 * Terminology:
 * - ID / IOASID: a host PASID, 1 ≤ id ≤ capacity total (ID 0 is never handed out: it is the
 *   RID_PASID of VT-d scalable mode, so the allocatable space of 2^pasidBits holds 2^pasidBits − 1).
 * - SPID: a set-private ID attached to an IOASID — in vSVA the guest's PASID. Unique within a set.
 * - user: the name of a reference holder ('iommu', 'kvm', 'vdcm', …). The reference taken by
 *   ioasid_alloc belongs to the allocation itself and is never listed as a user.
 *
 * The notifier block shapes (they name the set handle) are in notifier-chain.ts.
 */
import type { TraceBus } from '../../src/trace/bus.js';

/** `(ioasid_t)-1`: "no ID" in the kernel API; an SPID may never take this value. */
export const INVALID_IOASID = 0xffff_ffff;

/** PCIe's 20-bit PASID (`PCI_PASID_MAX` = 0x100000 IDs; the default of docs/design.md §7). */
export const DEFAULT_PASID_BITS = 20;

/** V4 `enum ioasid_set_type`: NULL = 1 (token must be null), MM = 2 (token is the address space). */
export type IoasidSetType = 'NULL' | 'MM';
export const IOASID_SET_TYPE_NULL = 1;
export const IOASID_SET_TYPE_MM = 2;

/**
 * An MM set's token: whatever identifies the address space (the kernel uses the mm_struct
 * pointer). Compared by identity (SameValueZero), so two VMs must use distinct tokens.
 */
export type IoasidToken = string | number | object;

/** V4 `enum ioasid_state`; 'free' (not allocated) is not a state a caller can observe. */
export type IoasidStateName = 'idle' | 'active' | 'free-pending';

/** V4 `enum ioasid_notify_val` (ALLOC = 1 …). */
export type IoasidEvent = 'ALLOC' | 'FREE' | 'BIND' | 'UNBIND';
export const IOASID_NOTIFY_ALLOC = 1;
export const IOASID_NOTIFY_FREE = 2;
export const IOASID_NOTIFY_BIND = 3;
export const IOASID_NOTIFY_UNBIND = 4;
export const IOASID_EVENTS: readonly IoasidEvent[] = ['ALLOC', 'FREE', 'BIND', 'UNBIND'];

/** Scope flags of ioasid_notify(): the global chain, the ID's set chain, or both. */
export const IOASID_NOTIFY_FLAG_ALL = 1 << 0;
export const IOASID_NOTIFY_FLAG_SET = 1 << 1;

/**
 * V4 `enum ioasid_notifier_prios { LAST, DEVICE, IOMMU, CPU }`: a higher value is called
 * earlier, so the order is CPU (KVM) → IOMMU → DEVICE (VDCM) → LAST.
 */
export type IoasidPriority = 'CPU' | 'IOMMU' | 'DEVICE' | 'LAST';
export const IOASID_PRIO: Readonly<Record<IoasidPriority, number>> = { LAST: 0, DEVICE: 1, IOMMU: 2, CPU: 3 };

/**
 * A change listener of one set (IoasidCore.registerChangeListener): told the ID whose record —
 * allocation, state, references, users or SPID, i.e. everything IoasidIdSnapshot shows — an
 * IoasidCore call has just changed. The kernel has no such hook; the host service uses it to
 * keep its snapshot rows current (host/server/pasid-rows.ts).
 */
export type IoasidChangeListener = (id: number) => void;

export interface IoasidIdSnapshot {
  id: number;
  /** Owning set's id. */
  set: number;
  state: IoasidStateName;
  /** The allocation's own reference (until free) plus every user's references. */
  refs: number;
  /** Users holding at least one reference, sorted by name. */
  users: string[];
  spid: number | null;
}

export interface IoasidSetSnapshot {
  id: number;
  name: string | null;
  type: IoasidSetType;
  /** MM token as text (strings and numbers as is, objects by their `name` field or 'object'); null for NULL sets. */
  token: string | null;
  quota: number;
  /** IDs charged to the set: allocated and not yet reclaimed (free-pending ones included). */
  used: number;
  cgroup: string | null;
}

export interface IoasidCgroupSnapshot {
  /** '/' for the root, '/a/b' below it. */
  path: string;
  /** 'max' = no limit (the root, or a node set to 'max'). */
  max: number | 'max';
  current: number;
  /** `ioasids.events`: allocations refused because this node's limit was hit. */
  events: { max: number };
}

export interface IoasidCoreSnapshot {
  pasidBits: number;
  /** total: IDs the core manages; available: not given to a set's quota nor reserved. */
  capacity: { total: number; available: number };
  sets: IoasidSetSnapshot[];
  /** Ascending by set id, then by ID. Empty when the snapshot was taken with `ids: false`. */
  ids: IoasidIdSnapshot[];
  cgroups: IoasidCgroupSnapshot[];
}

export interface IoasidCoreOptions {
  /** PASID width; the core manages IDs 1 … 2^pasidBits − 1. 1–20, default 20. */
  pasidBits?: number;
  /** Where 'alloc' / 'free' trace events go (docs/design.md §6). */
  trace?: TraceBus;
}

/** What free_all_in_set did (IoasidCore.freeAllInSet, freeAllInSetSteps). */
export interface FreeAllResult {
  /** IDs reclaimed during the call. */
  reclaimed: number;
  /** IDs of the set left FREE_PENDING because users still hold references. */
  pending: number;
}
