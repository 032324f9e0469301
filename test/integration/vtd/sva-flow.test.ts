/**
 * The virtual VT-d driven as a Linux guest driver drives it — registers and guest memory only,
 * through the GuestHandle — against a host in another process (issue 7 acceptance).
 */
import { describe, it, expect } from 'vitest';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { SVA_DID } from '../../../guest/driver/vtd-driver.js';
import { decodeCap, decodeEcap } from '../../../src/vtd/cap-ecap.js';
import { DMAR, FSTS } from '../../../src/vtd/registers.js';
import { FaultReason } from '../../../src/vtd/fault.js';
import { VCMD_CMD, VCMD_STATUS } from '../../../src/vtd/vcmd.js';
import { encode } from '../../../src/vtd/layout.js';
import { PASID_TABLE_ENTRY, PGTT } from '../../../src/vtd/pasid-entry.js';
import type { VtdModel } from '../../../guest/vtd/index.js';
import { PF, PF2, UAPIS, bootVtdVm, dec, enc, hostPerFile, pasidRoutes, servicePageRequestsByMapping, vmSnapshot as snapshotOf, waitForFsts, withVtdVm, type Uapi, type VtdVm } from './helpers.js';

const MEM = 64 * 1024 * 1024;

const host = hostPerFile();

/** A VM with both devices attached (PF with PRE), with the VCMD layout asked for. */
function vtdVm(name: string, opts: { vcmd?: '3.1' | '3.3'; pasidQuota?: number; uapi: Uapi }): () => Promise<VtdVm> {
  return () => bootVtdVm(host(), { name: `${name}-${opts.uapi}`, memory: MEM, devices: [{ bdf: PF }, { bdf: PF2 }], pri: [PF], uapi: opts.uapi, ...(opts.vcmd ? { vcmd: opts.vcmd } : {}), ...(opts.pasidQuota ? { pasidQuota: opts.pasidQuota } : {}) });
}

const vmSnapshot = (name: string) => snapshotOf(host(), name);
const waitForFault = (vm: VtdVm['vm']) => waitForFsts(vm, FSTS.PPF);

async function fullFlow(layout: '3.1' | '3.3', uapi: Uapi) {
  const name = `sva-${layout}-${uapi}`;
  await withVtdVm(vtdVm(`sva-${layout}`, { vcmd: layout, uapi }), async ({ vm, alloc, drv }) => {
    // CAP/ECAP as docs/design.md §3.1 exposes them.
    const cap = decodeCap(await vm.readq(DMAR.CAP)).fields;
    const ecap = decodeEcap(await vm.readq(DMAR.ECAP)).fields;
    expect({ cm: cap.CM, sagaw: cap.SAGAW, fl1gp: cap.FL1GP, fl5lp: cap.FL5LP }).toEqual({ cm: 1n, sagaw: 4n, fl1gp: 1n, fl5lp: 1n });
    expect({ smts: ecap.SMTS, pasid: ecap.PASID, pss: ecap.PSS, flts: ecap.FLTS, slts: ecap.SLTS, nest: ecap.NEST, vcs: ecap.VCS, prs: ecap.PRS }).toEqual({
      smts: 1n, pasid: 1n, pss: 19n, flts: 1n, slts: 1n, nest: 0n, vcs: 1n, prs: 1n,
    });

    // A process with a 4-level first-level table and two data pages.
    const proc = await GuestProcess.create(vm, alloc, { levels: 4 });
    const vaA = 0x7f12_3456_0000n;
    const vaB = vaA + 0x1000n;
    await proc.mapNew(vaA, 0x2000);
    await proc.write(vaA, enc('page A from the CPU'));

    // SVA bind on both devices with one VCMD-allocated PASID.
    const pasid = await drv.bindProcess(PF2, proc);
    expect(pasid).toBeGreaterThan(0);
    await drv.bindProcess(PF, proc, { pasid });
    let snap = await vmSnapshot(name);
    const entry = snap!.pasids.find((p) => p.hpasid === pasid);
    if (uapi === 'vfio-sva') expect(entry?.gpasid).toBe(pasid);
    // iommufd: the VCMD PASID is a global PASID of the VM's set, attached with GLOBAL_PASID.
    else expect(snap!.iommufd!.devices.map((d) => d.pasids.find((x) => x.pasid === pasid)?.global)).toEqual([true, true]);
    const routes = pasidRoutes(snap, pasid);
    expect(routes.map((b) => b.pgtt)).toEqual(['nested', 'nested']);
    expect(routes[0]!.flptr).toBe(`0x${proc.pgd.toString(16)}`);

    // The device's DMA with that PASID reads and writes the process's memory.
    const rd = await vm.dma(PF2, { pasid, addr: vaA, length: 19 });
    expect(rd.ok && dec(rd.data!)).toBe('page A from the CPU');
    const wr = await vm.dma(PF2, { pasid, addr: vaB + 8n, data: enc('written by DMA') });
    expect(wr.ok).toBe(true);
    expect(dec(await proc.read(vaB + 8n, 14))).toBe('written by DMA');

    // Unmap page B and flush it: the DMA faults, and the fault record says why, where, which PASID.
    const un = await proc.unmap(vaB);
    await drv.flushRange(pasid, un.flush);
    const bad = await vm.dma(PF2, { pasid, addr: vaB + 0x10n, length: 4 });
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.fault.reason).toBe(FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT);
    await waitForFault(vm);
    const faults = await drv.readFaults();
    expect(faults).toHaveLength(1);
    expect(faults[0]).toMatchObject({ reason: FaultReason.SFL_2_FL_ENTRY_NOT_PRESENT, addr: vaB, pasid, sid: 0x20, fault: true });
    expect((await vm.readl(DMAR.FSTS)) & (FSTS.PPF | FSTS.PFO)).toBe(0);

    // With PRI the same access becomes a page request; mapping the page and answering success
    // lets the DMA complete.
    const pending = vm.dma(PF, { pasid, addr: vaB + 0x20n, data: enc('after a page fault') });
    const requests = await servicePageRequestsByMapping(drv, proc);
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ rid: 0x18, pasid, addr: vaB, write: true, lastInGroup: true });
    const done = await pending;
    expect(done.ok).toBe(true);
    expect(dec(await proc.read(vaB + 0x20n, 18))).toBe('after a page fault');

    // Teardown: unbind from both devices (the second frees the PASID through VCMD).
    await drv.unbind(PF, pasid, { free: false });
    await drv.unbind(PF2, pasid);
    snap = await vmSnapshot(name);
    expect(snap!.pasids).toEqual([]);
    expect(snap!.set.used).toBe(0);
    expect((vm.viommu as VtdModel).shadow().filter((e) => e.pasid !== null)).toEqual([]);
  });
}

describe.each(UAPIS)('VT-d SVA as a Linux guest drives it (host in another process), %s uAPI', (uapi) => {
  it('binds, translates, faults, pages in and tears down with the 3.1 VCMD layout', () => fullFlow('3.1', uapi));
  it('does the same with the 3.3 VCMD layout', () => fullFlow('3.3', uapi));

  for (const layout of ['3.1', '3.3'] as const) {
    it(`VCMD ${layout}: quota exhaustion, undefined command and foreign PASIDs give the layout's status codes`, async () => {
      const name = `quota-${layout}-${uapi}`;
      await withVtdVm(vtdVm(`quota-${layout}`, { vcmd: layout, pasidQuota: 2, uapi }), async ({ vm, drv }) => {
        const st = VCMD_STATUS[layout];
        const a = await drv.allocPasid();
        const b = await drv.allocPasid();
        expect(a).not.toBe(b);
        const r = await drv.vcmdStatus(VCMD_CMD.ALLOC_PASID);
        expect(r.sc).toBe(st.NO_PASID);
        expect((await vmSnapshot(name))!.set.used).toBe(2);
        expect((await drv.vcmdStatus(7)).sc).toBe(st.UNDEFINED_CMD);
        expect((await drv.vcmdStatus(VCMD_CMD.FREE_PASID, 0x9999)).sc).toBe(st.INVALID_PASID);
        await drv.freePasid(a);
        await drv.freePasid(b);
        expect((await vmSnapshot(name))!.set.used).toBe(0);
      });
    });
  }

  it('does not bind a PASID entry with reserved bits or PGTT 3; its use faults with 0x5a / 0x5b', async () => {
    const name = `invalid-entries-${uapi}`;
    await withVtdVm(vtdVm('invalid-entries', { uapi }), async ({ vm, alloc, drv }) => {
      const proc = await GuestProcess.create(vm, alloc);
      const va = 0x5000_0000n;
      await proc.mapNew(va, 0x1000);
      for (const [tweak, reason] of [
        [(w: bigint[]) => (w[0] = (w[0]! & ~(7n << 6n)) | (BigInt(PGTT.NESTED) << 6n)), FaultReason.SPT_4_INVALID_ENTRY],
        [(w: bigint[]) => (w[2] = w[2]! | (1n << 9n)), FaultReason.SPT_3_PASID_ENTRY_RESERVED],
      ] as const) {
        const pasid = await drv.allocPasid();
        const words = drv.firstLevelEntry(proc);
        tweak(words);
        await drv.writePasidEntry(PF2, pasid, words);
        await drv.pasidFlushCaches(SVA_DID, pasid);
        const snap = await vmSnapshot(name);
        expect(pasidRoutes(snap, pasid)).toEqual([]);
        const shadow = (vm.viommu as VtdModel).shadow().find((e) => e.pasid === pasid);
        expect(shadow?.binding).toMatchObject({ kind: 'invalid', reason });
        const r = await vm.dma(PF2, { pasid, addr: va, length: 8 });
        expect(r).toMatchObject({ ok: false, fault: { reason, pasid } });
        await waitForFault(vm);
        const [rec] = await drv.readFaults();
        expect(rec).toMatchObject({ reason, pasid });
        await drv.unbind(PF2, pasid);
      }
    });
  });

  it('a PASID entry changed without a PASID-cache flush keeps its old translation until the flush', async () => {
    const name = `missing-flush-${uapi}`;
    await withVtdVm(vtdVm('missing-flush', { uapi }), async ({ vm, alloc, drv }) => {
      const va = 0x4000_0000n;
      const p1 = await GuestProcess.create(vm, alloc);
      const p2 = await GuestProcess.create(vm, alloc);
      await p1.mapNew(va, 0x1000);
      await p2.mapNew(va, 0x1000);
      await p1.write(va, enc('process one'));
      await p2.write(va, enc('process two'));
      const pasid = await drv.bindProcess(PF2, p1);
      const read = async () => {
        const r = await vm.dma(PF2, { pasid, addr: va, length: 11 });
        return r.ok ? dec(r.data!) : `fault 0x${r.fault.reason.toString(16)}`;
      };
      expect(await read()).toBe('process one');
      // Point the entry at process two, no flush: the host still translates through process one.
      await drv.writePasidEntry(PF2, pasid, drv.firstLevelEntry(p2));
      expect(await read()).toBe('process one');
      expect(pasidRoutes(await vmSnapshot(name), pasid)[0]!.flptr).toBe(`0x${p1.pgd.toString(16)}`);
      // The flush makes it visible.
      await drv.pasidFlushCaches(SVA_DID, pasid);
      expect(await read()).toBe('process two');
      expect(pasidRoutes(await vmSnapshot(name), pasid)[0]!.flptr).toBe(`0x${p2.pgd.toString(16)}`);
      await drv.unbind(PF2, pasid);
    });
  });
});
