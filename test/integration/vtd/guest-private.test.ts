/**
 * Guest-private PASIDs on VT-d without VCMD (issue 10, scheme "guest-private, SPID"): the guest
 * picks its own PASIDs; the model allocates a host PASID per guest PASID, binds with GPASID_VAL
 * (the host records the guest PASID as the SPID), programs pf devices with the host PASID, lets
 * an adi use the guest PASID (the VDCM translates it), and shows the guest its own PASID in
 * faults and page requests. Driven through registers and guest memory, host in another process.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../../src/app/harness/start-guest.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { VtdDriver } from '../../../guest/driver/vtd-driver.js';
import { decodeEcap } from '../../../src/vtd/cap-ecap.js';
import { DMAR, FSTS } from '../../../src/vtd/registers.js';
import { FaultReason } from '../../../src/vtd/fault.js';
import type { VtdModel } from '../../../guest/vtd/index.js';

const PF = '00:03.0'; // PRI-capable, attached with PRE
const PF2 = '00:04.0'; // attached without PRE: translation faults are recorded
const ADI = '00:05.0';
const MEM = 32 * 1024 * 1024;
const GPASID = 5;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let host: StartedHost;

beforeAll(async () => {
  host = await startHost();
});

afterAll(async () => {
  await host?.close();
});

async function bootVm(name: string, pasidQuota?: number) {
  const vm = await startGuest({
    socket: host.socket,
    name,
    viommu: 'vtd',
    memory: MEM,
    vcmd: false,
    devices: [{ bdf: PF }, { bdf: PF2 }, { bdf: ADI, kind: 'adi' }],
    ...(pasidQuota !== undefined ? { pasidQuota } : {}),
  });
  const alloc = new PageAllocator(vm, { base: 0x10_0000n, size: MEM - 0x10_0000 });
  const drv = await VtdDriver.init(vm, alloc);
  await drv.attachDevice(PF, { pri: true });
  await drv.attachDevice(PF2);
  await drv.attachDevice(ADI);
  const proc = await GuestProcess.create(vm, alloc, { levels: 4 });
  return { vm, alloc, drv, proc, model: (vm as unknown as { viommu: VtdModel }).viommu };
}

async function vmSnapshot(name: string) {
  return (await host.snapshot()).vms.find((v) => v.name === name)!;
}

async function waitFor(vm: StartedGuest, bit: number): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (((await vm.readl(DMAR.FSTS)) & bit) !== 0) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error('no fault recorded');
}

describe('VT-d without VCMD: guest-private PASIDs mapped by SPID', () => {
  it('binds a guest-chosen PASID on pf and adi devices through a host PASID of its own; DMA, faults and page requests speak the guest PASID', async () => {
    const name = 'gp-flow';
    const { vm, drv, proc, model } = await bootVm(name);
    try {
      expect(decodeEcap(await vm.readq(DMAR.ECAP)).fields.VCS).toBe(0n);
      const va = 0x7f00_0000_0000n;
      await proc.mapNew(va, 0x2000);
      await proc.write(va, enc('guest-private page'));

      for (const bdf of [PF, PF2, ADI]) await drv.bindProcess(bdf, proc, { pasid: GPASID });
      const [m] = model.pasidMappings();
      expect(model.pasidMappings()).toHaveLength(1);
      expect(m!.gpasid).toBe(GPASID);
      expect(m!.hpasid).not.toBe(GPASID);

      // The host holds one PASID for the three bindings, with the guest PASID as its SPID.
      const snap = await vmSnapshot(name);
      expect(snap.pasids).toHaveLength(1);
      expect(snap.pasids[0]).toMatchObject({ hpasid: m!.hpasid, gpasid: GPASID });
      expect(snap.pasids[0]!.bindings.map((b) => b.pgtt)).toEqual(['nested', 'nested', 'nested']);
      expect(model.devicePasid(0x20, GPASID)).toBe(m!.hpasid);

      // DMA with the guest PASID: a pf is programmed with the host PASID, an adi with the guest's.
      const rd = await vm.dma(PF2, { pasid: GPASID, addr: va, length: 18 });
      expect(rd.ok && dec(rd.data!)).toBe('guest-private page');
      const wr = await vm.dma(ADI, { pasid: GPASID, addr: va + 0x1000n, data: enc('via the VDCM') });
      expect(wr.ok).toBe(true);
      expect(dec(await proc.read(va + 0x1000n, 12))).toBe('via the VDCM');

      // An unbound guest PASID whose value is the host PASID does not reach the bound tables.
      const alias = await vm.dma(PF2, { pasid: m!.hpasid, addr: va, length: 4 }).catch((e: unknown) => e);
      expect((alias as { ok?: boolean }).ok !== true).toBe(true);
      await waitFor(vm, FSTS.PPF); // its fault record (the host reports it on its own channel)
      const aliasFaults = await drv.readFaults();
      expect(aliasFaults.length).toBeGreaterThan(0);
      for (const f of aliasFaults) expect(f.pasid).not.toBe(GPASID);

      // Unmap + page-selective flush (forwarded with the host PASID): the DMA faults, and both the
      // DMA result and the fault record carry the guest PASID.
      const un = await proc.unmap(va + 0x1000n);
      await drv.flushRange(GPASID, un.flush);
      const bad = await vm.dma(PF2, { pasid: GPASID, addr: va + 0x1010n, length: 4 });
      expect(bad).toMatchObject({ ok: false, fault: { reason: FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT, pasid: GPASID } });
      await waitFor(vm, FSTS.PPF);
      const faults = await drv.readFaults();
      expect(faults.find((f) => f.addr === va + 0x1000n)).toMatchObject({ reason: FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT, pasid: GPASID, sid: 0x20 });

      // With PRI the page request shows the guest PASID; the success response (sent back with the
      // host PASID) lets the DMA complete.
      const pending = vm.dma(PF, { pasid: GPASID, addr: va + 0x1020n, data: enc('after a page request') });
      let requests: Awaited<ReturnType<VtdDriver['servicePageRequests']>> = [];
      for (let i = 0; i < 2000 && requests.length === 0; i++) {
        requests = await drv.servicePageRequests(async (req): Promise<'success'> => {
          await proc.mapNew(req.addr, 0x1000);
          return 'success';
        });
        if (requests.length === 0) await new Promise((r) => setTimeout(r, 1));
      }
      expect(requests).toHaveLength(1);
      expect(requests[0]).toMatchObject({ rid: 0x18, pasid: GPASID });
      expect((await pending).ok).toBe(true);
      expect(dec(await proc.read(va + 0x1020n, 20))).toBe('after a page request');

      // Unbinding everywhere frees the host PASID.
      for (const bdf of [PF, PF2, ADI]) await drv.unbind(bdf, GPASID);
      expect(model.pasidMappings()).toEqual([]);
      expect((await vmSnapshot(name)).pasids).toEqual([]);
    } finally {
      await vm.close();
    }
  });

  it('a guest PASID beyond the quota is not bound (ENOSPC), allocates nothing, and its DMA faults', async () => {
    const name = 'gp-quota';
    const { vm, drv, proc, model } = await bootVm(name, 1);
    try {
      const va = 0x4000_0000n;
      await proc.mapNew(va, 0x1000);
      await drv.bindProcess(PF2, proc, { pasid: 9 });
      await drv.bindProcess(PF2, proc, { pasid: 10 });
      expect(model.pasidMappings().map((x) => x.gpasid)).toEqual([9]);
      expect(model.shadow().find((e) => e.pasid === 10)?.binding).toMatchObject({ kind: 'refused', errno: 'ENOSPC' });
      const snap = await vmSnapshot(name);
      expect(snap.pasids.map((p) => p.gpasid)).toEqual([9]);
      expect((await vm.dma(PF2, { pasid: 9, addr: va, length: 4 })).ok).toBe(true);
      const r = await vm.dma(PF2, { pasid: 10, addr: va, length: 4 }).catch((e: unknown) => e);
      expect((r as { ok?: boolean }).ok !== true).toBe(true);
    } finally {
      await vm.close();
    }
    expect((await vmSnapshot(name))?.pasids ?? []).toEqual([]);
  });
});
