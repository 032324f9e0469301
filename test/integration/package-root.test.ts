/**
 * The package root as a harness imports it (`from 'vsva'`), driving the README's tour: a spawned
 * host, a VT-d guest, registers read and written qtest-style, a VCMD allocation round trip, and
 * the host snapshot showing the PASID.
 */
import { describe, it, expect } from 'vitest';
import { startHost, startGuest, vtd, type HostSnapshot } from 'vsva';

describe("the package root 'vsva'", () => {
  it('runs the README tour: VCMD allocation through registers shows up in the host snapshot', async () => {
    const host = await startHost();
    try {
      const vm = await startGuest({ socket: host.socket, name: 'tour', viommu: 'vtd', memory: 16 * 1024 * 1024 });
      try {
        const cap = vtd.decodeCap(await vm.readq(vtd.DMAR.CAP));
        const ecap = vtd.decodeEcap(await vm.readq(vtd.DMAR.ECAP));
        expect(cap.fields.CM).toBe(1n);
        expect(ecap.fields.VCS).toBe(1n);
        expect(ecap.fields.PSS).toBe(19n);

        const { VCMD: vcmd, VCRSP: vcrsp } = vtd.VCMD_LAYOUTS["3.1"].offsets;
        await vm.writeq(vcmd, vtd.encodeVcmd('3.1', vtd.VCMD_CMD.ALLOC_PASID));
        let rsp = vtd.decodeVcrsp('3.1', await vm.readq(vcrsp));
        for (let i = 0; rsp.ip && i < 1000; i++) rsp = vtd.decodeVcrsp('3.1', await vm.readq(vcrsp));
        expect(rsp).toMatchObject({ ip: false, sc: 0 });
        expect(rsp.pasid).toBeGreaterThan(0);

        const snap: HostSnapshot = await host.snapshot();
        const mine = snap.vms.find((v) => v.name === 'tour')!;
        expect(mine.set.used).toBe(1);
        expect(mine.pasids.map((p) => p.hpasid)).toEqual([rsp.pasid]);
      } finally {
        await vm.close();
      }
    } finally {
      await host.close();
    }
  });
});
