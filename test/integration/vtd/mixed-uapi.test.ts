/**
 * Two VMs of different host uAPIs on one host process (docs/protocol.md §13): a VT-d guest on the
 * VFIO SVA uAPI and the same guest on iommufd, driven alike (VCMD PASIDs, first-level bind, DMA,
 * flush), side by side and isolated — each VM's snapshot says its uAPI, the iommufd family is
 * refused to the VFIO SVA VM, and a device of one VM tagged with the other's PASID reaches nothing.
 */
import { describe, expect, it } from 'vitest';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { FrontendClient } from '../../../vhost/index.js';
import { ProtocolFeature } from '../../../vhost/wire/features.js';
import { DEFAULT_PROTOCOL_FEATURES } from '../../../vhost/roles/frontend.js';
import { errnoOf } from '../host/client.js';
import { PF, PF2, UAPIS, bootVtdVm, dec, enc, hostPerFile, pasidRoutes, vmSnapshot, type Uapi, type VtdVm } from './helpers.js';

const MEM = 32 * 1024 * 1024;
const VA = 0x7f00_0000_0000n;
const host = hostPerFile();

describe('a VFIO SVA VM and an iommufd VM on one host', () => {
  it('run the same guest side by side, each on its uAPI, and stay apart', async () => {
    const vms = new Map<Uapi, VtdVm & { proc: GuestProcess; pasid: number }>();
    try {
      for (const uapi of UAPIS) {
        const v = await bootVtdVm(host(), { name: `mixed-${uapi}`, memory: MEM, devices: [{ bdf: PF }, { bdf: PF2 }], pri: [PF], uapi });
        const proc = await GuestProcess.create(v.vm, v.alloc, { levels: 4 });
        await proc.mapNew(VA, 0x1000);
        await proc.write(VA, enc(`memory of the ${uapi} VM`));
        const pasid = await v.drv.bindProcess(PF2, proc);
        vms.set(uapi, { ...v, proc, pasid });
      }
      const a = vms.get('vfio-sva')!;
      const b = vms.get('iommufd')!;
      // VCMD PASIDs come from each VM's own IOASID set: distinct host PASIDs.
      expect(a.pasid).not.toBe(b.pasid);

      const snap = await host().snapshot();
      for (const [uapi, v] of vms) {
        const s = snap.vms.find((x) => x.name === `mixed-${uapi}`)!;
        expect(s.uapi).toBe(uapi);
        expect(s.iommufd === undefined).toBe(uapi === 'vfio-sva');
        expect(pasidRoutes(s, v.pasid)).toEqual([{ bdf: PF2, pgtt: 'nested', flptr: `0x${v.proc.pgd.toString(16)}` }]);
        const r = await v.vm.dma(PF2, { pasid: v.pasid, addr: VA, length: `memory of the ${uapi} VM`.length });
        expect(r.ok && dec(r.data!)).toBe(`memory of the ${uapi} VM`);
      }

      // Each VM's device tagged with the other VM's PASID has no PASID entry for it: a fault
      // (PASID-table entry not present), never the other VM's memory.
      for (const [from, to] of [[a, b], [b, a]] as const) {
        const r = await from.vm.dma(PF2, { pasid: to.pasid, addr: VA, length: 8 });
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.fault.reason).not.toBe(0);
      }

      // The iommufd family is refused to a VM of the VFIO SVA uAPI (EOPNOTSUPP) and the VFIO SVA
      // bind is not the iommufd VM's way in (its devices were never DEVICE_ADDed): a client of
      // its own, on a fresh VM of the VFIO SVA uAPI.
      const fe = await FrontendClient.connect({ path: host().socket });
      try {
        await fe.handshake({ want: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD });
        await fe.setupVm({ name: 'mixed-probe', pasid_quota: 4, flags: 1, session_token: new Uint8Array(16) });
        expect(await errnoOf(fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 }))).toBe('EOPNOTSUPP');
      } finally {
        fe.close();
      }

      // Unbinding on each leaves the other untouched.
      await a.drv.unbind(PF2, a.pasid);
      const r = await b.vm.dma(PF2, { pasid: b.pasid, addr: VA, length: 'memory of the iommufd VM'.length });
      expect(r.ok && dec(r.data!)).toBe('memory of the iommufd VM');
      const after = await vmSnapshot(host(), 'mixed-iommufd');
      expect(pasidRoutes(after, b.pasid)).toHaveLength(1);
      await b.drv.unbind(PF2, b.pasid);
      expect(pasidRoutes(await vmSnapshot(host(), 'mixed-iommufd'), b.pasid)).toEqual([]);
      const gone = await b.vm.dma(PF2, { pasid: b.pasid, addr: VA, length: 4 });
      expect(gone.ok).toBe(false);
      if (!gone.ok) expect(gone.fault.reason).not.toBe(0);
    } finally {
      for (const v of vms.values()) await v.vm.close();
    }
  });
});
