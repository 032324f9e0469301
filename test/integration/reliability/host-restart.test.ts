/**
 * Issue 11 acceptance: the host process is killed with SIGKILL in the middle of a workload and
 * a new one is started on the same socket. Every guest reconnects, is set up afresh and replays
 * its shadows: the same host PASIDs (VT-d VCMD PASIDs keep their values), the same guest
 * PASIDs and bindings, the same DMA results; DMA during the outage waits for the host (or fails
 * with ENOTCONN past the VM's bound) and never returns wrong data; after the guests close the
 * new host is back to full capacity.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../../src/app/harness/start-guest.js';
import { GuestVm } from '../../../guest/vm.js';
import { createVtdModel } from '../../../guest/vtd/index.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../../src/app/bench/vtd-bench-driver.js';
import { VirtioIommuDriver } from '../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../guest/driver/guest-process.js';
import { MapFlag, ReqStatus } from '../../../guest/virtio/index.js';
import type { VtdModel } from '../../../guest/vtd/index.js';
import { durableState, reconnected, snapshotInvariants, vmIn } from './helpers.js';
import { scaled, sleep, waitFor, withDeadline } from '../../support/wait.js';
import { WorkloadLoop } from '../../support/workload-loop.js';

const MEM = 16 << 20;
/**
 * How long a request issued during the outage waits for the new host: generous, so the outage
 * (SIGKILL, a new host process starting, the replay) fits inside it on a loaded machine too. The
 * expiry of the bound itself is the second test's subject.
 */
const RECONNECT = { outageWaitMs: scaled(20_000) };
const socket = path.join(os.tmpdir(), `vsva-restart-${process.pid}-${randomBytes(3).toString('hex')}.sock`);
const hosts: StartedHost[] = [];
const guests: GuestVm[] = [];
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined): string => new TextDecoder().decode(b);

const VIRTIO_VA = 0x5000_0000n;
const IOVA = 0x20_0000n;

/** The host uAPIs: a VT-d and a virtio-iommu VM of each go through the crash together. */
type Uapi = 'vfio-sva' | 'iommufd';
const UAPIS: readonly Uapi[] = ['vfio-sva', 'iommufd'];

/** One uAPI's pair of VMs and what their workload uses. */
interface VmPair {
  uapi: Uapi;
  vtd: StartedGuest;
  drv: VtdBenchDriver;
  vtdPasids: number[];
  virtio: StartedGuest;
}
const pairs: VmPair[] = [];

async function spawnHost(): Promise<StartedHost> {
  const h = await startHost({ socket, graceMs: 1000 });
  hosts.push(h);
  return h;
}

async function startPair(uapi: Uapi): Promise<VmPair> {
  const vtd = await startGuest({ socket, name: `restart-vtd-${uapi}`, viommu: 'vtd', memory: MEM, reconnect: RECONNECT, uapi });
  guests.push(vtd);
  const drv = await VtdBenchDriver.create(vtd, { bufferBytes: 8192 });
  const vtdPasids: number[] = [];
  for (let i = 0; i < 6; i++) {
    const p = await drv.allocPasid();
    await drv.bindPasid(p);
    vtdPasids.push(p);
  }
  await drv.process.write(BENCH_BUFFER_VA, enc('vtd buffer before the crash'));

  const virtio = await startGuest({ socket, name: `restart-virtio-${uapi}`, viommu: 'virtio', memory: MEM, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0' }], reconnect: RECONNECT, uapi });
  guests.push(virtio);
  const alloc = new PageAllocator(virtio, { base: 0x40_0000n, size: MEM - 0x40_0000 });
  const vdrv = await VirtioIommuDriver.probe(virtio, { alloc });
  expect(await vdrv.attach(1, 0x18)).toBe(ReqStatus.OK);
  expect(await vdrv.attach(1, 0x20)).toBe(ReqStatus.OK);
  const iovaGpa = await alloc.alloc(1);
  await virtio.memwrite(iovaGpa, enc('virtio iova page'));
  expect(await vdrv.map(1, IOVA, IOVA + 0xfffn, iovaGpa, MapFlag.READ | MapFlag.WRITE)).toBe(ReqStatus.OK);
  const proc = await GuestProcess.create(virtio, alloc);
  await proc.mapNew(VIRTIO_VA, 0x1000);
  await proc.write(VIRTIO_VA, enc('virtio process page'));
  for (const [ep, pasid] of [[0x18, 5], [0x18, 0x2345], [0x20, 5]] as const) {
    expect(await vdrv.attachTable({ domain: 1, endpoint: ep, pasid, pgd: proc.pgd, addrWidth: 48 })).toBe(ReqStatus.OK);
  }
  return { uapi, vtd, drv, vtdPasids, virtio };
}

beforeAll(async () => {
  await spawnHost();
  for (const uapi of UAPIS) pairs.push(await startPair(uapi));
}, scaled(60_000));

afterAll(async () => {
  for (const g of guests) await g.close().catch(() => undefined);
  for (const h of hosts) await h.close().catch(() => undefined);
});

/**
 * What the workload saw over all its rounds. Kept as counts plus bounded samples, so a long
 * outage (every DMA failing) cannot grow the test's memory.
 */
interface WorkloadTally {
  rounds: number;
  ok: number;
  /** Wrong data or faults (must stay 0), with the first few described. */
  wrongCount: number;
  wrong: string[];
  /** Errors other than the outage's ECONNRESET / ENOTCONN (must stay 0), first few described. */
  unexpectedCount: number;
  unexpected: string[];
  /** Outage errors (ECONNRESET / ENOTCONN): allowed. */
  outageErrors: number;
  last: { ok: number; wrong: string[]; errors: string[] } | null;
}

const SAMPLES = 20;

function tally(t: WorkloadTally, r: { ok: number; wrong: string[]; errors: string[] }): void {
  t.rounds++;
  t.ok += r.ok;
  t.wrongCount += r.wrong.length;
  t.wrong.push(...r.wrong.slice(0, SAMPLES - t.wrong.length));
  for (const e of r.errors) {
    if (/ECONNRESET|ENOTCONN/.test(e)) t.outageErrors++;
    else {
      t.unexpectedCount++;
      if (t.unexpected.length < SAMPLES) t.unexpected.push(e);
    }
  }
  t.last = r;
}

/** One round of the workload: DMA through every PASID of both VMs, checking the data. */
async function workloadRound(): Promise<{ ok: number; wrong: string[]; errors: string[] }> {
  const r = { ok: 0, wrong: [] as string[], errors: [] as string[] };
  const check = async (what: string, p: Promise<{ ok: boolean; data?: Uint8Array }>, want: string): Promise<void> => {
    try {
      const res = await p;
      if (res.ok && dec(res.data) === want) r.ok++;
      else r.wrong.push(`${what}: ${res.ok ? JSON.stringify(dec(res.data)) : 'fault'}`);
    } catch (e) {
      r.errors.push(`${what}: ${(e as { code?: string }).code ?? String(e)}`);
    }
  };
  const jobs: Promise<void>[] = [];
  for (const { uapi, vtd, vtdPasids, virtio } of pairs) {
    for (const p of vtdPasids) jobs.push(check(`${uapi} vtd pasid ${p}`, vtd.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA, length: 27 }), 'vtd buffer before the crash'));
    jobs.push(check(`${uapi} virtio pasid 5 on 00:03.0`, virtio.dma('00:03.0', { pasid: 5, addr: VIRTIO_VA, length: 19 }), 'virtio process page'));
    jobs.push(check(`${uapi} virtio pasid 0x2345`, virtio.dma('00:03.0', { pasid: 0x2345, addr: VIRTIO_VA, length: 19 }), 'virtio process page'));
    jobs.push(check(`${uapi} virtio pasid 5 on 00:04.0`, virtio.dma('00:04.0', { pasid: 5, addr: VIRTIO_VA, length: 19 }), 'virtio process page'));
    jobs.push(check(`${uapi} virtio iova`, virtio.dma('00:04.0', { addr: IOVA, length: 16 }), 'virtio iova page'));
  }
  await Promise.all(jobs);
  return r;
}

describe('host process killed with SIGKILL mid-workload, new host on the same socket', () => {
  it('every guest, of either uAPI, comes back with the same PASIDs, bindings and DMA results; nothing leaks', async () => {
    const first = await workloadRound();
    expect(first.wrong).toEqual([]);
    expect(first.errors).toEqual([]);
    const before = await hosts[0]!.snapshot();
    expect(snapshotInvariants(before)).toEqual([]);
    const durable = (s: Awaited<ReturnType<StartedHost['snapshot']>>) => pairs.map((x) => ({ uapi: x.uapi, vtd: durableState(vmIn(s, x.vtd.name)), virtio: durableState(vmIn(s, x.virtio.name)) }));
    const want = durable(before);
    for (const { vtd, vtdPasids } of pairs) expect(vmIn(before, vtd.name)!.pasids.map((p) => p.hpasid).sort((a, b) => a - b)).toEqual([...vtdPasids].sort((a, b) => a - b));

    // The workload keeps running through the crash (test/support/workload-loop.ts): a timer
    // pause after every round, so even rounds that fail at once (guests closed, a link that gave
    // up) cannot starve the event loop; the first wrong result or unexpected error ends the loop
    // and fails the steps below at once; it stops when the test is done with it (finally below)
    // and by itself at its deadline.
    const seen: WorkloadTally = { rounds: 0, ok: 0, wrongCount: 0, wrong: [], unexpectedCount: 0, unexpected: [], outageErrors: 0, last: null };
    const loop = new WorkloadLoop({
      what: 'restart workload',
      deadlineMs: 60_000,
      round: async () => {
        tally(seen, await workloadRound());
        expect({ count: seen.wrongCount, first: seen.wrong }).toEqual({ count: 0, first: [] });
        expect({ count: seen.unexpectedCount, first: seen.unexpected }).toEqual({ count: 0, first: [] });
      },
    });
    let host2!: StartedHost;
    try {
      await loop.guard(async () => {
        await sleep(50);
        const vms = pairs.flatMap((x) => [x.vtd, x.virtio]);
        const drops = vms.map((g) => g.link.counters.reconnects);
        process.kill(hosts[0]!.pid, 'SIGKILL');
        await waitFor(() => vms.every((g) => g.link.state !== 'up'), { timeoutMs: 5000, what: 'links down' });
        // DMA submitted during the outage waits for the host (bound: the link's outageWaitMs).
        const during = pairs.map((x) => x.vtd.dma('00:03.0', { pasid: x.vtdPasids[0]!, addr: BENCH_BUFFER_VA, length: 27 }));
        host2 = await spawnHost();
        for (const [i, g] of vms.entries()) await reconnected(g, drops[i]!);
        for (const d of await Promise.all(during)) expect(d.ok && dec(d.data)).toBe('vtd buffer before the crash');
        await sleep(100);
      });
    } finally {
      await withDeadline(loop.stop(), { timeoutMs: 10_000, what: 'workload loop stopped' });
    }

    // Nothing silently wrong: every DMA of the workload returned the right data or a clear error.
    expect(seen.rounds).toBeGreaterThan(0);
    expect({ count: seen.wrongCount, first: seen.wrong }).toEqual({ count: 0, first: [] });
    expect({ count: seen.unexpectedCount, first: seen.unexpected }).toEqual({ count: 0, first: [] });
    expect(seen.last!.errors).toEqual([]);

    // The replay restored everything, at the same host PASIDs.
    for (const { vtd, virtio } of pairs) {
      expect(vtd.lastReconnect).toMatchObject({ resumed: false, replay: { failures: [] } });
      expect(virtio.lastReconnect).toMatchObject({ resumed: false, replay: { failures: [] } });
    }
    const after = await host2.snapshot();
    expect(snapshotInvariants(after)).toEqual([]);
    expect(durable(after)).toEqual(want);
    const final = await workloadRound();
    expect(final).toEqual({ ok: 10 * pairs.length, wrong: [], errors: [] });

    // The guests keep working: a new VCMD PASID is a new number, and binds.
    for (const { vtd, drv, vtdPasids } of pairs) {
      const p = await drv.allocPasid();
      expect(vtdPasids).not.toContain(p);
      await drv.bindPasid(p);
      const r = await vtd.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA, length: 27 });
      expect(r.ok && dec(r.data)).toBe('vtd buffer before the crash');
      expect((vtd.viommu as VtdModel).shadow().filter((e) => e.pasid !== null && e.binding.kind === 'nested')).toHaveLength(7);
    }

    // Teardown on the new host returns every PASID: capacity is back where it started.
    for (const g of guests) await g.close();
    await waitFor(async () => {
      const s = await host2.snapshot();
      return s.vms.length === 0 && s.capacity.available === s.capacity.total;
    }, { timeoutMs: 5000, what: 'capacity restored' });
  }, scaled(60_000));

  it('a DMA issued while no host is there fails with ENOTCONN once the VM stops waiting', async () => {
    const host = hosts.at(-1)!;
    const vm = await GuestVm.start({ socket, name: 'restart-short-wait', viommu: 'vtd', memory: 4 << 20, reconnect: { outageWaitMs: 200, initialDelayMs: 10, maxDelayMs: 50 } }, (ctx) => createVtdModel(ctx));
    guests.push(vm);
    await vm.memwrite(0x1000n, enc('gpa'));
    const ok = await vm.dma('00:03.0', { addr: 0x1000n, length: 3 });
    expect(ok.ok && dec(ok.data)).toBe('gpa');
    process.kill(host.pid, 'SIGKILL');
    await waitFor(() => vm.link.state !== 'up', { timeoutMs: 5000, what: 'link down' });
    await expect(vm.dma('00:03.0', { addr: 0x1000n, length: 3 })).rejects.toMatchObject({ code: 'ENOTCONN' });
    // And once a host is back, the VM is too (translation off: DMA at GPA through domain 0).
    const since = vm.link.counters.reconnects;
    await spawnHost();
    await reconnected(vm, since);
    const again = await vm.dma('00:03.0', { addr: 0x1000n, length: 3 });
    expect(again.ok && dec(again.data)).toBe('gpa');
  }, scaled(30_000));
});
