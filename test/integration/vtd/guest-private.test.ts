/**
 * Guest-private PASIDs on VT-d without VCMD (issue 10, scheme "guest-private, SPID"): the guest
 * picks its own PASIDs; the model allocates a host PASID per guest PASID, binds with GPASID_VAL
 * (the host records the guest PASID as the SPID), programs pf devices with the host PASID, lets
 * an adi use the guest PASID (the VDCM translates it), and shows the guest its own PASID in
 * faults and page requests. Driven through registers and guest memory, host in another process.
 */
import { describe, it, expect } from 'vitest';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { decodeEcap } from '../../../src/vtd/cap-ecap.js';
import { DMAR, FSTS } from '../../../src/vtd/registers.js';
import { FaultReason } from '../../../src/vtd/fault.js';
import type { VtdModel } from '../../../guest/vtd/index.js';
import { PF, PF2, bootVtdVm, dec, enc, hostPerFile, pasidRoutes, servicePageRequestsByMapping, vmSnapshot as snapshotOf, waitForFsts, withVtdVm } from './helpers.js';

const ADI = '00:05.0';
const MEM = 32 * 1024 * 1024;
const GPASID = 5;

const host = hostPerFile();

/** A VM without VCMD: pf (with PRE), pf and adi attached, and a process with 4-level tables. */
function guestPrivateVm(name: string, pasidQuota?: number) {
  return async () => {
    const v = await bootVtdVm(host(), {
      name,
      memory: MEM,
      vcmd: false,
      devices: [{ bdf: PF }, { bdf: PF2 }, { bdf: ADI, kind: 'adi' }],
      pri: [PF],
      ...(pasidQuota !== undefined ? { pasidQuota } : {}),
    });
    const proc = await GuestProcess.create(v.vm, v.alloc, { levels: 4 });
    return { ...v, proc, model: (v.vm as unknown as { viommu: VtdModel }).viommu };
  };
}

const vmSnapshot = async (name: string) => (await snapshotOf(host(), name))!;

describe('VT-d without VCMD: guest-private PASIDs mapped by SPID', () => {
  it('binds a guest-chosen PASID on pf and adi devices through a host PASID of its own; DMA, faults and page requests speak the guest PASID', async () => {
    const name = 'gp-flow';
    await withVtdVm(guestPrivateVm(name), async ({ vm, drv, proc, model }) => {
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
      await waitForFsts(vm, FSTS.PPF); // its fault record (the host reports it on its own channel)
      const aliasFaults = await drv.readFaults();
      expect(aliasFaults.length).toBeGreaterThan(0);
      for (const f of aliasFaults) expect(f.pasid).not.toBe(GPASID);

      // Unmap + page-selective flush (forwarded with the host PASID): the DMA faults, and both the
      // DMA result and the fault record carry the guest PASID.
      const un = await proc.unmap(va + 0x1000n);
      await drv.flushRange(GPASID, un.flush);
      const bad = await vm.dma(PF2, { pasid: GPASID, addr: va + 0x1010n, length: 4 });
      expect(bad).toMatchObject({ ok: false, fault: { reason: FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT, pasid: GPASID } });
      await waitForFsts(vm, FSTS.PPF);
      const faults = await drv.readFaults();
      expect(faults.find((f) => f.addr === va + 0x1000n)).toMatchObject({ reason: FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT, pasid: GPASID, sid: 0x20 });

      // With PRI the page request shows the guest PASID; the success response (sent back with the
      // host PASID) lets the DMA complete.
      const pending = vm.dma(PF, { pasid: GPASID, addr: va + 0x1020n, data: enc('after a page request') });
      const requests = await servicePageRequestsByMapping(drv, proc);
      expect(requests).toHaveLength(1);
      expect(requests[0]).toMatchObject({ rid: 0x18, pasid: GPASID });
      expect((await pending).ok).toBe(true);
      expect(dec(await proc.read(va + 0x1020n, 20))).toBe('after a page request');

      // Unbinding everywhere frees the host PASID.
      for (const bdf of [PF, PF2, ADI]) await drv.unbind(bdf, GPASID);
      expect(model.pasidMappings()).toEqual([]);
      expect((await vmSnapshot(name)).pasids).toEqual([]);
    });
  });

  it('a guest PASID beyond the quota is not bound (ENOSPC), allocates nothing, and its DMA faults', async () => {
    const name = 'gp-quota';
    await withVtdVm(guestPrivateVm(name, 1), async ({ vm, drv, proc, model }) => {
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
    });
    expect((await vmSnapshot(name))?.pasids ?? []).toEqual([]);
  });
});

/** The same guest without VCMD on iommufd (pf devices only: an ADI needs the VFIO SVA uAPI's VDCM). */
function deviceLocalVm(name: string, pasidQuota?: number) {
  return async () => {
    const v = await bootVtdVm(host(), { name, memory: MEM, vcmd: false, devices: [{ bdf: PF }, { bdf: PF2 }], pri: [PF], uapi: 'iommufd', ...(pasidQuota !== undefined ? { pasidQuota } : {}) });
    const proc = await GuestProcess.create(v.vm, v.alloc, { levels: 4 });
    return { ...v, proc, model: (v.vm as unknown as { viommu: VtdModel }).viommu };
  };
}

describe('VT-d without VCMD on iommufd: guest-chosen PASIDs are the devices\' own PASIDs', () => {
  it('attaches the guest PASID as is — no host PASID, no SPID, nothing charged — and DMA, faults and page requests use it', async () => {
    const name = 'gp-iommufd';
    await withVtdVm(deviceLocalVm(name), async ({ vm, drv, proc, model }) => {
      const va = 0x7f00_0000_0000n;
      await proc.mapNew(va, 0x2000);
      await proc.write(va, enc('device-local page'));
      for (const bdf of [PF, PF2]) await drv.bindProcess(bdf, proc, { pasid: GPASID });
      expect(model.pasidMappings()).toEqual([]);
      expect(model.devicePasid(0x20, GPASID)).toBe(GPASID);
      const snap = await vmSnapshot(name);
      expect(snap.pasids).toEqual([]);
      expect(snap.set.used).toBe(0);
      expect(pasidRoutes(snap, GPASID)).toEqual([PF, PF2].map((bdf) => ({ bdf, pgtt: 'nested', flptr: `0x${proc.pgd.toString(16)}` })));
      expect(snap.iommufd!.devices.every((d) => d.pasids.every((p) => !p.global))).toBe(true);

      const rd = await vm.dma(PF2, { pasid: GPASID, addr: va, length: 17 });
      expect(rd.ok && dec(rd.data!)).toBe('device-local page');
      const un = await proc.unmap(va + 0x1000n);
      await drv.flushRange(GPASID, un.flush);
      const bad = await vm.dma(PF2, { pasid: GPASID, addr: va + 0x1010n, length: 4 });
      expect(bad).toMatchObject({ ok: false, fault: { reason: FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT, pasid: GPASID } });
      await waitForFsts(vm, FSTS.PPF);
      expect((await drv.readFaults()).find((f) => f.addr === va + 0x1000n)).toMatchObject({ pasid: GPASID, sid: 0x20 });

      const pending = vm.dma(PF, { pasid: GPASID, addr: va + 0x1020n, data: enc('after a page request') });
      const requests = await servicePageRequestsByMapping(drv, proc);
      expect(requests).toHaveLength(1);
      expect(requests[0]).toMatchObject({ rid: 0x18, pasid: GPASID });
      expect((await pending).ok).toBe(true);

      for (const bdf of [PF, PF2]) await drv.unbind(bdf, GPASID);
      expect(pasidRoutes(await vmSnapshot(name), GPASID)).toEqual([]);
    });
  });

  it('the PASID quota is the IOASID set\'s: device-local PASIDs beyond it are attached all the same', async () => {
    const name = 'gp-iommufd-quota';
    await withVtdVm(deviceLocalVm(name, 1), async ({ vm, drv, proc }) => {
      const va = 0x4000_0000n;
      await proc.mapNew(va, 0x1000);
      await drv.bindProcess(PF2, proc, { pasid: 9 });
      await drv.bindProcess(PF2, proc, { pasid: 10 });
      const snap = await vmSnapshot(name);
      expect(snap.set).toEqual({ quota: 1, used: 0 });
      expect([9, 10].map((p) => pasidRoutes(snap, p).length)).toEqual([1, 1]);
      for (const p of [9, 10]) expect((await vm.dma(PF2, { pasid: p, addr: va, length: 4 })).ok).toBe(true);
    });
  });
});
