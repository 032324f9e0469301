/**
 * The IOMMUFD_* family through the wire: a host service and front-ends over the in-memory
 * transport. A VM chooses iommufd at VM_SETUP (with VSVA_IOMMUFD negotiated), builds
 * IOAS → nest parent → nested HWPT → PASID attach, and its device translates through the
 * guest's first-level table; the errno cases come back as status replies; a VM of the VFIO SVA
 * uAPI on the same host gets EOPNOTSUPP for the family; the snapshot shows the objects.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { HostServer } from '../../../../host/server/index.js';
import {
  FrontendClient, DEFAULT_PROTOCOL_FEATURES, ProtocolFeature, VM_SETUP_UAPI_IOMMUFD, HwptVtdS1Struct, VtdS1InvalidateStruct, structBytes,
  DeviceDmaOp, DeviceDmaFlag, DeviceConfigFlag,
} from '../../../../vhost/index.js';
import { IOMMU_HWPT_ALLOC, IOMMUFD_ATTACH, IOMMUFD_DEVICE_CAP, type FaultEventMessage } from '../../../../vhost/messages/iommufd.js';
import type { VmSnapshot } from '../../../../src/api/types.js';
import { FirstLevelTables, errnoOf } from '../../../integration/host/client.js';

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup.length = 0;
});

async function guest(host: HostServer, name: string, opts: { iommufd?: boolean; want?: bigint } = {}) {
  const fe = await FrontendClient.connect({ connect: host.connector() });
  cleanup.push(() => fe.close());
  await fe.handshake({ want: opts.want ?? DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD });
  const ram = GuestRam.create(4 * 1024 * 1024, { backing: 'inproc' });
  cleanup.push(() => ram.backing.close());
  return { fe, ram, setup: () => fe.setupVm({ name, pasid_quota: 8, flags: 1 | (opts.iommufd === false ? 0 : VM_SETUP_UAPI_IOMMUFD), session_token: new Uint8Array(16) }) };
}

const MONITOR_TOKEN = 'iommufd-wire-monitor-token';

function makeHost(): HostServer {
  const host = new HostServer({ graceMs: 0, monitorToken: MONITOR_TOKEN });
  cleanup.push(() => host.close());
  return host;
}

describe('iommufd over the wire', () => {
  it('refuses to change the memory table while an IOAS maps guest memory (EBUSY), accepts it once unmapped', async () => {
    const host = makeHost();
    const { fe, ram, setup } = await guest(host, 'fd-mem');
    await setup();
    const region = { guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path };
    await fe.call('SET_MEM_TABLE', { regions: [region] });
    const { out_id: ioas } = await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 });
    await fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: 7, user_va: 0n, length: BigInt(ram.size), iova: 0n });
    const smaller = { ...region, memory_size: BigInt(ram.size / 2) };
    expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [smaller] }))).toBe('EBUSY');
    // Unchanged: the same table is still a re-announcement, and the mapping still translates.
    await fe.call('SET_MEM_TABLE', { regions: [region] });
    expect((await fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: ioas, iova: 0n, length: BigInt(ram.size) })).length).toBe(BigInt(ram.size));
    await fe.call('SET_MEM_TABLE', { regions: [smaller] });
  });

  it('builds a nested PASID translation and reports entry errors with the handled count', async () => {
    const host = makeHost();
    const { fe, ram, setup } = await guest(host, 'fd0');
    await setup();
    await fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path }] });
    const { out_id: ioas } = await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 });
    expect((await fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: 7, user_va: 0n, length: BigInt(ram.size), iova: 0n })).iova).toBe(0n);
    const { out_id: dev } = await fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: IOMMUFD_DEVICE_CAP.ATS | IOMMUFD_DEVICE_CAP.PRI });
    const info = await fe.call('IOMMUFD_GET_HW_INFO', { dev_id: dev, flags: 0 });
    expect(info).toMatchObject({ out_data_type: 1, out_max_pasid_log2: 20, cap_reg: host.iommu.capabilities().cap });
    const none = { data_type: 0, data_len: 0, fault_id: 0, data: new Uint8Array(0) };
    const { out_id: parent } = await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID, dev_id: dev, pt_id: ioas, ...none });
    const fl = new FirstLevelTables(ram, 4096, 0x10_0000);
    const root = fl.newRoot();
    fl.map(root, 0x4000_0000n, 0x20_0000);
    ram.write(0x20_0000, new Uint8Array([0x5a]));
    const s1 = structBytes(HwptVtdS1Struct, [{ flags: 0n, pgtbl_addr: BigInt(root), addr_width: 48, __reserved: 0 }]);
    const { out_id: nested } = await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.PASID, dev_id: dev, pt_id: parent, data_type: 1, data_len: 24, fault_id: 0, data: s1 });
    expect((await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: IOMMUFD_ATTACH.PASID, pasid: 3, pt_id: nested })).hwpt_id).toBe(nested);

    const vm = host.vm('fd0')!;
    const hostRid = vm.iommufd!.deviceByRid(0x18)!.hostRid;
    const r = host.iommu.dmaRead({ rid: hostRid, pasid: 3, addr: 0x4000_0000n }, 1);
    expect(r.ok && r.data[0]).toBe(0x5a);

    const entries = structBytes(VtdS1InvalidateStruct, [
      { addr: 0x4000_0000n, npages: 1n, flags: 0, __reserved: 0 },
      { addr: 0x4000_0000n, npages: 1n, flags: 4, __reserved: 0 },
    ]);
    expect(await fe.call('IOMMUFD_HWPT_INVALIDATE', { hwpt_id: nested, data_type: 0, entry_len: 24, entry_num: 2, data: entries })).toEqual({ entry_num: 1, first_error: -95 });
    expect(await errnoOf(fe.call('IOMMUFD_HWPT_INVALIDATE', { hwpt_id: parent, data_type: 0, entry_len: 24, entry_num: 1, data: entries.subarray(0, 24) }))).toBe('ENOENT');
    expect(await errnoOf(fe.call('IOMMUFD_DESTROY', { id: parent }))).toBe('EBUSY');
    expect(await errnoOf(fe.call('IOMMUFD_DESTROY', { id: 4242 }))).toBe('ENOENT');
    expect(await errnoOf(fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: 7, user_va: 0n, length: 0x1000n, iova: 0x1000n }))).toBe('EEXIST');
    expect(await errnoOf(fe.call('IOMMUFD_HWPT_ALLOC', { flags: 1 << 9, dev_id: dev, pt_id: ioas, ...none }))).toBe('EOPNOTSUPP');
    const ranges = await fe.call('IOMMUFD_IOAS_IOVA_RANGES', { ioas_id: ioas });
    expect(ranges.count).toBe(2); // the interrupt window is reserved while the device is attached

    const snap = JSON.parse((await fe.call('GET_STATE')).json) as { vms: VmSnapshot[] };
    const me = snap.vms.find((v) => v.name === 'fd0')!;
    expect(me.uapi).toBe('iommufd');
    expect(me.devices).toEqual([{ bdf: '00:03.0', kind: 'pf' }]);
    expect(me.iommufd!.hwpts.map((h) => [h.id, h.kind, h.parent ?? h.ioas])).toEqual([[parent, 'paging', ioas], [nested, 'nested', parent]]);
    expect(me.iommufd!.devices[0]).toMatchObject({ id: dev, bdf: '00:03.0', pasids: [{ pasid: 3, hwpt: nested, global: false }] });

    // The dashboard's counters: one bind (nested HWPT at PASID 3), one handled invalidation entry.
    expect(host.stats().vms['fd0']).toMatchObject({ binds: 1, unbinds: 0, invalidations: 1 });
    await fe.call('IOMMUFD_DEVICE_DETACH', { dev_id: dev, flags: IOMMUFD_ATTACH.PASID, pasid: 3, pt_id: 0 });
    expect(host.stats().vms['fd0']).toMatchObject({ binds: 1, unbinds: 1, invalidations: 1 });
    await fe.call('IOMMUFD_DESTROY', { id: nested });
    await fe.call('IOMMUFD_DESTROY', { id: parent });
  });

  it('serves a VFIO SVA VM beside an iommufd VM: the family is EOPNOTSUPP there; VM_SETUP needs the feature bit', async () => {
    const host = makeHost();
    const a = await guest(host, 'fd1');
    await a.setup();
    const b = await guest(host, 'sva1', { iommufd: false });
    await b.setup();
    expect(await errnoOf(b.fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 }))).toBe('EOPNOTSUPP');
    expect((await a.fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 })).out_id).toBe(1);
    // Both VMs: the whole host, read with the monitor token (docs/protocol.md §10.9).
    const snap = JSON.parse((await b.fe.call('GET_STATE', { cursor: 0, max_vms: 8, monitor_token: MONITOR_TOKEN })).json) as { vms: VmSnapshot[] };
    expect(snap.vms.map((v) => [v.name, v.uapi, v.iommufd === undefined])).toEqual([['fd1', 'iommufd', false], ['sva1', 'vfio-sva', true]]);

    const old = await guest(host, 'old', { want: DEFAULT_PROTOCOL_FEATURES });
    expect(await errnoOf(old.setup())).toBe('EOPNOTSUPP');
    expect(await errnoOf(old.fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 }))).toBe('EOPNOTSUPP');
  });

  it('tears the VM iommufd objects down with the VM', async () => {
    const host = makeHost();
    const { fe, ram, setup } = await guest(host, 'fd2');
    await setup();
    await fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path }] });
    const { out_id: ioas } = await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 });
    await fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: 7, user_va: 0n, length: 0x10_0000n, iova: 0n });
    const { out_id: dev } = await fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: 0 });
    await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: 0, pasid: 0, pt_id: ioas });
    expect(host.iommu.stats().devices).toBe(1);
    expect(host.iommu.stats().domains).toBe(3); // identity, the container's GPA domain, the automatic HWPT
    host.vm('fd2')!.teardown();
    expect(host.iommu.stats().devices).toBe(0);
    expect(host.iommu.stats().domains).toBe(1);
  });

  it('DMA of a bound device: nested translation, stale until HWPT_INVALIDATE, a page fault through the fault queue', async () => {
    const host = makeHost();
    const { fe, ram, setup } = await guest(host, 'fd3');
    await setup();
    await fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path }] });
    const { out_id: ioas } = await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 });
    await fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: 7, user_va: 0n, length: BigInt(ram.size), iova: 0n });
    const { out_id: dev } = await fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: IOMMUFD_DEVICE_CAP.ATS | IOMMUFD_DEVICE_CAP.PRI });
    await fe.call('DEVICE_CONFIG', { rid: 0x18, flags: DeviceConfigFlag.PRI_ENABLE | DeviceConfigFlag.ATS_ENABLE });
    const { out_id: fault } = await fe.call('IOMMUFD_FAULT_QUEUE_ALLOC', { flags: 0 });
    const none = { data_type: 0, data_len: 0, fault_id: 0, data: new Uint8Array(0) };
    const { out_id: parent } = await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID, dev_id: dev, pt_id: ioas, ...none });
    const fl = new FirstLevelTables(ram, 4096, 0x10_0000);
    const root = fl.newRoot();
    fl.map(root, 0x4000_0000n, 0x20_0000);
    ram.write(0x20_0000, new Uint8Array([0x11]));
    ram.write(0x30_0000, new Uint8Array([0x22]));
    const s1 = structBytes(HwptVtdS1Struct, [{ flags: 0n, pgtbl_addr: BigInt(root), addr_width: 48, __reserved: 0 }]);
    const { out_id: nested } = await fe.call('IOMMUFD_HWPT_ALLOC', {
      flags: IOMMU_HWPT_ALLOC.PASID | IOMMU_HWPT_ALLOC.FAULT_ID_VALID, dev_id: dev, pt_id: parent, data_type: 1, data_len: 24, fault_id: fault, data: s1,
    });
    await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: IOMMUFD_ATTACH.PASID, pasid: 3, pt_id: nested });
    const read = (addr: bigint, pasid = 3) => fe.call('DEVICE_DMA', { rid: 0x18, op: DeviceDmaOp.READ, flags: DeviceDmaFlag.PASID_VALID, pasid, addr, length: 1 });
    expect((await read(0x4000_0000n)).data?.[0]).toBe(0x11);
    fl.map(root, 0x4000_0000n, 0x30_0000);
    expect((await read(0x4000_0000n)).data?.[0]).toBe(0x11); // stale until flushed
    const one = structBytes(VtdS1InvalidateStruct, [{ addr: 0x4000_0000n, npages: 1n, flags: 0, __reserved: 0 }]);
    expect(await fe.call('IOMMUFD_HWPT_INVALIDATE', { hwpt_id: nested, data_type: 0, entry_len: 24, entry_num: 1, data: one })).toEqual({ entry_num: 1, first_error: 0 });
    expect((await read(0x4000_0000n)).data?.[0]).toBe(0x22);
    // a PASID with nothing attached has no PASID-table entry
    expect((await read(0x4000_0000n, 4)).status).not.toBe(0);

    // a page fault: the group is pushed on the backend channel (IOMMUFD_FAULT); the guest maps the
    // page and answers by cookie on the main channel, where the DMA's reply is still owed (§8:
    // later requests are handled, their replies wait), so it pipelines the response.
    const events: FaultEventMessage[] = [];
    let got: () => void = () => {};
    const arrived = new Promise<void>((r) => (got = r));
    fe.onBackendMessage((ev) => {
      if (ev.name === 'IOMMUFD_FAULT') {
        events.push(ev.msg);
        got();
      }
    });
    const pending = read(0x5000_0000n);
    await arrived;
    expect(events).toMatchObject([{ fault_id: fault, dev_id: dev, pasid: 3, addr: 0x5000_0000n, flags: 3, perm: 1 }]);
    fl.map(root, 0x5000_0000n, 0x20_0000);
    const bad = errnoOf(fe.call('IOMMUFD_FAULT_RESPOND', { fault_id: fault, cookie: events[0]!.cookie + 1, code: 0 }));
    const good = fe.call('IOMMUFD_FAULT_RESPOND', { fault_id: fault, cookie: events[0]!.cookie, code: 0 });
    expect((await pending).data?.[0]).toBe(0x11);
    expect(await bad).toBe('EINVAL');
    await good;
    expect((await fe.call('IOMMUFD_FAULT_READ', { fault_id: fault, max_records: 8 })).count).toBe(0); // pushed groups count as read
  });

  it('a VM resumed with its token keeps its uAPI and its objects', async () => {
    const host = new HostServer({ graceMs: 5000 });
    cleanup.push(() => host.close());
    const a = await guest(host, 'fd4');
    const { session_token } = await a.setup();
    const { out_id: ioas } = await a.fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 });
    a.fe.close();
    const fe = await FrontendClient.connect({ connect: host.connector() });
    cleanup.push(() => fe.close());
    await fe.handshake({ want: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD });
    let r = await fe.call('VM_SETUP', { name: 'fd4', pasid_quota: 8, flags: 1, session_token }).catch(() => null);
    for (let i = 0; r === null && i < 50; i++) {
      await new Promise((res) => setTimeout(res, 10)); // the old connection's close reaches the host
      r = await fe.call('VM_SETUP', { name: 'fd4', pasid_quota: 8, flags: 1, session_token }).catch(() => null);
    }
    expect(r?.flags).toBe(1); // RESUMED
    expect(host.vm('fd4')!.uapi).toBe('iommufd');
    expect(await errnoOf(fe.call('IOMMUFD_DESTROY', { id: ioas + 1 }))).toBe('ENOENT');
    await fe.call('IOMMUFD_DESTROY', { id: ioas });
  });
});
