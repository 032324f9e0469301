/**
 * Isolation (docs/reliability.md §5): across VMs — including two VMs that use the same guest
 * PASID, which the host keeps apart through each VM's own SPID mapping — and across devices of
 * one VM. A device reaches only what its own VM bound for it. In-process host.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../../src/app/harness/start-guest.js';
import { VirtioIommuDriver } from '../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { ReqStatus } from '../../../guest/virtio/index.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../../src/app/bench/vtd-bench-driver.js';
import { snapshotInvariants, vmIn } from './helpers.js';
import { UAPIS, bootVtdVm } from '../vtd/helpers.js';

const MEM = 16 << 20;
const VA = 0x6000_0000n;
const dec = (b: Uint8Array | undefined): string => new TextDecoder().decode(b);

/** The DMA reached nothing: refused (ENOENT: not a PASID of this VM) or faulted. */
async function noAccess(p: Promise<{ ok: boolean }>): Promise<void> {
  try {
    expect((await p).ok).toBe(false);
  } catch (e) {
    expect(e).toMatchObject({ code: 'ENOENT' });
  }
}
let host: StartedHost;
const guests: StartedGuest[] = [];

beforeAll(async () => {
  host = await startHost({ spawn: false, graceMs: 0 });
});
afterAll(async () => {
  for (const g of guests) await g.close();
  await host?.close();
});

/** A virtio VM whose pf (00:03.0) and ADI (00:04.0) have guest PASID 5 bound to a process holding `text`. */
async function virtioVm(name: string, text: string): Promise<StartedGuest> {
  const g = await startGuest({ socket: host.socket, name, viommu: 'virtio', memory: MEM, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0', kind: 'adi' }, { bdf: '00:05.0' }] });
  guests.push(g);
  const alloc = new PageAllocator(g, { base: 0x40_0000n, size: MEM - 0x40_0000 });
  const drv = await VirtioIommuDriver.probe(g, { alloc });
  for (const ep of [0x18, 0x20, 0x28]) expect(await drv.attach(1, ep)).toBe(ReqStatus.OK);
  const proc = await GuestProcess.create(g, alloc);
  await proc.mapNew(VA, 0x1000);
  await proc.write(VA, new TextEncoder().encode(text));
  for (const ep of [0x18, 0x20]) expect(await drv.attachTable({ domain: 1, endpoint: ep, pasid: 5, pgd: proc.pgd, addrWidth: 48 })).toBe(ReqStatus.OK);
  return g;
}

describe('isolation', () => {
  it('two VMs using the same guest PASID: each device reaches its own VM\'s memory, never the other\'s', async () => {
    const a = await virtioVm('iso-a', 'memory of VM A');
    const b = await virtioVm('iso-b', 'memory of VM B');
    for (const [g, text] of [[a, 'memory of VM A'], [b, 'memory of VM B']] as const) {
      for (const bdf of ['00:03.0', '00:04.0']) {
        const r = await g.dma(bdf, { pasid: 5, addr: VA, length: 14 });
        expect({ bdf, got: r.ok ? dec(r.data) : r.fault }).toEqual({ bdf, got: text });
      }
    }
    const s = await host.snapshot();
    expect(snapshotInvariants(s)).toEqual([]);
    const pa = vmIn(s, 'iso-a')!.pasids;
    const pb = vmIn(s, 'iso-b')!.pasids;
    expect(pa.map((p) => p.gpasid)).toEqual([5]);
    expect(pb.map((p) => p.gpasid)).toEqual([5]);
    expect(pa[0]!.hpasid).not.toBe(pb[0]!.hpasid);
    // VM B's pf tagging its DMA with VM A's host PASID: not a PASID of B (ENOENT), no data of A.
    await noAccess(b.dma('00:03.0', { pasid: pa[0]!.hpasid, addr: VA, length: 14 }));
  });

  it('a device cannot use a PASID bound only for another device of its VM', async () => {
    const a = guests.find((g) => g.name === 'iso-a')!;
    // 00:05.0 is in the same domain but has no table for PASID 5: its DMA with PASID 5 faults.
    const r = await a.dma('00:05.0', { pasid: 5, addr: VA, length: 14 });
    expect(r.ok).toBe(false);
  });

  it.each(UAPIS)('VT-d VMs (%s uAPI): a PASID of one VM is nobody else\'s; devices of one VM are bound separately', async (uapi) => {
    const mk = async (name: string, text: string) => {
      const g = await startGuest({ socket: host.socket, name: `${name}-${uapi}`, viommu: 'vtd', memory: MEM, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0' }], uapi });
      guests.push(g);
      const drv = await VtdBenchDriver.create(g, { bufferBytes: 4096, bdfs: ['00:03.0', '00:04.0'] });
      await drv.process.write(BENCH_BUFFER_VA, new TextEncoder().encode(text));
      const p = await drv.allocPasid();
      await drv.bindPasid(p); // the bench driver binds the PASID entry in the shared PASID table of both devices
      return { g, p };
    };
    const a = await mk('iso-vtd-a', 'vtd memory A');
    const b = await mk('iso-vtd-b', 'vtd memory B');
    expect(a.p).not.toBe(b.p);
    const ra = await a.g.dma('00:03.0', { pasid: a.p, addr: BENCH_BUFFER_VA, length: 12 });
    expect(ra.ok && dec(ra.data)).toBe('vtd memory A');
    await noAccess(b.g.dma('00:03.0', { pasid: a.p, addr: BENCH_BUFFER_VA, length: 12 }));
    await noAccess(a.g.dma('00:04.0', { pasid: b.p, addr: BENCH_BUFFER_VA, length: 12 }));
    expect(snapshotInvariants(await host.snapshot())).toEqual([]);
  });

  it('iommufd VMs using the same device-local PASID (VT-d without VCMD): each device reaches its own VM\'s memory only', async () => {
    const mk = async (name: string, text: string) => {
      const v = await bootVtdVm(host, { name, memory: MEM, vcmd: false, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0' }], pri: [], uapi: 'iommufd' });
      guests.push(v.vm);
      const proc = await GuestProcess.create(v.vm, v.alloc);
      await proc.mapNew(VA, 0x1000);
      await proc.write(VA, new TextEncoder().encode(text));
      await v.drv.bindProcess('00:03.0', proc, { pasid: 5 });
      return v.vm;
    };
    const a = await mk('iso-fd-a', 'fd memory of A');
    const b = await mk('iso-fd-b', 'fd memory of B');
    for (const [g, text] of [[a, 'fd memory of A'], [b, 'fd memory of B']] as const) {
      const r = await g.dma('00:03.0', { pasid: 5, addr: VA, length: 14 });
      expect(r.ok && dec(r.data)).toBe(text);
      // The VM's other device has nothing attached at PASID 5.
      await noAccess(g.dma('00:04.0', { pasid: 5, addr: VA, length: 14 }));
    }
    const s = await host.snapshot();
    expect(snapshotInvariants(s)).toEqual([]);
    // No PASID was allocated: the same value is each device's own.
    expect([vmIn(s, 'iso-fd-a')!.set.used, vmIn(s, 'iso-fd-b')!.set.used]).toEqual([0, 0]);
  });
});
