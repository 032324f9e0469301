/** The records the allocation experiment produces (one CSV file per kind). */
import type { AllocScheme, QuotaPolicy } from '../grid.js';

export interface LatencySample {
  scheme: AllocScheme;
  vms: number;
  pasids_per_vm: number;
  quota: number;
  vm: number;
  op: 'alloc' | 'bind';
  latency_us: number;
}

export interface AllocRow {
  scheme: AllocScheme;
  vms: number;
  pasids_per_vm: number;
  quota: number;
  attempted: number;
  succeeded: number;
  failed: number;
  /** Distinct failure statuses with the op that failed, e.g. 'alloc:VCRSP.SC=2'. */
  errors: string;
  alloc_p50_us: number;
  alloc_p99_us: number;
  bind_p50_us: number;
  bind_p99_us: number;
  /** Successful alloc+bind pairs per second of wall time, all VMs together. */
  throughput_per_s: number;
  wall_ms: number;
}

export interface FairnessVmRow {
  scheme: AllocScheme;
  vms: number;
  policy: QuotaPolicy;
  capacity: number;
  quota: number;
  demand: number;
  vm: number;
  setup_ok: boolean;
  succeeded: number;
  status: string;
}

export interface FairnessRow {
  scheme: AllocScheme;
  vms: number;
  policy: QuotaPolicy;
  capacity: number;
  demand_per_vm: number;
  vms_started: number;
  total_bound: number;
  utilization: number;
  jain_index: number;
  min_share: number;
  max_share: number;
}

export interface DmaRow {
  scheme: AllocScheme;
  mapping: 'identity' | 'spid';
  device: 'pf' | 'adi';
  length: number;
  samples: number;
  ok: number;
  p50_us: number;
  p99_us: number;
  mean_us: number;
}

export interface AllocResults {
  startedAt: string;
  quick: boolean;
  machine: { cpus: string; cores: number; node: string };
  alloc: AllocRow[];
  samples: LatencySample[];
  fairnessVms: FairnessVmRow[];
  fairness: FairnessRow[];
  dma: DmaRow[];
  micro?: { findBySpidNs: number; mapGetNs: number };
  /** Grid points that could not run, with why. */
  skipped: { point: string; reason: string }[];
}
