/**
 * PASID_FREE over more PASIDs than one slice (PASID_FREE_SLICE, host/vfio/pasid-requests.ts):
 * the same PASIDs go as freeing them one by one; another VM is answered while the free is in
 * progress (ordering, not timing); the same VM's later requests wait behind it and replies keep
 * request order (docs/protocol.md §8); a free of nothing is still ENOENT.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { PASID_FREE_SLICE } from '../../../../host/vfio/pasid-requests.js';
import { TestGuest, errnoOf } from '../../../integration/host/client.js';

const PF = 0x18;
const N = PASID_FREE_SLICE * 4 + 5;

const servers: HostServer[] = [];
const guests: TestGuest[] = [];

afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

async function setup() {
  const host = new HostServer({ graceMs: 0 });
  servers.push(host);
  const a = await TestGuest.start({ name: 'A', connect: host.connector(), backing: 'inproc', quota: N + 1, devices: [{ rid: PF }] });
  const b = await TestGuest.start({ name: 'B', connect: host.connector(), backing: 'inproc', quota: 4, mapRam: false });
  guests.push(a, b);
  const pasids: number[] = [];
  for (let i = 0; i < N; i++) pasids.push(await a.alloc());
  await Promise.all(pasids.map((p, i) => a.bind(PF, p, 0x10_0000, i + 1)));
  return { host, a, b, pasids };
}

describe('PASID_FREE in slices', () => {
  it('frees every live PASID of the range, serves another VM meanwhile, and holds the same VM’s later requests', async () => {
    const { host, a, b, pasids } = await setup();
    const capacity = host.core.capacity.available;
    const order: string[] = [];
    const free = a.free(Math.min(...pasids), Math.max(...pasids)).then((n) => {
      order.push('A free');
      return n;
    });
    const later = a.fe.call('GET_NESTING_INFO').then(() => order.push('A info'));
    const other = b.fe.call('GET_NESTING_INFO').then(() => order.push('B info'));
    expect(await free).toBe(N);
    await Promise.all([later, other]);
    expect(order.indexOf('B info')).toBeLessThan(order.indexOf('A free'));
    expect(order.filter((x) => x.startsWith('A'))).toEqual(['A free', 'A info']);
    const vm = host.vm('A')!;
    for (const p of pasids) expect(host.core.idInfo(p)).toBeNull(); // routes gone, IDs reclaimed
    expect(vm.kvm.size).toBe(0);
    expect(vm.counters.frees).toBe(N);
    expect(host.core.capacity.available).toBe(capacity); // the quota stays with the set
    expect(await errnoOf(a.free(Math.min(...pasids), Math.max(...pasids)))).toBe('ENOENT');
  });

  it('stops when the VM’s release begins; the rest goes with the release', async () => {
    const { host, a } = await setup();
    const vm = host.vm('A')!;
    const free = vm.container.pasidFree({ min: 1, max: 0xfffff });
    expect(free).toBeInstanceOf(Promise);
    const release = vm.release();
    expect(await errnoOf(free as Promise<unknown>)).toBe('ENOTCONN');
    await release;
    expect(host.core.isSetValid(vm.set)).toBe(false);
    a.close();
  });
});
