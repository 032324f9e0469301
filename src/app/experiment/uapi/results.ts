/** The records the uAPI experiment produces (one CSV file per kind; results.json has them all). */
import type { Uapi, UapiOp, UapiViommu } from './types.js';

/** One measured operation. */
export interface UapiSample {
  uapi: Uapi;
  op: UapiOp;
  iteration: number;
  latency_us: number;
  /** Frames on the wire during the operation, both directions, both channels. */
  messages: number;
  requests: number;
  replies: number;
  backend_requests: number;
  backend_replies: number;
}

/** Per uAPI and operation: latency distribution and messages per operation. */
export interface UapiOpRow {
  uapi: Uapi;
  op: UapiOp;
  samples: number;
  failed: number;
  p50_us: number;
  p99_us: number;
  mean_us: number;
  /** Mean frames per operation (all kinds); min and max show whether it is constant. */
  messages_per_op: number;
  messages_min: number;
  messages_max: number;
  requests_per_op: number;
  replies_per_op: number;
  backend_requests_per_op: number;
  backend_replies_per_op: number;
  /** The guest's requests per operation by name, e.g. 'IOMMUFD_DEVICE_ATTACH×1 IOMMUFD_HWPT_ALLOC×1' (by name). */
  request_names: string;
}

/** Frames per operation by class and message name. */
export interface UapiMessageRow {
  uapi: Uapi;
  op: UapiOp;
  class: string;
  message: string;
  per_op: number;
}

export interface UapiFailure {
  uapi: Uapi;
  op: UapiOp | 'prepare' | 'finish';
  iteration: number;
  status: string;
}

export interface UapiResults {
  startedAt: string;
  quick: boolean;
  machine: { cpus: string; cores: number; node: string };
  hostKind: string;
  /** The guests' vIOMMU. */
  viommu: UapiViommu;
  /** How messages were counted (wire-tap.ts). */
  counting: string;
  iterations: number;
  rounds: number;
  ops: UapiOpRow[];
  messages: UapiMessageRow[];
  samples: UapiSample[];
  failures: UapiFailure[];
  /** uAPIs whose VM could not start, with why (no rows for them). */
  skipped: { uapi: Uapi; reason: string }[];
}
