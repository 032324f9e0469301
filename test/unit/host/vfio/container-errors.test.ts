/**
 * Every error path of the container uAPI and the session layer: the exact errno, and the host's
 * state unchanged (snapshot before = after, counters aside). In-process host, in-memory
 * connections, in-process guest RAM.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HostServer } from '../../../../host/server/index.js';
import { FrontendClient, DeviceCap, DeviceKind } from '../../../../vhost/index.js';
import { TestGuest, errnoOf, invEntry } from '../../../integration/host/client.js';
import { memoryDirs } from '../../../../host/vfio/mem-table.js';
import { makeDirOutside } from '../../../support/outside-dir.js';
import { scaled, waitFor } from '../../../support/wait.js';

const PF = 0x18;
const ADI = 0x20;
const BARE = 0x28; // no PASID, no ATS, no PRI
let host: HostServer;
let a: TestGuest;
let b: TestGuest;
let pa: number; // A: bound on PF with guest PASID 100
let pa2: number; // A: allocated, attached second-level on PF in domain 1
let pa3: number; // A: allocated, unused
let pb: number; // B: allocated
let dom1: number;
let root: number;

/** The snapshot without what every request moves (counters, IOMMU statistics, timings). */
function stable(): unknown {
  const s = host.snapshot() as unknown as Record<string, unknown> & { vms: Record<string, unknown>[] };
  return {
    ...s,
    iommu: undefined,
    vms: s.vms.map((v) => ({ ...v, stats: undefined, disconnectedForMs: undefined })),
  };
}

beforeAll(async () => {
  // The page-request timeout must outlast the steps of a test that keeps one outstanding.
  host = new HostServer({ graceMs: 0, pageRequestTimeoutMs: scaled(200), maxPendingPageRequests: 1 });
  a = await TestGuest.start({
    name: 'A', connect: host.connector(), backing: 'inproc', quota: 4,
    devices: [{ rid: PF }, { rid: ADI, kind: 'adi' }, { rid: BARE, caps: 0 }],
  });
  b = await TestGuest.start({ name: 'B', connect: host.connector(), backing: 'inproc', quota: 4 });
  pa = await a.alloc();
  pa2 = await a.alloc();
  pa3 = await a.alloc();
  pb = await b.alloc();
  root = a.fl.newRoot();
  a.fl.map(root, 0x1000n, 0x20_0000);
  await a.bind(PF, pa, root, 100);
  dom1 = (await a.fe.call('DOMAIN_ALLOC', {})).domain;
  await a.fe.call('DMA_MAP', { domain: dom1, flags: 3, iova: 0x10_0000n, gpa: 0x20_0000n, size: 0x2000n });
  await a.fe.call('ATTACH', { rid: PF, pgtt: 2, flags: 1, pasid: pa2, domain: dom1 });
});

afterAll(async () => {
  a.close();
  b.close();
  await host.close();
});

type Case = [name: string, errno: string, call: () => Promise<unknown>];

const bind = (over: Parameters<TestGuest['bind']>[4], rid = PF, hp = () => pa3, gpasid: number | null = 300) => () => a.bind(rid, hp(), root, gpasid, over);

const cases: Case[] = [
  // PASID_REQUEST
  ['PASID_ALLOC of a range with no free ID', 'ENOSPC', () => b.alloc(pb, pb)],
  ['PASID_ALLOC with min > max', 'EINVAL', () => a.fe.call('PASID_ALLOC', { min: 9, max: 3 })],
  ['PASID_FREE of a range without this VM’s PASIDs', 'ENOENT', () => a.free(0xff000, 0xfffff)],
  ['PASID_FREE of another VM’s PASID', 'ENOENT', () => a.free(pb)],
  // BIND_GPASID: iommu_gpasid_bind_data checks
  ['BIND argsz below the generic part', 'EINVAL', bind({ argsz: 40 })],
  ['BIND argsz without the VT-d vendor part', 'EINVAL', bind({ argsz: 60 })],
  ['BIND version 2', 'EINVAL', bind({ version: 2 })],
  ['BIND format 0', 'EINVAL', bind({ format: 0 })],
  ['BIND format IOMMU_PASID_FORMAT_LAST', 'EINVAL', bind({ format: 2 })],
  ['BIND unknown flags', 'EINVAL', bind({ flags: 2n })],
  ['BIND non-zero padding', 'EINVAL', bind({ padding: 1n })],
  ['BIND unknown VT-d flags', 'EINVAL', bind({ vtd_flags: 1n << 7n })],
  ['BIND addr_width 39', 'EINVAL', bind({ addr_width: 39 })],
  ['BIND gpgd not 4 KiB aligned', 'EINVAL', bind({ gpgd: 0x1008n })],
  ['BIND gpgd beyond the GPA width', 'EINVAL', bind({ gpgd: 1n << 50n })],
  ['BIND emt not a 3-bit type', 'EINVAL', bind({ vtd_emt: 9 })],
  ['BIND hpasid 0', 'EINVAL', bind({}, PF, () => 0)],
  ['BIND hpasid above 20 bits', 'EINVAL', bind({ hpasid: 0x100000n })],
  ['BIND gpasid above 20 bits', 'EINVAL', bind({ gpasid: 0x100000n })],
  // BIND_GPASID: container checks
  ['BIND on an unknown device', 'ENOENT', bind({}, 0x30)],
  ['BIND on a device without PASID', 'EINVAL', bind({}, BARE)],
  ['BIND of an unallocated PASID', 'ENOENT', bind({}, PF, () => 0xabcde)],
  ['BIND of another VM’s PASID', 'ENOENT', bind({}, PF, () => pb)],
  ['BIND of a PASID already bound on the device (another table)', 'EEXIST', bind({ gpgd: 0xfff000n }, PF, () => pa, 100)],
  ['BIND of a PASID attached on the device', 'EBUSY', bind({}, PF, () => pa2)],
  ['BIND with a guest PASID another host PASID carries', 'EINVAL', bind({}, PF, () => pa3, 100)],
  ['BIND on a second device with a different guest PASID', 'EINVAL', bind({}, ADI, () => pa, 101)],
  // UNBIND_GPASID
  ['UNBIND version 2', 'EINVAL', () => a.unbind(PF, pa, { version: 2 })],
  ['UNBIND argsz too small', 'EINVAL', () => a.unbind(PF, pa, { argsz: 8 })],
  ['UNBIND unknown flags', 'EINVAL', () => a.unbind(PF, pa, { flags: 4n })],
  ['UNBIND non-zero padding', 'EINVAL', () => a.unbind(PF, pa, { padding: 7n })],
  ['UNBIND on an unknown device', 'ENOENT', () => a.unbind(0x30, pa)],
  ['UNBIND of another VM’s PASID', 'ENOENT', () => a.unbind(PF, pb)],
  ['UNBIND of a PASID not bound on the device', 'ENOENT', () => a.unbind(ADI, pa)],
  ['UNBIND of an attached (not bound) PASID', 'ENOENT', () => a.unbind(PF, pa2)],
  // DMA_MAP / DMA_UNMAP
  ['DMA_MAP on an unknown domain', 'ENOENT', () => a.fe.call('DMA_MAP', { domain: 42, flags: 3, iova: 0n, gpa: 0n, size: 0x1000n })],
  ['DMA_MAP unaligned', 'EINVAL', () => a.fe.call('DMA_MAP', { domain: dom1, flags: 3, iova: 0x800n, gpa: 0n, size: 0x1000n })],
  ['DMA_MAP of a GPA outside the memory table', 'EFAULT', () => a.fe.call('DMA_MAP', { domain: dom1, flags: 3, iova: 0x80_0000n, gpa: 0x40_0000n, size: 0x1000n })],
  ['DMA_MAP overlapping a mapping', 'EEXIST', () => a.fe.call('DMA_MAP', { domain: dom1, flags: 1, iova: 0x10_1000n, gpa: 0n, size: 0x1000n })],
  ['DMA_MAP beyond the 48-bit domain', 'EINVAL', () => a.fe.call('DMA_MAP', { domain: dom1, flags: 1, iova: 1n << 48n, gpa: 0n, size: 0x1000n })],
  ['DMA_MAP with neither READ nor WRITE', 'EINVAL', () => a.fe.call('DMA_MAP', { domain: dom1, flags: 0, iova: 0x90_0000n, gpa: 0n, size: 0x1000n })],
  ['DMA_UNMAP on an unknown domain', 'ENOENT', () => a.fe.call('DMA_UNMAP', { domain: 42, iova: 0n, size: 0x1000n })],
  ['DMA_UNMAP unaligned', 'EINVAL', () => a.fe.call('DMA_UNMAP', { domain: dom1, iova: 0x10_0800n, size: 0x1000n })],
  ['DMA_UNMAP of part of a mapping', 'EINVAL', () => a.fe.call('DMA_UNMAP', { domain: dom1, iova: 0x10_1000n, size: 0x1000n })],
  // domains
  ['DOMAIN_FREE of domain 0', 'EINVAL', () => a.fe.call('DOMAIN_FREE', { domain: 0 })],
  ['DOMAIN_FREE of an unknown domain', 'ENOENT', () => a.fe.call('DOMAIN_FREE', { domain: 42 })],
  ['DOMAIN_FREE of a domain in use', 'EBUSY', () => a.fe.call('DOMAIN_FREE', { domain: dom1 })],
  // devices
  ['DEVICE_ADD of an existing device', 'EEXIST', () => a.fe.call('DEVICE_ADD', { rid: PF, kind: DeviceKind.PF, pasid_width: 0, caps: 0 })],
  ['DEVICE_ADD of an ADI without PASID', 'EINVAL', () => a.fe.call('DEVICE_ADD', { rid: 0x40, kind: DeviceKind.ADI, pasid_width: 0, caps: 0 })],
  ['DEVICE_ADD with PRI but no ATS', 'EINVAL', () => a.fe.call('DEVICE_ADD', { rid: 0x40, kind: DeviceKind.PF, pasid_width: 8, caps: DeviceCap.PASID | DeviceCap.PRI })],
  ['DEVICE_CONFIG of an unknown device', 'ENOENT', () => a.fe.call('DEVICE_CONFIG', { rid: 0x30, flags: 0 })],
  ['DEVICE_CONFIG PRI_ENABLE without PRI', 'EINVAL', () => a.fe.call('DEVICE_CONFIG', { rid: BARE, flags: 1 })],
  ['DEVICE_CONFIG ATS_ENABLE without ATS', 'EINVAL', () => a.fe.call('DEVICE_CONFIG', { rid: BARE, flags: 2 })],
  ['DEVICE_CONFIG unknown flag', 'EOPNOTSUPP', () => a.fe.call('DEVICE_CONFIG', { rid: PF, flags: 4 })],
  ['ATTACH of an unknown device', 'ENOENT', () => a.fe.call('ATTACH', { rid: 0x30, pgtt: 0, flags: 0, pasid: 0, domain: 0 })],
  ['ATTACH to an unknown domain', 'ENOENT', () => a.fe.call('ATTACH', { rid: PF, pgtt: 0, flags: 0, pasid: 0, domain: 42 })],
  ['ATTACH of a RID already attached', 'EBUSY', () => a.fe.call('ATTACH', { rid: PF, pgtt: 0, flags: 0, pasid: 0, domain: dom1 })],
  ['ATTACH of another VM’s PASID', 'ENOENT', () => a.fe.call('ATTACH', { rid: PF, pgtt: 2, flags: 1, pasid: pb, domain: dom1 })],
  ['ATTACH pass-through outside domain 0', 'EINVAL', () => a.fe.call('ATTACH', { rid: PF, pgtt: 4, flags: 1, pasid: pa3, domain: dom1 })],
  ['ATTACH of a bound PASID', 'EBUSY', () => a.fe.call('ATTACH', { rid: PF, pgtt: 2, flags: 1, pasid: pa, domain: dom1 })],
  ['ATTACH of a PASID on a device without PASID', 'EINVAL', () => a.fe.call('ATTACH', { rid: BARE, pgtt: 2, flags: 1, pasid: pa3, domain: dom1 })],
  ['DETACH of a RID from a domain it is not attached to', 'ENOENT', () => a.fe.call('DETACH', { rid: PF, pgtt: 0, flags: 0, pasid: 0, domain: dom1 })],
  ['DETACH of a nested binding', 'EINVAL', () => a.fe.call('DETACH', { rid: PF, pgtt: 0, flags: 1, pasid: pa, domain: 0 })],
  ['DETACH of a PASID not attached', 'ENOENT', () => a.fe.call('DETACH', { rid: PF, pgtt: 0, flags: 1, pasid: pa3, domain: dom1 })],
  // page responses and device DMA
  ['PAGE_RESPONSE of an unknown device', 'ENOENT', () => a.fe.call('PAGE_RESPONSE', { rid: 0x30, flags: 0, pasid: 0, grpid: 0, code: 0 })],
  ['PAGE_RESPONSE with nothing outstanding', 'EINVAL', () => a.fe.call('PAGE_RESPONSE', { rid: PF, flags: 1, pasid: pa, grpid: 3, code: 0 })],
  ['DEVICE_DMA of an unknown device', 'ENOENT', () => a.read(0x30, 0n, 4)],
  ['DEVICE_DMA with a PASID on a device without PASID', 'EINVAL', () => a.read(BARE, 0x1000n, 4, pa)],
  ['DEVICE_DMA of an ADI without PASID', 'EINVAL', () => a.read(ADI, 0x1000n, 4)],
  // memory table
  ['SET_MEM_TABLE change while mappings exist', 'EBUSY', () => a.fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: 0x1000n, userspace_addr: 0n, mmap_offset: 0n, path: a.ram.path }] })],
];

describe('container uAPI error paths: exact errno, nothing changed', () => {
  for (const [name, errno, call] of cases) {
    it(`${name} → ${errno}`, async () => {
      const before = stable();
      expect(await errnoOf(call())).toBe(errno);
      expect(stable()).toEqual(before);
    });
  }

  it('DEVICE_DMA with a PASID the VM has no host PASID for → fault 0x59 (PASID entry not present), FAULT sent, nothing changed', async () => {
    await a.fe.call('DEVICE_CONFIG', { rid: PF, flags: 3 }); // PRI on: still no page request
    const unallocated = 0xabcde;
    const tries: [string, () => ReturnType<TestGuest['read']>, number, number, bigint][] = [
      ['pf read with another VM’s PASID', () => a.read(PF, 0x1000n, 4, pb), PF, pb, 0x1000n],
      ['pf write with another VM’s PASID', () => a.write(PF, 0x1040n, Uint8Array.of(1, 2, 3), pb), PF, pb, 0x1040n],
      ['pf read with an unallocated PASID', () => a.read(PF, 0x2000n, 4, unallocated), PF, unallocated, 0x2000n],
      ['ADI read with a guest PASID nobody bound', () => a.read(ADI, 0x3000n, 8, 555), ADI, 555, 0x3000n],
    ];
    const ramBefore = a.ram.read(0, a.ram.size).slice();
    for (const [what, call, rid, pasid, addr] of tries) {
      const before = stable();
      const seen = a.events.length;
      const r = await call();
      expect({ what, r }).toEqual({ what, r: { status: 1, reason: 0x59, flags: 1, pasid, fault_addr: addr } });
      await waitFor(() => a.events.length > seen, { what: `${what}: FAULT on the backend channel` });
      const sent = a.events.slice(seen);
      expect(sent.map((e) => e.name)).toEqual(['FAULT']);
      expect(sent[0]!.msg).toMatchObject({ rid, reason: 0x59, pasid, addr });
      expect(stable()).toEqual(before); // no reference taken, nothing programmed
    }
    expect(Buffer.from(a.ram.read(0, a.ram.size)).equals(Buffer.from(ramBefore))).toBe(true);
    await a.fe.call('DEVICE_CONFIG', { rid: PF, flags: 0 });
  });

  it('PASID_ALLOC beyond the quota → ENOSPC (the set is unchanged by the refusal)', async () => {
    const last = await a.alloc();
    const before = stable();
    expect(await errnoOf(a.alloc())).toBe('ENOSPC');
    expect(stable()).toEqual(before);
    await a.free(last);
  });

  it('CACHE_INVALIDATE: every invalid entry is refused with EINVAL/ENOENT, stopping there', async () => {
    const P = BigInt(pa);
    const bad: [string, Partial<Parameters<typeof invEntry>[0]>, number][] = [
      ['argsz below offsetof(granu)', { argsz: 8 }, -22],
      ['argsz short of pasid_info', { granularity: 1, flags: 1, pasid: P, argsz: 24 }, -22],
      ['argsz short of addr_info', { granularity: 2, granule_size: 4096n, nb_granules: 1n, argsz: 40 }, -22],
      ['version 0', { version: 0 }, -22],
      ['unknown cache bit', { cache: 8 }, -22],
      ['granularity 3', { granularity: 3 }, -22],
      ['ADDR × PASID cache', { cache: 4, granularity: 2, granule_size: 4096n, nb_granules: 1n }, -22],
      ['DOMAIN × DEV_IOTLB', { cache: 2, granularity: 0, rid: PF }, -22],
      ['unknown addr_info flag', { granularity: 2, flags: 8, granule_size: 4096n, nb_granules: 1n }, -22],
      ['unknown pasid_info flag', { granularity: 1, flags: 5, pasid: P }, -22],
      ['non-zero padding', { padding: Uint8Array.of(0, 0, 1, 0, 0, 0) }, -22],
      ['PASID granularity without PASID or ARCHID', { granularity: 1, flags: 0 }, -22],
      ['granule size not a power of two', { granularity: 2, granule_size: 3000n, nb_granules: 1n }, -22],
      ['no granules', { granularity: 2, granule_size: 4096n, nb_granules: 0n }, -22],
      ['address not granule aligned', { granularity: 2, addr: 0x1800n, granule_size: 4096n, nb_granules: 1n }, -22],
      ['range wraps', { granularity: 2, addr: 0xffff_ffff_ffff_f000n, granule_size: 4096n, nb_granules: 2n }, -22],
      ['another VM’s PASID', { granularity: 1, flags: 1, pasid: BigInt(pb) }, -2],
      // The shape of one page-selective flush (cache-invalidate.ts pageSelectiveMask) with a bad PASID.
      ['another VM’s PASID, one page', { granularity: 2, flags: 1, pasid: BigInt(pb), addr: 0x1000n, granule_size: 4096n, nb_granules: 1n }, -2],
      ['PASID 0, one page', { granularity: 2, flags: 1, pasid: 0n, addr: 0x1000n, granule_size: 4096n, nb_granules: 1n }, -22],
      ['PASID above PASID_MAX, one page', { granularity: 2, flags: 5, pasid: 1n << 20n, addr: 0x1000n, granule_size: 4096n, nb_granules: 1n }, -22],
      ['DEV_IOTLB of an unknown device', { cache: 2, granularity: 1, flags: 1, pasid: P, rid: 0x30 }, -2],
    ];
    for (const [what, e, errno] of bad) {
      const before = stable();
      const r = await a.invalidate([{ cache: 1, granularity: 1, flags: 1, pasid: P }, e, { cache: 1 }]);
      expect({ what, r }).toEqual({ what, r: { handled: 1, first_error: errno } });
      expect(stable()).toEqual(before);
    }
    expect(await a.invalidate([{ cache: 7, granularity: 1, flags: 1, pasid: P, rid: PF }, { cache: 3, granularity: 2, flags: 5, pasid: P, addr: 0x1000n, granule_size: 4096n, nb_granules: 3n, rid: PF }, { cache: 5 }]))
      .toEqual({ handled: 3, first_error: 0 });
  });

  it('DEVICE_DMA past the cap of outstanding page requests → EAGAIN', async () => {
    await a.fe.call('DEVICE_CONFIG', { rid: PF, flags: 3 });
    const seen = a.events.length;
    const first = a.read(PF, 0x9000n, 4, pa); // its page request stays unanswered (timeout below)
    await waitFor(() => a.events.slice(seen).some((e) => e.name === 'PAGE_REQUEST'), { what: 'the first page request outstanding' });
    expect(await errnoOf(a.read(PF, 0xa000n, 4, pa))).toBe('EAGAIN');
    expect((await first).status).toBe(1);
    await a.fe.call('DEVICE_CONFIG', { rid: PF, flags: 0 });
  });

  it('SET_MEM_TABLE path checks: outside the memory directories (or linked out of them) EACCES, missing ENOENT, unaligned/overlapping EINVAL', async () => {
    const fe = await FrontendClient.connect({ connect: host.connector() });
    await fe.handshake();
    await fe.setupVm({ name: 'C', pasid_quota: 1, flags: 0, session_token: new Uint8Array(16) });
    const region = (p: string, gpa = 0n, size = 0x1000n) => ({ guest_phys_addr: gpa, memory_size: size, userspace_addr: 0n, mmap_offset: 0n, path: p });
    // A real file in a fresh directory outside every memory directory (the checkout itself may
    // be under the temp directory, which is one).
    const outsideDir = makeDirOutside(memoryDirs());
    const outside = path.join(outsideDir, 'ram');
    fs.writeFileSync(outside, Buffer.alloc(0x2000));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-mt-'));
    const file = path.join(dir, 'ram');
    fs.writeFileSync(file, Buffer.alloc(0x2000));
    try {
      const before = stable();
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region(outside)] }))).toBe('EACCES');
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region('/etc/passwd')] }))).toBe('EACCES');
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region(path.join(dir, 'missing'))] }))).toBe('ENOENT');
      fs.symlinkSync(outside, path.join(dir, 'link'));
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region(path.join(dir, 'link'))] }))).toBe('EACCES');
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region(file, 0x800n)] }))).toBe('EINVAL');
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region(file, 0n, 0x2000n), region(file, 0x1000n)] }))).toBe('EINVAL');
      expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [region(file, 0n, 0x4000n)] }))).toBe('EINVAL');
      expect(stable()).toEqual(before);
      await fe.call('SET_MEM_TABLE', { regions: [region(file, 0n, 0x2000n)] });
    } finally {
      fe.close();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(outsideDir, { recursive: true, force: true });
    }
  });

  it('VM_SETUP errors: EPERM before setup, EEXIST name, ENOENT token, EBUSY twice / connected, EINVAL name mismatch, ENOSPC quota', async () => {
    const fe = await FrontendClient.connect({ connect: host.connector() });
    await fe.handshake();
    const before = stable();
    const zero = new Uint8Array(16);
    expect(await errnoOf(fe.call('PASID_ALLOC', { min: 1, max: 5 }))).toBe('EPERM');
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'A', pasid_quota: 1, flags: 0, session_token: zero }))).toBe('EEXIST');
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'Z', pasid_quota: 1, flags: 0, session_token: new Uint8Array(16).fill(3) }))).toBe('ENOENT');
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'A', pasid_quota: 1, flags: 0, session_token: a.token }))).toBe('EBUSY');
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'Z', pasid_quota: 1 << 21, flags: 0, session_token: zero }))).toBe('ENOSPC');
    expect(stable()).toEqual(before);
    await fe.call('VM_SETUP', { name: 'D', pasid_quota: 1, flags: 0, session_token: zero });
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'E', pasid_quota: 1, flags: 0, session_token: zero }))).toBe('EBUSY');
    fe.close();
    // grace 0: D is gone as soon as the host sees the close, so its token is unknown now.
    await waitFor(() => host.vm('D') === undefined, { what: 'VM D released' });
  });
});
