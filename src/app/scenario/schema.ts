/**
 * The validated form of a scenario file (docs/scenarios.md is the user-facing description; this
 * file is its contract). A scenario names a host, the VMs on it and a list of steps; each step
 * is one action with its arguments, optionally expected to fail.
 *
 * Values that refer to earlier results use variables: a step with `as: NAME` stores what it
 * produced (a PASID, a buffer's GPA), and later steps write `$NAME`. The parser resolves no
 * variable (values arrive at run time) but checks that every `$NAME` is defined by an earlier
 * step, so a typo is a malformed scenario, not a run-time failure.
 *
 * Every step keeps the location of its source (file, line, column) for the report.
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

export interface VmSpec {
  name: string;
  viommu: 'vtd' | 'virtio';
  /** Bytes of guest RAM. */
  memory: number;
  pasidQuota: number;
  /** VT-d only. */
  vcmd: '3.1' | '3.3' | false;
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
  /** Scalable-mode fault reason code (VT-d spec table), e.g. 0x... ; omit for any reason. */
  reason?: IntValue;
  addr?: AddrValue;
}

interface StepBase {
  /** Index in the scenario's step list (0-based). */
  index: number;
  /** Human label (`label:`), else a summary built from the arguments. */
  label?: string;
  /** The step must fail this way (`error:`). */
  error?: ExpectedError;
  loc: SourceLocation;
}

export interface ProcessStep extends StepBase { op: 'process'; vm: string; name: string; levels: 4 | 5 }
export interface ExitStep extends StepBase { op: 'exit'; process: string }
export interface MapStep extends StepBase {
  op: 'map';
  process: string;
  va: AddrValue;
  pages: number;
  size: PageSize;
  write: boolean;
  user: boolean;
  exec: boolean;
  /** Initial contents written by the process after mapping. */
  fill?: BytesSpec;
}
export interface UnmapStep extends StepBase { op: 'unmap'; process: string; va: AddrValue; pages: number; flush: boolean }
export interface AllocStep extends StepBase { op: 'alloc'; vm: string; count: number; as?: string }
export interface FreeStep extends StepBase { op: 'free'; vm: string; pasid: IntValue }
export interface BindStep extends StepBase { op: 'bind'; process: string; device: string; pasid?: IntValue; as?: string }
export interface UnbindStep extends StepBase { op: 'unbind'; process: string; device: string }
export interface FlushStep extends StepBase {
  op: 'flush';
  vm: string;
  /** pasid: PASID-cache; piotlb: PASID-based IOTLB; iotlb: IOTLB global; devtlb: PASID-based device-TLB. */
  cache: 'pasid' | 'piotlb' | 'iotlb' | 'devtlb';
  pasid?: IntValue;
  /** devtlb: the device whose TLB is flushed. */
  device?: string;
  va?: AddrValue;
  pages?: number;
}
export interface WaitStep extends StepBase { op: 'wait'; vm: string }
export interface SleepStep extends StepBase { op: 'sleep'; ms: number }
export interface PageRequestsStep extends StepBase { op: 'page-requests'; vm: string; policy: PageRequestPolicy }

export type DmaOp = 'read' | 'write' | 'fill' | 'copy' | 'compare';
export interface DmaStep extends StepBase {
  op: 'dma';
  vm: string;
  device: string;
  /** The bound process whose PASID and address space the DMA uses. */
  process?: string;
  /** Raw PASID (no process); omitted with no process: a request without PASID (IOVA). */
  pasid?: IntValue;
  kind: DmaOp;
  /** read/write/fill: the target; copy: the destination. */
  addr: AddrValue;
  /** copy/compare: the source (compare: the second buffer). */
  src?: AddrValue;
  length: number;
  /** write: the bytes. */
  data?: BytesSpec;
  /** fill: the byte. */
  value?: number;
  /** read: the bytes the device must return. */
  expectData?: BytesSpec;
  /** compare: whether the buffers must be equal (default true). */
  equal?: boolean;
  /** The DMA must fault (and not be served by a page request). */
  fault?: ExpectedFault;
  /** Check the result in guest memory through the process's page tables (default true with a process). */
  check: boolean;
}

export interface VirtioAttachStep extends StepBase { op: 'virtio-attach' | 'virtio-detach'; vm: string; device: string; domain: number }
export interface VirtioMapStep extends StepBase {
  op: 'virtio-map';
  vm: string;
  domain: number;
  iova: AddrValue;
  length: number;
  /** Guest physical address of the target; omitted: fresh zeroed guest pages (stored in `as`). */
  gpa?: AddrValue;
  as?: string;
  read: boolean;
  write: boolean;
}
export interface VirtioUnmapStep extends StepBase { op: 'virtio-unmap'; vm: string; domain: number; iova: AddrValue; length: number }

/**
 * Expectation about one row of a VM's PASID table. The row is selected by the `gpasid` and/or
 * `hpasid` given as plain values (at least one); a `{ not: x }` there is a check, not a selector.
 */
export interface PasidRowExpectation {
  gpasid?: Matcher<IntValue | null>;
  hpasid?: Matcher<IntValue>;
  /** The row must not exist. */
  absent: boolean;
  state?: Matcher<string>;
  refs?: Matcher<number>;
  /** Exactly these users, in any order. */
  users?: string[];
  /** Number of bindings, or the devices bound. */
  bindings?: number | { bdf: string; pgtt?: 'nested' | 'sl' | 'pt' }[];
  /** Store fields of the matched row in variables: { hpasid: NAME }. */
  save?: { hpasid?: string; gpasid?: string };
  loc: SourceLocation;
}

export interface VmExpectation {
  vm: string;
  connected?: boolean;
  used?: number;
  quota?: number;
  /** Number of PASID rows. */
  pasids?: number;
  rows: PasidRowExpectation[];
  /** The most recent fault the guest driver recorded (fault registers / eventq). */
  fault?: ExpectedFault & { pasid?: IntValue };
  /** No fault recorded since the start. */
  noFaults?: boolean;
  /** Page requests the guest driver has serviced so far (at least / exactly). */
  pageRequests?: number;
}

export interface ExpectStep extends StepBase {
  op: 'expect';
  capacity?: { total?: number; available?: number };
  vms?: number;
  vmChecks: VmExpectation[];
  /** Data equality checks. */
  memory: { at: MemoryRef; equals: BytesSpec | { sameAs: MemoryRef; length: number } }[];
}

export type Step =
  | ProcessStep
  | ExitStep
  | MapStep
  | UnmapStep
  | AllocStep
  | FreeStep
  | BindStep
  | UnbindStep
  | FlushStep
  | WaitStep
  | SleepStep
  | PageRequestsStep
  | DmaStep
  | VirtioAttachStep
  | VirtioMapStep
  | VirtioUnmapStep
  | ExpectStep;

export type StepOp = Step['op'];

export const STEP_OPS: readonly StepOp[] = [
  'process',
  'exit',
  'map',
  'unmap',
  'alloc',
  'free',
  'bind',
  'unbind',
  'flush',
  'wait',
  'sleep',
  'page-requests',
  'dma',
  'virtio-attach',
  'virtio-detach',
  'virtio-map',
  'virtio-unmap',
  'expect',
];

export interface Scenario {
  name: string;
  description?: string;
  file: string;
  host: { pasidBits: number; spawn: boolean };
  /** Per-step time limit, ms. */
  stepTimeoutMs: number;
  vms: VmSpec[];
  steps: Step[];
}
