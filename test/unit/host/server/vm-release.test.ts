/**
 * VM release in bounded steps (Vm.release; docs/protocol.md "Disconnect"): another VM's request
 * issued after a large release started is answered before that release finished (ordering, not
 * timing); while the release runs the VM keeps its name (EEXIST) and its quota, its token is
 * refused (ENOENT), and the snapshot marks it `releasing`; when it ends nothing is left — PASIDs,
 * set, quota, devices, domains, host RIDs, KVM entries; host shutdown during a release waits for
 * it. In-process host, in-memory connections.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import type { Vm } from '../../../../host/server/vm.js';
import { RELEASE_STEP_ROUTES } from '../../../../host/vfio/container.js';
import { TestGuest, errnoOf } from '../../../integration/host/client.js';
import { FrontendClient } from '../../../../vhost/index.js';
import { waitFor } from '../../../support/wait.js';

const PF = 0x18;
/** PASIDs of the big VM: many release steps (RELEASE_STEP_ROUTES routes each). */
const BIG = 1024;

const servers: HostServer[] = [];
const guests: TestGuest[] = [];

afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

async function start(host: HostServer, name: string, quota: number): Promise<TestGuest> {
  const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc', quota, devices: [{ rid: PF }] });
  guests.push(g);
  return g;
}

/** A VM with `n` PASIDs, each bound (nested) on its device with a guest PASID, and a mapped domain. */
async function bigVm(host: HostServer, name: string, n: number): Promise<TestGuest> {
  const g = await start(host, name, n);
  const pasids: number[] = [];
  for (let i = 0; i < n; i++) pasids.push(await g.alloc());
  await Promise.all(pasids.map((p, i) => g.bind(PF, p, 0x10_0000, i + 1)));
  const d = (await g.fe.call('DOMAIN_ALLOC', {})).domain;
  await Promise.all(Array.from({ length: 64 }, (_, i) => g.fe.call('DMA_MAP', { domain: d, flags: 3, iova: BigInt(i) * 0x2000n, gpa: 0x1000n * BigInt(i), size: 0x1000n })));
  return g;
}

/** Resolves with the VM when the host starts releasing it (Vm.release called). */
function releaseStarted(vm: Vm): Promise<Vm> {
  return new Promise((resolve) => {
    const original = vm.release.bind(vm);
    vi.spyOn(vm, 'release').mockImplementation(() => {
      const p = original();
      resolve(vm);
      return p;
    });
  });
}

describe('VM release in steps', () => {
  it('serves another VM between the steps of a large release, and leaves nothing behind', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const baseline = { ...host.iommu.stats(), capacity: host.core.capacity.available };
    const other = await start(host, 'other', 4);
    const big = await bigVm(host, 'big', BIG);
    expect(BIG / RELEASE_STEP_ROUTES).toBeGreaterThan(8);
    const vm = host.vm('big')!;
    const started = releaseStarted(vm);
    big.close();
    await started;
    // Issued after the release started: answered while it is still running.
    expect(vm.tornDown).toBe(true);
    const answered: { released: boolean; present: boolean }[] = [];
    const note = () => answered.push({ released: vm.released, present: host.vm('big') === vm });
    await other.fe.call('GET_NESTING_INFO').then(note);
    await other.alloc().then(note);
    expect(answered).toEqual([
      { released: false, present: true },
      { released: false, present: true },
    ]);
    await waitFor(() => host.vm('big') === undefined, { what: 'big VM released' });
    expect(vm.released).toBe(true);
    // Nothing left: PASIDs and set (quota back), devices, domains (the other VM's remain), host RIDs, KVM entries.
    const s = host.iommu.stats();
    const otherVm = host.vm('other')!;
    expect(host.core.isSetValid(vm.set)).toBe(false);
    expect(host.core.snapshot().ids.every((id) => id.set === otherVm.set.id)).toBe(true);
    expect(host.core.capacity.available).toBe(baseline.capacity - 4);
    expect(s.devices).toBe(baseline.devices + 1);
    expect(s.domains).toBe(baseline.domains + 1);
    expect(vm.kvm.size).toBe(0);
    expect(host.stats().vms).not.toHaveProperty('big');
    // The name is free again.
    await start(host, 'big', 4);
  });

  it('while it runs: the name is taken (EEXIST), the token is refused (ENOENT), the snapshot says releasing, the quota is still held', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const big = await bigVm(host, 'big', BIG);
    const vm = host.vm('big')!;
    const quotaHeld = host.core.capacity.available;
    const fe = await FrontendClient.connect({ connect: host.connector() });
    await fe.handshake();
    const started = releaseStarted(vm);
    big.close();
    await started;
    expect(host.vm('big')).toBe(vm);
    expect(host.snapshot().vms.find((v) => v.name === 'big')).toMatchObject({ releasing: true, connected: false });
    expect(host.core.capacity.available).toBe(quotaHeld); // big's quota is not back yet
    const setup = (token: Uint8Array) => fe.setupVm({ name: 'big', pasid_quota: 1, flags: 1, session_token: token });
    const byName = errnoOf(setup(new Uint8Array(16)));
    expect(await byName).toBe('EEXIST');
    expect(await errnoOf(setup(big.token!))).toBe('ENOENT');
    expect(vm.released).toBe(false); // both answered during the release
    fe.close();
    await waitFor(() => host.vm('big') === undefined, { what: 'big VM released' });
    expect(host.core.capacity.available).toBe(quotaHeld + BIG);
  });

  it('the first step only ends the connection; the memory table goes in a step after the set', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const big = await bigVm(host, 'big', 64);
    const vm = host.vm('big')!;
    const devices = vm.container.listDevices().length;
    const pasids = host.core.snapshot().ids.filter((id) => id.set === vm.set.id).map((id) => id.id);
    const bound = () => pasids.filter((p) => vm.container.bindingsOf(p).length > 0).length;
    expect(bound()).toBe(64);
    const regions = vm.mem.list.length;
    expect(devices).toBeGreaterThan(0);
    expect(regions).toBeGreaterThan(0);
    // The release's own steps, driven one by one (as Vm.release does between turns).
    const steps = (vm as unknown as { releaseSteps(): Generator<unknown, void, void> }).releaseSteps();
    vm.pasidRows.dispose();
    expect(steps.next().done).toBe(false);
    expect(vm.tornDown).toBe(true);
    expect(vm.session).toBeNull();
    // Nothing of the container is released in the connection's turn.
    expect(vm.container.listDevices()).toHaveLength(devices);
    expect(bound()).toBe(64);
    expect(host.core.setInfo(vm.set).used).toBe(64);
    let setGoneWithRam = false;
    for (let r = steps.next(); !r.done; r = steps.next()) {
      if (!host.core.isSetValid(vm.set) && vm.mem.list.length > 0) setGoneWithRam = true;
    }
    expect(setGoneWithRam).toBe(true); // a step ended after the set went and before the RAM did
    expect(vm.mem.list).toHaveLength(0);
    expect(vm.released).toBe(true);
    big.close();
  });

  it('host shutdown during a release waits for it and releases every VM', async () => {
    const host = new HostServer({ graceMs: 0 });
    const baseline = { ...host.iommu.stats(), capacity: host.core.capacity.available };
    await start(host, 'idle', 8);
    const big = await bigVm(host, 'big', 512);
    const vm = host.vm('big')!;
    const started = releaseStarted(vm);
    big.close();
    await started;
    expect(vm.released).toBe(false);
    await host.close();
    expect(vm.released).toBe(true);
    expect(host.vms).toEqual([]);
    const s = host.iommu.stats();
    expect(s.devices).toBe(baseline.devices);
    expect(s.domains).toBe(baseline.domains);
    expect(host.core.capacity.available).toBe(baseline.capacity);
    expect(host.core.snapshot().ids).toEqual([]);
  });

  it('a sliced DMA_UNMAP of the VM stops when its release begins (ENOTCONN inside the host)', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const g = await start(host, 'u', 4);
    const d = (await g.fe.call('DOMAIN_ALLOC', {})).domain;
    await Promise.all(Array.from({ length: 4096 }, (_, i) => g.fe.call('DMA_MAP', { domain: d, flags: 3, iova: BigInt(i) * 0x2000n, gpa: 0x1000n * BigInt(i % 256), size: 0x1000n })));
    const vm = host.vm('u')!;
    const unmap = vm.container.dmaUnmap({ domain: d, iova: 0n, size: 4096n * 0x2000n });
    expect(unmap).toBeInstanceOf(Promise);
    const release = vm.release();
    expect(await errnoOf(unmap as Promise<unknown>)).toBe('ENOTCONN');
    await release;
    expect(vm.container.mappings).toBe(0);
  });
});
