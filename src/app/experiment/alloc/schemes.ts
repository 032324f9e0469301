/**
 * The real ExperimentEnv: a spawned host (`startHost`, grace period 0 so a closed VM's PASIDs
 * return at once) and in-process guests (`startGuest`, 16 MiB of RAM each), one per VM.
 *
 * - vcmd-identity: VT-d guest with VCMD 3.1, a `pf` device; allocation = VCMD ALLOC_PASID, bind
 *   = PASID entry + PASID-cache flush + wait (src/bench/vtd-bench-driver.ts). A refused
 *   allocation reports `VCRSP.SC=<status>`.
 * - spid-vtd: VT-d guest without VCMD, an `adi` device (the VDCM translates the guest PASID);
 *   the guest picks PASIDs itself (from 0x100 up) and the host allocates a host PASID at bind,
 *   recording the guest's as the SPID. The guest cannot see a refused bind on the queue (the
 *   wait still completes, as on hardware); the VMM can: the model's shadow marks the entry
 *   refused with the host's errno, reported as the bind's status.
 * - virtio-spid: virtio-iommu guest (guest/driver/virtio-iommu-driver.ts): ATTACH of the device
 *   to domain 1 at set-up, then ATTACH_TABLE per guest PASID; a refusal is the request status.
 * DMA: one read through the PASID at BENCH_BUFFER_VA, mapped in the guest process's first-level
 * table that every bind of the VM points at.
 */
import { startHost } from '../../harness/start-host.js';
import { startGuest, type StartedGuest } from '../../harness/start-guest.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../bench/vtd-bench-driver.js';
import { VirtioIommuDriver } from '../../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../../guest/driver/guest-process.js';
import { ReqStatus } from '../../../../guest/virtio/index.js';
import { isVsvaError } from '../../../errors.js';
import type { AllocScheme } from '../grid.js';
import { OpFailure, type ExperimentEnv, type ExperimentHost, type SchemeVm, type VmSpec } from './types.js';
import { translationMicro } from './translation-micro.js';

const GUEST_RAM = 16 * 1024 * 1024;
const BDF = '00:03.0';
const RID = 0x18;
/** First guest-chosen PASID of the SPID schemes: 1, so that a VM can use its whole advertised PASID width (PASID 0 is RID_PASID). */
const GUEST_PASID_BASE = 1;

const statusName = (s: number): string => (Object.entries(ReqStatus).find(([, v]) => v === s)?.[0] ?? `status ${s}`);

async function startVmGuest(host: ExperimentHost, scheme: AllocScheme, spec: VmSpec): Promise<StartedGuest> {
  try {
    if (scheme === 'virtio-spid') return await startGuest({ socket: host.socket, name: spec.name, viommu: 'virtio', memory: GUEST_RAM, pasidQuota: spec.quota, devices: [{ bdf: BDF, kind: 'pf' }] });
    return await startGuest({
      socket: host.socket,
      name: spec.name,
      viommu: 'vtd',
      memory: GUEST_RAM,
      pasidQuota: spec.quota,
      vcmd: scheme === 'vcmd-identity' ? '3.1' : false,
      devices: [{ bdf: BDF, kind: spec.device ?? (scheme === 'spid-vtd' ? 'adi' : 'pf') }],
    });
  } catch (e) {
    throw new OpFailure('setup', isVsvaError(e) ? e.code : String(e));
  }
}

async function vtdVm(g: StartedGuest, scheme: 'vcmd-identity' | 'spid-vtd', spec: VmSpec): Promise<SchemeVm> {
  const drv = await VtdBenchDriver.create(g, { vcmd: scheme === 'vcmd-identity' ? '3.1' : false, bufferBytes: 4096 });
  let next = GUEST_PASID_BASE;
  const model = g.viommu as { shadow?: () => { rid: number; pasid: number | null; binding: { kind: string; errno?: string } }[] };
  const refused = (pasid: number): string | null => {
    const entry = model.shadow?.().find((s) => s.rid === RID && s.pasid === pasid);
    if (!entry) return null;
    if (entry.binding.kind === 'refused') return entry.binding.errno ?? 'refused';
    return entry.binding.kind === 'nested' ? null : entry.binding.kind;
  };
  if (scheme === 'spid-vtd') {
    // Does the VT-d model map guest-chosen PASIDs (host PASID_ALLOC + BIND with GPASID_VAL)?
    // A model that binds hpasid = gpasid gets ENOENT here; the scheme then cannot run at all.
    const probe = next++;
    await drv.bindPasid(probe);
    const why = refused(probe);
    await drv.unbindPasid(probe);
    if (why !== null) {
      throw new Error(
        `guest-private PASIDs on VT-d are not supported by the VT-d model: BIND of guest-chosen PASID ${probe} without VCMD was refused with ${why} (the model forwards hpasid = gpasid; it would need a host PASID_ALLOC and BIND with GPASID_VAL, guest/vtd/pasid-shadow.ts)`,
      );
    }
  }
  return {
    name: spec.name,
    async alloc() {
      if (scheme === 'spid-vtd') return next++;
      try {
        return await drv.allocPasid();
      } catch (e) {
        throw new OpFailure('alloc', (e as Error).message.replace(/^\w+: /, ''));
      }
    },
    async bind(pasid) {
      await drv.bindPasid(pasid);
      // What the VMM saw when it forwarded the bind (the guest's queue completes either way).
      const why = refused(pasid);
      if (why !== null) throw new OpFailure('bind', why);
    },
    async dma(pasid, length) {
      const r = await g.dma(BDF, { pasid, addr: BENCH_BUFFER_VA, length });
      return r.ok;
    },
    close: () => g.close(),
  };
}

async function virtioVm(g: StartedGuest, spec: VmSpec): Promise<SchemeVm> {
  const base = 0x10_0000n;
  const alloc = new PageAllocator(g, { base, size: BigInt(GUEST_RAM) - base });
  const drv = await VirtioIommuDriver.probe(g, { alloc });
  const st = await drv.attach(1, RID);
  if (st !== ReqStatus.OK) throw new OpFailure('setup', `ATTACH ${statusName(st)}`);
  const proc = await GuestProcess.create(g, alloc);
  await proc.mapNew(BENCH_BUFFER_VA, 4096);
  let next = GUEST_PASID_BASE;
  return {
    name: spec.name,
    alloc: async () => next++,
    async bind(pasid) {
      const s = await drv.attachTable({ domain: 1, endpoint: RID, pasid, pgd: proc.pgd, addrWidth: proc.addressWidth });
      if (s !== ReqStatus.OK) throw new OpFailure('bind', statusName(s));
    },
    async dma(pasid, length) {
      const r = await g.dma(BDF, { pasid, addr: BENCH_BUFFER_VA, length });
      return r.ok;
    },
    close: () => g.close(),
  };
}

export function realEnv(_opts: { quick: boolean }): ExperimentEnv {
  return {
    async startHost(pasidBits) {
      // Quota 0 ('unlimited' policy) means the rest of the capacity here, as in ioasid_set_alloc.
      const h = await startHost({ pasidBits, graceMs: 0, defaultVmQuota: 2 ** pasidBits - 1 });
      return {
        socket: h.socket,
        pasidBits,
        capacity: async () => (await h.snapshot()).capacity,
        close: () => h.close(),
      };
    },
    async startVm(host, scheme, spec) {
      const g = await startVmGuest(host, scheme, spec);
      try {
        return scheme === 'virtio-spid' ? await virtioVm(g, spec) : await vtdVm(g, scheme, spec);
      } catch (e) {
        await g.close().catch(() => {});
        throw e;
      }
    },
    translationMicro,
  };
}
