/**
 * The real UapiEnv — the configuration users run: a spawned host (`startHost`, its own process,
 * grace period 0) and in-process guests brought up with `startGuest({ …, uapi })`, each VM's
 * connections opened through a wire tap (wire-tap.ts) so that every frame is counted, and the
 * guest driver with SVA processes on top (guest/workload: VtdSvaGuest with VCMD 3.1, or
 * VirtioSvaGuest; one `pf` device with PASID, ATS and PRI).
 *
 * startVm checks in the host's snapshot that the VM really got the uAPI asked for (the VM
 * entry's `uapi`, docs/protocol.md §13.11) and refuses to measure otherwise (EOPNOTSUPP).
 */
import { fail } from '../../../errors.js';
import type { HostSnapshot } from '../../../api/types.js';
import { startHost, type StartedHost } from '../../harness/start-host.js';
import { startGuest, type StartGuestAllOptions, type StartedGuest } from '../../harness/start-guest.js';
import { connectUnix } from '../../../../vhost/transport/unix.js';
import { startSvaGuest, type SvaGuest } from '../../../../guest/workload/index.js';
import type { GuestProcess } from '../../../../guest/driver/guest-process.js';
import { WireCounter, type WireCounts } from './wire-tap.js';
import type { Uapi, UapiEnv, UapiHost, UapiOp, UapiViommu, UapiVm } from './types.js';

const GUEST_RAM = 32 * 1024 * 1024;
const BDF = '00:03.0';
/** Where each iteration's process maps its page (any canonical user address). */
const VA = 0x4000_0000n;
/** Longest wait for the VM's outstanding requests to be answered after an operation. */
const SETTLE_MS = 5000;

class SvaUapiVm implements UapiVm {
  private proc: GuestProcess | null = null;
  private pasid: number | null = null;

  constructor(
    readonly uapi: Uapi,
    readonly name: string,
    private readonly guest: StartedGuest,
    private readonly sva: SvaGuest,
    private readonly counter: WireCounter,
  ) {}

  wire(): WireCounts {
    return this.counter.snapshot();
  }

  async prepare(i: number): Promise<void> {
    this.proc = await this.sva.createProcess(`it${i}`);
    await this.sva.mapPages(this.proc, VA, 1);
  }

  async run(op: UapiOp): Promise<void> {
    const proc = this.proc ?? fail('EINVAL', 'no process: prepare() first');
    switch (op) {
      case 'alloc':
        this.pasid = await this.sva.allocPasid();
        return;
      case 'bind':
        await this.sva.bind(proc, BDF, this.pasid ?? fail('EINVAL', 'no PASID'));
        return;
      case 'dma':
        return this.dma('dma');
      case 'invalidate':
        await this.sva.unmapPages(proc, VA, 1);
        return;
      case 'fault': {
        const before = this.sva.pageRequests;
        await this.dma('fault');
        if (this.sva.pageRequests !== before + 1) fail('EPROTO', `fault: ${this.sva.pageRequests - before} page requests reached the guest, expected 1`);
        return;
      }
      case 'unbind':
        await this.sva.unbind(proc, BDF);
        return;
      case 'free':
        await this.sva.freePasid(this.pasid ?? fail('EINVAL', 'no PASID'));
        this.pasid = null;
        return;
    }
  }

  private async dma(what: string): Promise<void> {
    const r = await this.guest.dma(BDF, { pasid: this.pasid ?? fail('EINVAL', 'no PASID'), addr: VA, length: 64 });
    if (!r.ok) fail('EFAULT', `${what}: DMA faulted, reason 0x${r.fault.reason.toString(16)}`);
  }

  async settle(): Promise<void> {
    const deadline = Date.now() + SETTLE_MS;
    while (this.guest.client.outstanding > 0) {
      if (Date.now() > deadline) fail('ETIMEDOUT', `${this.name}: ${this.guest.client.outstanding} requests unanswered after ${SETTLE_MS} ms`);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  async finish(): Promise<void> {
    const proc = this.proc;
    this.proc = null;
    try {
      if (proc) await this.sva.exit(proc); // unbinds if still bound
    } finally {
      const pasid = this.pasid;
      this.pasid = null;
      if (pasid !== null) await this.sva.freePasid(pasid);
    }
  }

  async close(): Promise<void> {
    try {
      await this.sva.close();
    } finally {
      await this.guest.close();
    }
  }
}

/**
 * The VM `name` of the host snapshot uses `uapi` (a VM entry without `uapi`, from an older host,
 * uses VFIO SVA): EOPNOTSUPP otherwise, ENOENT when the snapshot has no such VM.
 */
export function requireUapi(snap: HostSnapshot, name: string, uapi: Uapi): void {
  const vm = snap.vms.find((v) => v.name === name) ?? fail('ENOENT', `VM ${name} is not in the host snapshot`);
  const got = vm.uapi ?? 'vfio-sva';
  if (got !== uapi) fail('EOPNOTSUPP', `startGuest({ uapi: '${uapi}' }) gave VM ${name} the ${got} uAPI (host snapshot)`);
}

class RealHost implements UapiHost {
  constructor(readonly started: StartedHost) {}

  get socket(): string {
    return this.started.socket;
  }

  close(): Promise<void> {
    return this.started.close();
  }
}

export function realUapiEnv(viommu: UapiViommu = 'vtd'): UapiEnv {
  if (viommu !== 'vtd' && viommu !== 'virtio') fail('EINVAL', `viommu must be 'vtd' or 'virtio', not '${String(viommu)}'`);
  return {
    hostKind: 'spawned `vsva host` process (startHost, grace period 0)',
    viommu,
    async startHost(): Promise<UapiHost> {
      return new RealHost(await startHost({ graceMs: 0 }));
    },
    async startVm(host: UapiHost, uapi: Uapi, name: string): Promise<UapiVm> {
      const counter = new WireCounter();
      const opts: StartGuestAllOptions & { uapi: Uapi } = {
        socket: host.socket,
        connect: async () => counter.tap(await connectUnix(host.socket)),
        name,
        viommu,
        ...(viommu === 'vtd' ? { vcmd: '3.1' as const } : {}),
        memory: GUEST_RAM,
        devices: [{ bdf: BDF, kind: 'pf' }],
        uapi,
      };
      const guest = await startGuest(opts);
      try {
        if (!(host instanceof RealHost)) fail('EINVAL', 'realUapiEnv.startVm needs a host it started');
        requireUapi(await host.started.snapshot(), name, uapi);
        const sva = await startSvaGuest(guest, { viommu, memory: GUEST_RAM, devices: [{ bdf: BDF }], ...(viommu === 'vtd' ? { vcmd: '3.1' as const } : {}) });
        return new SvaUapiVm(uapi, name, guest, sva, counter);
      } catch (e) {
        await guest.close().catch(() => undefined);
        throw e;
      }
    },
  };
}
