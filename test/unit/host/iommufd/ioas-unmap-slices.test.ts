/**
 * IOMMUFD_IOAS_UNMAP over more areas than one slice (IOAS_SLICE_AREAS, host/iommufd/ioas.ts),
 * and a paging HWPT built from such an IOAS (filled in slices: IommufdContext.newPaging), through
 * the wire: another VM is answered while the request is in progress; the same VM's later requests
 * wait behind it and keep their order (docs/protocol.md §8); a VM released meanwhile is released
 * whole. Behaviour only — timing is in the fairness bench.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { HostServer } from '../../../../host/server/index.js';
import { IOAS_SLICE_AREAS } from '../../../../host/iommufd/ioas.js';
import { FrontendClient, DEFAULT_PROTOCOL_FEATURES, ProtocolFeature, VM_SETUP_UAPI_IOMMUFD } from '../../../../vhost/index.js';
import { IOMMU_HWPT_ALLOC, IOMMUFD_DEVICE_CAP } from '../../../../vhost/messages/iommufd.js';
import { errnoOf } from '../../../integration/host/client.js';
import { waitFor } from '../../../support/wait.js';
import { FIXED_RW } from './fixture.js';

const PAGE = 0x1000n;
/** Areas: enough for several slices. */
const N = IOAS_SLICE_AREAS * 3 + 100;
/** Area i: one page at IOVA i·8 KiB (a hole after each), guest page i mod 256. */
const iovaOf = (i: number) => BigInt(i) * 2n * PAGE;

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup.length = 0;
});

async function iommufdVm(host: HostServer, name: string) {
  const fe = await FrontendClient.connect({ connect: host.connector() });
  cleanup.push(() => fe.close());
  await fe.handshake({ want: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD });
  const ram = GuestRam.create(1024 * 1024, { backing: 'inproc' });
  cleanup.push(() => ram.backing.close());
  await fe.setupVm({ name, pasid_quota: 4, flags: 1 | VM_SETUP_UAPI_IOMMUFD, session_token: new Uint8Array(16) });
  await fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path }] });
  const { out_id: ioas } = await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 });
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) calls.push(fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ioas, flags: FIXED_RW, user_va: BigInt(i % 256) * PAGE, length: PAGE, iova: iovaOf(i) }));
  await Promise.all(calls);
  return { fe, ioas, ram };
}

const NONE = { data_type: 0, data_len: 0, fault_id: 0, data: new Uint8Array(0) };

describe('IOMMUFD_IOAS_UNMAP in slices', () => {
  it('another VM is answered while the unmap is in progress; the same VM’s later requests wait and keep their order', async () => {
    const host = new HostServer({ graceMs: 0 });
    cleanup.push(() => host.close());
    const a = await iommufdVm(host, 'A');
    const b = await iommufdVm(host, 'B');
    const order: string[] = [];
    const unmap = a.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: a.ioas, iova: 0n, length: iovaOf(N) }).then((r) => {
      order.push('A unmap');
      return r;
    });
    // Slices go from the end of the range: area 0 is the last to go. A re-MAP of its IOVA is
    // EEXIST unless it runs after the whole unmap.
    const remap = a.fe.call('IOMMUFD_IOAS_MAP', { ioas_id: a.ioas, flags: FIXED_RW, user_va: 0x5000n, length: PAGE, iova: 0n }).then(() => order.push('A map'));
    const ranges = a.fe.call('IOMMUFD_IOAS_IOVA_RANGES', { ioas_id: a.ioas }).then(() => order.push('A ranges'));
    const other = b.fe.call('IOMMUFD_IOAS_IOVA_RANGES', { ioas_id: b.ioas }).then(() => order.push('B ranges'));
    const r = await unmap;
    await Promise.all([remap, ranges, other]);
    expect(r.length).toBe(BigInt(N) * PAGE);
    expect(order.indexOf('B ranges')).toBeLessThan(order.indexOf('A unmap'));
    expect(order.filter((x) => x.startsWith('A'))).toEqual(['A unmap', 'A map', 'A ranges']);
    // Exactly the re-mapped area is left: unmapping everything removes one page.
    expect((await a.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: a.ioas, iova: 0n, length: 0xffff_ffff_ffff_ffffn })).length).toBe(PAGE);
    // B's areas are untouched.
    expect((await b.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: b.ioas, iova: 0n, length: iovaOf(N) })).length).toBe(BigInt(N) * PAGE);
  });

  it('a VM released during its unmap is released whole; another VM is still served', async () => {
    const host = new HostServer({ graceMs: 0 });
    cleanup.push(() => host.close());
    const a = await iommufdVm(host, 'A');
    const b = await iommufdVm(host, 'B');
    const unmap = a.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: a.ioas, iova: 0n, length: iovaOf(N) }).catch((e: unknown) => e);
    await new Promise((res) => setImmediate(res));
    a.fe.close();
    await unmap;
    await waitFor(() => host.vm('A') === undefined, { what: 'VM A released' });
    expect(await errnoOf(b.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: b.ioas, iova: iovaOf(N), length: PAGE }))).toBe('ENOENT');
    expect((await b.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: b.ioas, iova: 0n, length: iovaOf(N) })).length).toBe(BigInt(N) * PAGE);
  });

  it('a paging HWPT from a large IOAS is filled in slices: another VM is served meanwhile, the HWPT maps every area, later requests wait', async () => {
    const host = new HostServer({ graceMs: 0 });
    cleanup.push(() => host.close());
    const a = await iommufdVm(host, 'A');
    const b = await iommufdVm(host, 'B');
    const { out_id: dev } = await a.fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: IOMMUFD_DEVICE_CAP.ATS });
    const domainsBefore = host.iommu.listDomains().length;
    const order: string[] = [];
    const alloc = a.fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.NEST_PARENT, dev_id: dev, pt_id: a.ioas, ...NONE }).then((r) => {
      order.push('A alloc');
      return r.out_id;
    });
    // Runs after the fill: the HWPT then mirrors this unmap of the first area, which the fill's
    // first slice mapped (run during the fill, it would leave the area in the HWPT).
    const unmapFirst = a.fe.call('IOMMUFD_IOAS_UNMAP', { ioas_id: a.ioas, iova: iovaOf(0), length: PAGE }).then(() => order.push('A unmap'));
    const other = b.fe.call('IOMMUFD_IOAS_IOVA_RANGES', { ioas_id: b.ioas }).then(() => order.push('B ranges'));
    const parent = await alloc;
    await Promise.all([unmapFirst, other]);
    expect(order.indexOf('B ranges')).toBeLessThan(order.indexOf('A alloc'));
    expect(order.filter((x) => x.startsWith('A'))).toEqual(['A alloc', 'A unmap']);
    expect(host.iommu.listDomains().length).toBe(domainsBefore + 1);
    // Attached through the HWPT, the device reaches the second and the last areas, not the unmapped first one.
    expect((await a.fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: 0, pasid: 0, pt_id: parent })).hwpt_id).toBe(parent);
    const hostRid = host.vm('A')!.iommufd!.deviceByRid(0x18)!.hostRid;
    a.ram.write(Number((BigInt(N - 1) % 256n) * PAGE), new Uint8Array([0xa5]));
    expect(host.iommu.dmaRead({ rid: hostRid, addr: iovaOf(0) }, 1).ok).toBe(false);
    expect(host.iommu.dmaRead({ rid: hostRid, addr: iovaOf(1) }, 1).ok).toBe(true);
    const last = host.iommu.dmaRead({ rid: hostRid, addr: iovaOf(N - 1) }, 1);
    expect(last.ok && last.data[0]).toBe(0xa5);
  });

  it('a VM released while its HWPT is filled frees the HWPT’s domain; an automatic HWPT by ATTACH is filled the same way', async () => {
    const host = new HostServer({ graceMs: 0 });
    cleanup.push(() => host.close());
    const domainsBefore = host.iommu.listDomains().length;
    const a = await iommufdVm(host, 'A');
    const { out_id: dev } = await a.fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: 0 });
    const attach = a.fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: dev, flags: 0, pasid: 0, pt_id: a.ioas }).catch((e: unknown) => e);
    await new Promise((res) => setImmediate(res));
    a.fe.close();
    await attach;
    await waitFor(() => host.vm('A') === undefined, { what: 'VM A released' });
    expect(host.iommu.listDomains().length).toBe(domainsBefore);
    // The same attach on a VM that stays: the automatic HWPT is filled and attached.
    const c = await iommufdVm(host, 'C');
    const { out_id: cdev } = await c.fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: 0 });
    const { hwpt_id } = await c.fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: cdev, flags: 0, pasid: 0, pt_id: c.ioas });
    const hostRid = host.vm('C')!.iommufd!.deviceByRid(0x18)!.hostRid;
    expect(host.iommu.dmaRead({ rid: hostRid, addr: iovaOf(N - 1) }, 1).ok).toBe(true);
    expect(hwpt_id).toBeGreaterThan(0);
  });
});
