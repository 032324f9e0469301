/**
 * IOMMUFD_IOAS_UNMAP over more areas than one slice (IOAS_UNMAP_SLICE_AREAS, host/iommufd/ioas.ts)
 * through the wire: another VM is answered while the unmap is in progress; the same VM's later
 * requests wait behind it and keep their order (docs/protocol.md §8); a VM released during its
 * unmap is released whole. Behaviour only — timing is in the fairness bench.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { HostServer } from '../../../../host/server/index.js';
import { IOAS_UNMAP_SLICE_AREAS } from '../../../../host/iommufd/ioas.js';
import { FrontendClient, DEFAULT_PROTOCOL_FEATURES, ProtocolFeature, VM_SETUP_UAPI_IOMMUFD } from '../../../../vhost/index.js';
import { errnoOf } from '../../../integration/host/client.js';
import { waitFor } from '../../../support/wait.js';
import { FIXED_RW } from './fixture.js';

const PAGE = 0x1000n;
/** Areas: enough for several slices. */
const N = IOAS_UNMAP_SLICE_AREAS * 3 + 100;
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
  return { fe, ioas };
}

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
});
