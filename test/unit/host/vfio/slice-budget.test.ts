/**
 * Time-bounded slices (host/vfio/slice-budget.ts): a DMA_UNMAP slice and a VM-release step end
 * once they have spent SLICE_BUDGET_MS, before their count bound. The clock is replaced by one
 * on which every unit of work spends the whole budget, so the behaviour is checked without
 * timing: the unmap leaves the table one chunk per slice (one IOTLB flush each) and the same
 * state; a release of fewer routes than one count-bounded step still yields after every route,
 * and another VM's request issued after it started is answered before it finished. Between two
 * slices the host steps aside: the thread sleeps (a voluntary context switch, counted by the
 * kernel in /proc/thread-self/status), so a VM it just answered can run on its CPU, with a short
 * timer slack so that the sleep lasts what it asks for.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import type { Vm } from '../../../../host/server/vm.js';
import { UNMAP_CHUNK_MAPPINGS, UNMAP_SLICE_MAPPINGS } from '../../../../host/vfio/dma-map.js';
import { RELEASE_STEP_ROUTES } from '../../../../host/vfio/container.js';
import { SLICE_BUDGET_MS, STEP_ASIDE_TIMER_SLACK_NS, nextSlice, sliceClock } from '../../../../host/vfio/slice-budget.js';
import { getTimerSlack, nativeAvailable } from '../../../../src/native/native.js';
import fs from 'node:fs';
import { TestGuest } from '../../../integration/host/client.js';
import { waitFor } from '../../../support/wait.js';

const PAGE = 0x1000n;
const PF = 0x18;
const iovaOf = (i: number) => BigInt(i) * 2n * PAGE;

const servers: HostServer[] = [];
const guests: TestGuest[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

/** Every reading of the slice clock is a whole budget after the one before. */
function everyUnitSpendsTheBudget(): void {
  let t = 0;
  vi.spyOn(sliceClock, 'now').mockImplementation(() => (t += SLICE_BUDGET_MS));
}

async function start(host: HostServer, name: string, quota: number, devices = false): Promise<TestGuest> {
  const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc', quota, mapRam: false, ...(devices ? { devices: [{ rid: PF }] } : {}) });
  guests.push(g);
  return g;
}

/** Voluntary context switches of the calling thread so far (proc(5), /proc/thread-self/status). */
function voluntarySwitches(): number {
  const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(fs.readFileSync('/proc/thread-self/status', 'utf8'));
  if (!m) throw new Error('no voluntary_ctxt_switches in /proc/thread-self/status');
  return Number(m[1]);
}

describe('stepping aside between slices', () => {
  it('slice boundaries give the CPU away: the thread sleeps at them', async () => {
    const boundaries = 40;
    const before = voluntarySwitches();
    for (let i = 0; i < boundaries; i++) await nextSlice();
    // setImmediate alone polls without blocking: only the sleeps switch the thread out (0 of 40
    // without them). A 20 µs timeout can expire before the thread is switched out, so not every
    // boundary counts (37 of 40 measured on an idle machine).
    expect(voluntarySwitches() - before).toBeGreaterThanOrEqual(boundaries / 2);
  });

  it.runIf(nativeAvailable())('the stepping thread asks for a short timer slack, so its sleep is not stretched', async () => {
    await nextSlice();
    expect(getTimerSlack()).toBe(STEP_ASIDE_TIMER_SLACK_NS);
  });
});

describe('time-bounded slices', () => {
  it('DMA_UNMAP: a slice that spent its budget ends after its chunk; the state is the same and another VM is answered meanwhile', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const a = await start(host, 'A', 4);
    const b = await start(host, 'B', 4);
    const n = UNMAP_SLICE_MAPPINGS + 3 * UNMAP_CHUNK_MAPPINGS + 5; // sliced: more than one slice's count
    const d = (await a.fe.call('DOMAIN_ALLOC', {})).domain;
    await Promise.all(Array.from({ length: n }, (_, i) => a.fe.call('DMA_MAP', { domain: d, flags: 3, iova: iovaOf(i), gpa: BigInt(i % 256) * PAGE, size: PAGE })));
    const did = host.vm('A')!.container.listDomains().find((x) => x.id === d)!.did;
    const flushes: bigint[] = [];
    const flush = host.iommu.flushUnmapped.bind(host.iommu);
    vi.spyOn(host.iommu, 'flushUnmapped').mockImplementation((ref, iova, size) => {
      flushes.push(size);
      flush(ref, iova, size);
    });
    everyUnitSpendsTheBudget();
    const order: string[] = [];
    const unmap = a.fe.call('DMA_UNMAP', { domain: d, iova: 0n, size: iovaOf(n) }).then((r) => {
      order.push('A unmap');
      return r;
    });
    const other = b.fe.call('GET_NESTING_INFO').then(() => order.push('B info'));
    const r = await unmap;
    await other;
    expect(r.unmapped).toBe(BigInt(n) * PAGE);
    expect(order).toEqual(['B info', 'A unmap']);
    // One chunk per slice: ceil(n / chunk) slices, each flushing at most one chunk's span.
    expect(flushes.length).toBe(Math.ceil(n / UNMAP_CHUNK_MAPPINGS));
    for (const size of flushes) expect(size).toBeLessThanOrEqual(iovaOf(UNMAP_CHUNK_MAPPINGS));
    for (let i = 0; i < n; i += 97) expect(host.iommu.iovaToPhys(did, iovaOf(i))).toBeUndefined();
    expect(host.vm('A')!.container.mappings).toBe(0);
  });

  it('VM release: a route step that spent its budget ends after its route; another VM is answered before the release finished', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const other = await start(host, 'other', 4);
    const routes = 8;
    expect(routes).toBeLessThan(RELEASE_STEP_ROUTES); // one step by count alone
    const g = await start(host, 'small', routes, true);
    const pasids: number[] = [];
    for (let i = 0; i < routes; i++) pasids.push(await g.alloc());
    await Promise.all(pasids.map((p, i) => g.bind(PF, p, 0x10_0000, i + 1)));
    const vm: Vm = host.vm('small')!;
    everyUnitSpendsTheBudget();
    const releasing = new Promise<void>((resolve) => {
      const original = vm.release.bind(vm);
      vi.spyOn(vm, 'release').mockImplementation(() => {
        const p = original();
        resolve();
        return p;
      });
    });
    g.close();
    await releasing;
    const answered: boolean[] = [];
    await other.fe.call('GET_NESTING_INFO').then(() => answered.push(vm.released));
    expect(answered).toEqual([false]);
    await waitFor(() => host.vm('small') === undefined, { what: 'the VM released' });
    // The session step, one step per route, then devices, domains and PASIDs: more steps than routes.
    expect(vm.releaseStats.steps).toBeGreaterThan(routes);
    for (const p of pasids) expect(host.core.idInfo(p)).toBeNull();
  });
});
