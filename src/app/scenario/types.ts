/**
 * The vocabulary every part of a scenario shares: locations, values (integers, addresses,
 * variables, bytes), the VM description, what a step must fail with, and the fields every step
 * has. The step kinds themselves live with their records (ops-*.ts); schema.ts assembles the
 * whole validated form. docs/scenarios.md is the user-facing description of all of it.
 */
import type { DeviceKind } from '../../api/types.js';
import type { ErrnoName } from '../../errors.js';

export interface SourceLocation {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  col: number;
}

/** A variable reference (`$NAME`). */
export interface VarRef {
  ref: string;
}

/** An integer (PASID, count, reason code) or a variable holding one. */
export type IntValue = number | VarRef;
/** An address (VA, GPA, IOVA): 64-bit, so a bigint, or a variable. */
export type AddrValue = bigint | VarRef;

/** A field expectation: a value, or `{ not: value }`. */
export type Matcher<T> = { eq: T } | { not: T };

export type PageSize = '4K' | '2M' | '1G';

/**
 * Bytes given in a scenario: `{ hex }` (whitespace ignored), `{ text }` (UTF-8), `{ pattern, length }`
 * (one byte repeated) or `{ random: seed, length }` (a deterministic pseudo-random sequence).
 */
export type BytesSpec =
  | { hex: string }
  | { text: string }
  | { pattern: number; length: number }
  | { random: number; length: number };

/** Where data lives for a memory check: a process's VA or a guest physical address. */
export type MemoryRef = { vm: string; process: string; va: AddrValue } | { vm: string; gpa: AddrValue };

export type PageRequestPolicy = 'serve' | 'refuse' | 'ignore';

export const PAGE_REQUEST_POLICIES: readonly PageRequestPolicy[] = ['serve', 'refuse', 'ignore'];

/** virtio-iommu request status names (virtio spec §5.13.6.1, VIRTIO_IOMMU_S_*). */
export const VIRTIO_STATUS_NAMES = ['OK', 'IOERR', 'UNSUPP', 'DEVERR', 'INVAL', 'RANGE', 'NOENT', 'FAULT', 'NOMEM'] as const;
export type VirtioStatusName = (typeof VIRTIO_STATUS_NAMES)[number];

/** Longest single DMA or byte string a step may ask for (a DMA is chunked onto the device). */
export const MAX_DMA_LENGTH = 16 * 1024 * 1024;
/** Most pages one map / unmap / flush step may touch. */
export const MAX_PAGES = 65536;

export interface VmSpec {
  name: string;
  viommu: 'vtd' | 'virtio';
  /** Bytes of guest RAM. */
  memory: number;
  pasidQuota: number;
  /** VT-d only. */
  vcmd: '3.1' | '3.3' | false;
  /** The host uAPI (docs/protocol.md §13.12); undefined: the run's default ('vfio-sva' unless `vsva run --uapi`). */
  uapi?: 'vfio-sva' | 'iommufd';
  devices: { bdf: string; kind: DeviceKind }[];
  /** What the guest driver does with page requests (default 'serve'). */
  pageRequests: PageRequestPolicy;
  loc: SourceLocation;
}

/** What a failing step must fail with. */
export interface ExpectedError {
  /** errno name (ENOSPC, EINVAL, …) the step's error must carry. */
  errno?: ErrnoName;
  /** virtio-iommu request status (virtio steps only). */
  status?: VirtioStatusName;
  /** Substring of the error message. */
  message?: string;
}

/** Expected DMA fault (the device's request was blocked). */
export interface ExpectedFault {
  /** Scalable-mode fault reason code (VT-d spec appendix A; src/vtd/fault.ts), e.g. 0x71; omit for any reason. */
  reason?: IntValue;
  addr?: AddrValue;
}

/** The fields every step has, whatever its action. */
export interface StepBase {
  /** Index in the scenario's step list (0-based). */
  index: number;
  /** Human label (`label:`), else a summary built from the arguments. */
  label?: string;
  /** The step must fail this way (`error:`). */
  error?: ExpectedError;
  loc: SourceLocation;
}
