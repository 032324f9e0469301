/**
 * DMA_UNMAP over more mappings than one slice (UNMAP_SLICE_MAPPINGS, host/vfio/dma-map.ts): the
 * mappings left are exactly those a slice-free unmap leaves; another VM's requests are answered
 * while the unmap is in progress; the same VM's later requests wait behind it and their replies
 * keep request order (docs/protocol.md §8). Behaviour only — timing is in the fairness bench.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { UNMAP_SLICE_MAPPINGS } from '../../../../host/vfio/dma-map.js';
import { TestGuest, errnoOf } from '../../../integration/host/client.js';

const PAGE = 0x1000n;
/** Mappings per domain: enough for several slices. */
const N = UNMAP_SLICE_MAPPINGS * 3 + 100;
/** 4 KiB mapping i at IOVA i·8 KiB (a hole after each), GPA (i mod 256)·4 KiB. */
const iovaOf = (i: number) => BigInt(i) * 2n * PAGE;
const gpaOf = (i: number) => BigInt(i % 256) * PAGE;

let host: HostServer;
let a: TestGuest;
let b: TestGuest;

async function mapAll(g: TestGuest, domain: number): Promise<void> {
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) calls.push(g.fe.call('DMA_MAP', { domain, flags: 3, iova: iovaOf(i), gpa: gpaOf(i), size: PAGE }));
  await Promise.all(calls);
}

/** What each mapping's IOVA translates to in the host domain behind container domain `domain`. */
function translations(vm: string, domain: number): (bigint | undefined)[] {
  const c = host.vm(vm)!.container;
  const did = c.listDomains().find((d) => d.id === domain)!.did;
  return Array.from({ length: N }, (_, i) => host.iommu.iovaToPhys(did, iovaOf(i)));
}

function domainInfo(vm: string, domain: number) {
  return host.vm(vm)!.container.listDomains().find((d) => d.id === domain);
}

beforeAll(async () => {
  host = new HostServer({ graceMs: 0 });
  a = await TestGuest.start({ name: 'A', connect: host.connector(), backing: 'inproc', quota: 4, mapRam: false });
  b = await TestGuest.start({ name: 'B', connect: host.connector(), backing: 'inproc', quota: 4, mapRam: false });
});

afterAll(async () => {
  a.close();
  b.close();
  await host.close();
});

describe('DMA_UNMAP in slices', () => {
  it('leaves exactly the mappings that unmapping them one slice-free request at a time leaves', async () => {
    const sliced = (await a.fe.call('DOMAIN_ALLOC', {})).domain;
    const oneByOne = (await a.fe.call('DOMAIN_ALLOC', {})).domain;
    await mapAll(a, sliced);
    await mapAll(a, oneByOne);
    const from = 37;
    const to = N - 41; // mappings [from, to) go
    const size = iovaOf(to) - iovaOf(from) - PAGE; // ends inside the hole after mapping to-1
    const r = await a.fe.call('DMA_UNMAP', { domain: sliced, iova: iovaOf(from), size });
    expect(to - from).toBeGreaterThan(2 * UNMAP_SLICE_MAPPINGS);
    expect(r.unmapped).toBe(BigInt(to - from) * PAGE);
    for (let i = from; i < to; i++) {
      const one = await a.fe.call('DMA_UNMAP', { domain: oneByOne, iova: iovaOf(i), size: PAGE });
      expect(one.unmapped).toBe(PAGE);
    }
    const left = translations('A', sliced);
    expect(left).toEqual(translations('A', oneByOne));
    for (let i = 0; i < N; i++) expect(left[i] === undefined).toBe(i >= from && i < to);
    expect(domainInfo('A', sliced)).toMatchObject({ mappings: N - (to - from), mappedBytes: (N - (to - from)) * 4096 });
    // The remaining mappings are still what they were (same HPA as the untouched domain).
    await a.fe.call('DOMAIN_FREE', { domain: sliced });
    await a.fe.call('DOMAIN_FREE', { domain: oneByOne });
    expect(host.vm('A')!.container.mappings).toBe(0);
  });

  it('a straddling mapping at either end fails with EINVAL before anything is removed', async () => {
    const d = (await a.fe.call('DOMAIN_ALLOC', {})).domain;
    await mapAll(a, d);
    const before = translations('A', d);
    await a.fe.call('DMA_MAP', { domain: d, flags: 3, iova: iovaOf(N), gpa: 0n, size: 4n * PAGE });
    // Ends inside the 4-page mapping at iovaOf(N).
    expect(await errnoOf(a.fe.call('DMA_UNMAP', { domain: d, iova: 0n, size: iovaOf(N) + 2n * PAGE }))).toBe('EINVAL');
    expect(translations('A', d)).toEqual(before);
    expect(domainInfo('A', d)!.mappings).toBe(N + 1);
    expect((await a.fe.call('DMA_UNMAP', { domain: d, iova: 0n, size: iovaOf(N) + 4n * PAGE })).unmapped).toBe(BigInt(N + 4) * PAGE);
    await a.fe.call('DOMAIN_FREE', { domain: d });
  });

  it('another VM is answered while the unmap is in progress; the same VM’s later requests wait and keep their order', async () => {
    const d = (await a.fe.call('DOMAIN_ALLOC', {})).domain;
    await mapAll(a, d);
    const order: string[] = [];
    const unmap = a.fe.call('DMA_UNMAP', { domain: d, iova: 0n, size: iovaOf(N) }).then((r) => {
      order.push('A unmap');
      return r;
    });
    // Slices go from the end of the range: mapping 0 is the last to go. A re-MAP of its IOVA to
    // another GPA is EEXIST unless it runs after the whole unmap.
    const remap = a.fe.call('DMA_MAP', { domain: d, flags: 3, iova: 0n, gpa: 0x5000n, size: PAGE }).then(() => order.push('A map'));
    const info = a.fe.call('GET_NESTING_INFO').then(() => order.push('A info'));
    const other = b.fe.call('GET_NESTING_INFO').then(() => order.push('B info'));
    const r = await unmap;
    await Promise.all([remap, info, other]);
    expect(r.unmapped).toBe(BigInt(N) * PAGE);
    expect(order.indexOf('B info')).toBeLessThan(order.indexOf('A unmap'));
    expect(order.filter((x) => x.startsWith('A'))).toEqual(['A unmap', 'A map', 'A info']);
    expect(domainInfo('A', d)!.mappings).toBe(1);
    const did = domainInfo('A', d)!.did;
    expect(host.iommu.iovaToPhys(did, 0n)).toBeDefined();
    await a.fe.call('DMA_UNMAP', { domain: d, iova: 0n, size: PAGE });
    await a.fe.call('DOMAIN_FREE', { domain: d });
  });

  it('a VM released during its unmap stops the unmap and releases everything', async () => {
    const c = await TestGuest.start({ name: 'C', connect: host.connector(), backing: 'inproc', quota: 4, mapRam: false });
    const d = (await c.fe.call('DOMAIN_ALLOC', {})).domain;
    await mapAll(c, d);
    const capacity = host.core.capacity.available;
    const unmap = c.fe.call('DMA_UNMAP', { domain: d, iova: 0n, size: iovaOf(N) }).catch((e: unknown) => e);
    await new Promise((res) => setImmediate(res));
    c.close();
    await unmap;
    for (let i = 0; i < 50 && host.vm('C') !== undefined; i++) await new Promise((res) => setTimeout(res, 10));
    expect(host.vm('C')).toBeUndefined();
    expect(host.core.capacity.available).toBe(capacity + 4);
    // B is unaffected and still served.
    await b.fe.call('GET_NESTING_INFO');
  });
});
