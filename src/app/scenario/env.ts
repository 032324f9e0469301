/**
 * What a running scenario's steps act on: the host, each VM with its guest driver, the live
 * processes and the variables. The runner (runner.ts) builds it; each step record's `run`
 * (ops-*.ts) uses it and reports a wrong outcome by throwing a StepMismatch.
 */
import type { HostSnapshot } from '../../api/types.js';
import { fail } from '../../errors.js';
import { VirtioSvaGuest, VtdSvaGuest, type SvaGuest } from '../../../guest/workload/index.js';
import type { StartedGuest } from '../harness/start-guest.js';
import type { StartedHost } from '../harness/start-host.js';
import type { Mismatch } from './show.js';
import type { VmSpec } from './types.js';
import type { Vars } from './vars.js';

/** A step's failure with a precise expected-vs-actual. */
export class StepMismatch extends Error {
  constructor(readonly mismatch: Mismatch) {
    super(`${mismatch.what}: expected ${mismatch.expected}, actual ${mismatch.actual}`);
  }
}

export interface VmEnv {
  spec: VmSpec;
  vm: StartedGuest;
  sva: SvaGuest;
}

export type GuestProcess = ReturnType<SvaGuest['process']>;

export class ScenarioEnv {
  readonly vars: Vars = new Map();
  readonly vms = new Map<string, VmEnv>();
  host!: { socket: string; snapshot(): Promise<HostSnapshot> };
  ownHost: StartedHost | null = null;

  vm(name: string): VmEnv {
    const v = this.vms.get(name);
    if (!v) fail('ENOENT', `no VM '${name}'`);
    return v;
  }

  /** The VM and process named `proc` (process names are unique across the scenario). */
  proc(name: string): { env: VmEnv; proc: GuestProcess } {
    for (const env of this.vms.values()) {
      const p = env.sva.processes.get(name);
      if (p) return { env, proc: p };
    }
    fail('ENOENT', `no live process '${name}'`);
  }

  /** The VT-d guest of VM `name`. */
  vtd(name: string): VtdSvaGuest {
    const env = this.vm(name);
    if (!(env.sva instanceof VtdSvaGuest)) fail('EOPNOTSUPP', `VM ${name} is not a VT-d VM`);
    return env.sva;
  }

  /** The virtio-iommu guest of VM `name`. */
  virtio(name: string): VirtioSvaGuest {
    const env = this.vm(name);
    if (!(env.sva instanceof VirtioSvaGuest)) fail('EOPNOTSUPP', `VM ${name} is not a virtio-iommu VM`);
    return env.sva;
  }
}
