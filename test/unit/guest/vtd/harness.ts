/**
 * A VT-d model over in-process guest RAM with a recording fake host, and a GuestHandle-shaped
 * view of it, for unit tests of the model and the driver without a host process.
 */
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { childLogger } from '../../../../src/log.js';
import { TraceBus } from '../../../../src/trace/bus.js';
import { VtdModel } from '../../../../guest/vtd/index.js';
import type { HostCalls } from '../../../../guest/viommu.js';
import type { GuestIommuHandle } from '../../../../guest/driver/vtd-driver.js';
import { DeviceCap } from '../../../../vhost/messages/device.js';

export interface HostCall {
  name: string;
  payload: unknown;
}

export function fakeHost(opts: { quota?: number } = {}) {
  const calls: HostCall[] = [];
  let nextPasid = 1;
  let nextDomain = 1;
  const owned = new Set<number>();
  const port = {
    async call(name: string, payload?: unknown): Promise<unknown> {
      calls.push({ name, payload });
      switch (name) {
        case 'PASID_ALLOC': {
          if (owned.size >= (opts.quota ?? 1024)) throw Object.assign(new Error('quota'), { code: 'ENOSPC' });
          owned.add(nextPasid);
          return { pasid: nextPasid++ };
        }
        case 'PASID_FREE': {
          const p = (payload as { min: number }).min;
          return { freed: owned.delete(p) ? 1 : 0 };
        }
        case 'CACHE_INVALIDATE':
          return { handled: (payload as { entries: unknown[] }).entries.length, first_error: 0 };
        case 'DOMAIN_ALLOC':
          return { domain: nextDomain++ };
        default:
          return undefined;
      }
    },
  };
  return { port: port as unknown as HostCalls, calls };
}

export const RID = 0x18;

export function makeModel(opts: { vcmd?: '3.1' | '3.3' | false; quota?: number; memory?: number } = {}) {
  const ram = GuestRam.create(opts.memory ?? 16 * 1024 * 1024, { backing: 'inproc' });
  const host = fakeHost(opts.quota !== undefined ? { quota: opts.quota } : {});
  const trace = new TraceBus();
  const model = new VtdModel(
    {
      name: 'unit',
      ram,
      client: host.port,
      devices: [{ bdf: '00:03.0', rid: RID, kind: 'pf', caps: DeviceCap.PASID | DeviceCap.ATS | DeviceCap.PRI, pasidWidth: 20 }],
      log: childLogger('vtd-unit'),
      trace,
      pasidQuota: 1024,
    },
    opts.vcmd === undefined ? {} : { vcmd: opts.vcmd },
  );
  const h: GuestIommuHandle = {
    readl: async (o) => Number(await model.mmioRead(o, 4)),
    readq: async (o) => model.mmioRead(o, 8),
    writel: async (o, v) => model.mmioWrite(o, 4, BigInt(v >>> 0)),
    writeq: async (o, v) => model.mmioWrite(o, 8, BigInt.asUintN(64, v)),
    memread: async (gpa, n) => ram.read(Number(gpa), n),
    memwrite: async (gpa, d) => ram.write(Number(gpa), d),
  };
  return { ram, model, host, trace, h };
}
