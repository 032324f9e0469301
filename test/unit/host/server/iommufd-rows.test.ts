/**
 * The PASID table rows of an iommufd VM (host/server/pasid-rows.ts with the bindings of
 * host/iommufd/snapshot.ts): a global PASID attached to a nested HWPT shows the nested binding
 * with its first-level table; REPLACE to another nested HWPT — which keeps the PASID's one IOASID
 * reference, so no core change listener fires — shows the new table at the next read; DETACH
 * leaves the row unbound. A device-local PASID has no row (it is not in the IOASID core).
 */
import { describe, it, expect, afterEach } from 'vitest';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { HostServer } from '../../../../host/server/index.js';
import { FrontendClient, DEFAULT_PROTOCOL_FEATURES, ProtocolFeature, VM_SETUP_UAPI_IOMMUFD, HwptVtdS1Struct, structBytes } from '../../../../vhost/index.js';
import { IOMMU_HWPT_ALLOC, IOMMUFD_ATTACH, IOMMUFD_DEVICE_CAP } from '../../../../vhost/messages/iommufd.js';
import type { PasidSnapshot, VmSnapshot } from '../../../../src/api/types.js';

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup.length = 0;
});

const NONE = { data_type: 0, data_len: 0, fault_id: 0, data: new Uint8Array(0) };

describe('PASID rows of an iommufd VM', () => {
  it('show a global PASID’s attachment, follow REPLACE and DETACH, and leave device-local PASIDs out', async () => {
    const host = new HostServer({ graceMs: 0 });
    cleanup.push(() => host.close());
    const fe = await FrontendClient.connect({ connect: host.connector() });
    cleanup.push(() => fe.close());
    await fe.handshake({ want: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD });
    await fe.setupVm({ name: 'fd', pasid_quota: 8, flags: 1 | VM_SETUP_UAPI_IOMMUFD, session_token: new Uint8Array(16) });
    const ram = GuestRam.create(4 * 1024 * 1024, { backing: 'inproc' });
    cleanup.push(() => ram.backing.close());
    await fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path }] });
    const ioas = (await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 })).out_id;
    await fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: 7, user_va: 0n, length: BigInt(ram.size), iova: 0n });
    const dev = (await fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: IOMMUFD_DEVICE_CAP.ATS })).out_id;
    const parent = (await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID, dev_id: dev, pt_id: ioas, ...NONE })).out_id;
    const nested = async (root: number) =>
      (await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.PASID, dev_id: dev, pt_id: parent, data_type: 1, data_len: 24, fault_id: 0, data: structBytes(HwptVtdS1Struct, [{ flags: 0n, pgtbl_addr: BigInt(root), addr_width: 48, __reserved: 0 }]) })).out_id;
    const a = await nested(0x10_0000);
    const b = await nested(0x20_0000);
    const rows = async (): Promise<PasidSnapshot[]> => (JSON.parse((await fe.call('GET_STATE')).json) as { vms: VmSnapshot[] }).vms[0]!.pasids;

    const { pasid } = await fe.call('PASID_ALLOC', { min: 1, max: 100 });
    expect((await rows()).find((r) => r.hpasid === pasid)).toMatchObject({ state: 'idle', bindings: [] });
    const GLOBAL = IOMMUFD_ATTACH.PASID | IOMMUFD_ATTACH.GLOBAL_PASID;
    await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: GLOBAL, pasid, pt_id: a });
    expect((await rows()).find((r) => r.hpasid === pasid)).toMatchObject({ state: 'active', users: ['iommufd'], bindings: [{ bdf: '00:03.0', pgtt: 'nested', flptr: '0x100000' }] });

    await fe.call('IOMMUFD_DEVICE_REPLACE', { dev_id: dev, flags: GLOBAL, pasid, pt_id: b });
    expect((await rows()).find((r) => r.hpasid === pasid)!.bindings).toEqual([{ bdf: '00:03.0', pgtt: 'nested', flptr: '0x200000' }]);

    // a device-local PASID: an attachment without a row
    await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: IOMMUFD_ATTACH.PASID, pasid: 77, pt_id: a });
    expect((await rows()).map((r) => r.hpasid)).toEqual([pasid]);

    await fe.call('IOMMUFD_DEVICE_DETACH', { dev_id: dev, flags: GLOBAL, pasid, pt_id: 0 });
    expect((await rows()).find((r) => r.hpasid === pasid)).toMatchObject({ state: 'idle', bindings: [] });
  });
});
