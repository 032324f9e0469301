/**
 * Connection drops without host death (docs/reliability.md §3): resume with the session token
 * within the grace period (nothing lost, in-flight idempotent requests sent again, orphans of
 * lost non-idempotent requests reconciled), the grace period expiring (the VM is set up afresh
 * and replays), a session without its token, and the host's rule for duplicate requests.
 * In-process host over in-memory connections.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostServer } from '../../../host/server/index.js';
import { GuestVm } from '../../../guest/vm.js';
import { createVtdModel } from '../../../guest/vtd/index.js';
import type { ReconnectPolicy } from '../../../guest/reconnect.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../../src/app/bench/vtd-bench-driver.js';
import { FrontendClient, type Transport } from '../../../vhost/index.js';
import { FrontendMessages } from '../../../vhost/messages/catalogue.js';
import { TestGuest, errnoOf } from '../host/client.js';
import { durableState, iommufdRoutes, reconnected, snapshotInvariants, vmIn } from './helpers.js';
import { scaled, waitFor } from '../../support/wait.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined): string => new TextDecoder().decode(b);
const open: { close(): unknown }[] = [];

afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

/**
 * Wraps the VM's transports: when armed with a request code, the next request with that code is
 * written and the connection is cut as its reply arrives — the host did the work, the guest
 * never saw the answer.
 */
class ReplyCutter {
  armed: number | null = null;
  cuts = 0;
  wrap(t: Transport): Transport {
    let cutNext = false;
    const self = this;
    return {
      setReading: (on) => t.setReading(on),
      start(sink) {
        t.start({
          data: (chunk) => {
            if (cutNext) {
              cutNext = false;
              self.cuts++;
              t.close();
              return;
            }
            sink.data(chunk);
          },
          close: (err) => sink.close(err),
        });
      },
      write(d) {
        const code = d.length >= 4 ? Buffer.from(d.buffer, d.byteOffset, 4).readUInt32LE(0) : -1;
        t.write(d);
        if (self.armed === code) {
          self.armed = null;
          cutNext = true;
        }
      },
      close: () => t.close(),
      get closed() {
        return t.closed;
      },
      label: `cut(${t.label})`,
    };
  }
}

/** While `held` is set, the VM's new connections wait for it (a reconnect held back). */
interface ConnectGate {
  held: Promise<void> | null;
}

type Uapi = 'vfio-sva' | 'iommufd';
const UAPIS: readonly Uapi[] = ['vfio-sva', 'iommufd'];

async function rig(graceMs: number, reconnect: ReconnectPolicy = { initialDelayMs: 5, maxDelayMs: 20 }, pasids = 3, uapi: Uapi = 'vfio-sva') {
  const host = new HostServer({ graceMs });
  open.push(host);
  const cutter = new ReplyCutter();
  const gate: ConnectGate = { held: null };
  const connector = host.connector();
  const vm = await GuestVm.start(
    {
      connect: async () => {
        await gate.held;
        return cutter.wrap(await connector());
      },
      name: 'rc', viommu: 'vtd', memory: 8 << 20, ramBacking: 'inproc', reconnect, uapi,
    },
    (ctx) => createVtdModel(ctx),
  );
  open.push(vm);
  const drv = await VtdBenchDriver.create(vm, { bufferBytes: 4096 });
  const bound: number[] = [];
  for (let i = 0; i < pasids; i++) {
    const p = await drv.allocPasid();
    await drv.bindPasid(p);
    bound.push(p);
  }
  await drv.process.write(BENCH_BUFFER_VA, enc('hello'));
  return { host, vm, drv, bound, cutter, gate };
}

/** A grace period the guest's resume fits in comfortably, on a loaded machine too. */
const RESUME_GRACE_MS = scaled(5000);

async function dmaAll(vm: GuestVm, pasids: number[]): Promise<string[]> {
  return Promise.all(pasids.map(async (p) => {
    const r = await vm.dma('00:03.0', { pasid: p, addr: BENCH_BUFFER_VA, length: 5 });
    return r.ok ? dec(r.data) : `fault ${r.fault.reason}`;
  }));
}

describe.each(UAPIS)('reconnect with the session token (connection dropped, host alive), %s uAPI', (uapi) => {
  it('resumes the same VM: state untouched, DMA unchanged', async () => {
    const { host, vm, bound } = await rig(RESUME_GRACE_MS, undefined, 3, uapi);
    const id = vm.vmId;
    const token = Buffer.from(vm.sessionToken).toString('hex');
    const before = durableState(vmIn(host.snapshot(), 'rc'));
    vm.client.close();
    await reconnected(vm, 0);
    expect(vm.lastReconnect).toEqual({ resumed: true, replay: null, reconciled: { pasids: [], domains: [] } });
    expect(vm.vmId).toBe(id);
    expect(Buffer.from(vm.sessionToken).toString('hex')).toBe(token);
    expect(durableState(vmIn(host.snapshot(), 'rc'))).toEqual(before);
    expect(await dmaAll(vm, bound)).toEqual(bound.map(() => 'hello'));
  });

  it('sends an idempotent request again when its reply was lost, and the host takes the duplicate', async () => {
    const { host, vm, drv, bound, cutter } = await rig(RESUME_GRACE_MS, undefined, 3, uapi);
    const p = await drv.allocPasid();
    // The bind's last request: BIND_GPASID, or the nested HWPT's DEVICE_ATTACH on iommufd.
    cutter.armed = (uapi === 'iommufd' ? FrontendMessages.IOMMUFD_DEVICE_ATTACH : FrontendMessages.BIND_GPASID).code;
    await drv.bindPasid(p); // the host binds, the reply is cut, the link resumes and re-sends
    expect(cutter.cuts).toBe(1);
    expect(vm.link.counters.retried).toBe(1);
    expect(vm.lastReconnect?.resumed).toBe(true);
    const entry = vmIn(host.snapshot(), 'rc')!.pasids.find((x) => x.hpasid === p)!;
    const flptr = `0x${drv.process.pgd.toString(16)}`;
    if (uapi === 'vfio-sva') expect(entry.bindings).toEqual([{ bdf: '00:03.0', pgtt: 'nested', flptr }]);
    else expect(iommufdRoutes(vmIn(host.snapshot(), 'rc')!.iommufd!)).toEqual([{ bdf: '00:03.0', rid: 'blocked', pasids: [...bound, p].map((x) => ({ pasid: x, global: true, to: `nested ${flptr}` })) }]);
    expect(entry.refs).toBe(vmIn(host.snapshot(), 'rc')!.pasids.find((x) => x.hpasid === bound[0])!.refs);
    expect(snapshotInvariants(host.snapshot())).toEqual([]);
    expect(await dmaAll(vm, [...bound, p])).toEqual([...bound, p].map(() => 'hello'));
  });

  it('frees what a lost non-idempotent request left on the host (PASID_ALLOC whose reply never came)', async () => {
    const { host, vm, drv, bound, cutter } = await rig(RESUME_GRACE_MS, undefined, 3, uapi);
    cutter.armed = FrontendMessages.PASID_ALLOC.code;
    // VCMD ALLOC_PASID: the host allocates, the reply is lost; the VCMD asks again after the
    // resume, and the reconciliation has freed the orphan.
    const p = await drv.allocPasid();
    expect(cutter.cuts).toBe(1);
    expect(vm.lastReconnect?.reconciled?.pasids).toHaveLength(1);
    const orphan = vm.lastReconnect!.reconciled!.pasids[0]!;
    const s = vmIn(host.snapshot(), 'rc')!;
    expect(s.pasids.map((x) => x.hpasid).sort((a, b) => a - b)).toEqual([...bound, p].sort((a, b) => a - b));
    expect(s.set.used).toBe(bound.length + 1);
    expect(orphan === p || !s.pasids.some((x) => x.hpasid === orphan)).toBe(true);
  });

  it.runIf(uapi === 'iommufd')('destroys the nested HWPT a lost HWPT_ALLOC left on the host; binding again works', async () => {
    const { host, vm, drv, bound, cutter } = await rig(RESUME_GRACE_MS, undefined, 3, uapi);
    const p = await drv.allocPasid();
    cutter.armed = FrontendMessages.IOMMUFD_HWPT_ALLOC.code;
    await drv.bindPasid(p); // the host allocates, the reply is lost: not sent again, the entry is refused
    expect(cutter.cuts).toBe(1);
    await reconnected(vm, 0);
    expect(vm.lastReconnect?.reconciled?.domains).toHaveLength(1);
    const nested = () => vmIn(host.snapshot(), 'rc')!.iommufd!.hwpts.filter((h) => h.kind === 'nested').length;
    expect(nested()).toBe(bound.length);
    await drv.bindPasid(p); // the guest flushes the PASID cache again: bound this time
    expect(nested()).toBe(bound.length + 1);
    expect(await dmaAll(vm, [...bound, p])).toEqual([...bound, p].map(() => 'hello'));
  });

  it('fails a lost DEVICE_DMA with ECONNRESET instead of repeating it', async () => {
    const { vm, bound, cutter } = await rig(RESUME_GRACE_MS, undefined, 3, uapi);
    cutter.armed = FrontendMessages.DEVICE_DMA.code;
    await expect(vm.dma('00:03.0', { pasid: bound[0]!, addr: BENCH_BUFFER_VA, length: 5 })).rejects.toMatchObject({ code: 'ECONNRESET' });
    await reconnected(vm, 0);
    expect(await dmaAll(vm, bound)).toEqual(bound.map(() => 'hello'));
  });
});

describe.each(UAPIS)('grace period expiring, %s uAPI', (uapi) => {
  it('releases the VM on the host; the guest then sets it up afresh and replays the same PASIDs', async () => {
    const { host, vm, bound, gate } = await rig(50, { initialDelayMs: 300, maxDelayMs: 300 }, 3, uapi);
    const before = durableState(vmIn(host.snapshot(), 'rc'));
    const total = host.snapshot().capacity.total;
    // The reconnect is held back until the release has been seen: under load the guest's
    // backoff could otherwise come back before a poll observes the VM gone.
    let reopen!: () => void;
    gate.held = new Promise<void>((r) => (reopen = r));
    vm.client.close();
    await waitFor(() => host.snapshot().vms.length === 0, { timeoutMs: 2000, what: 'VM released' });
    expect(host.snapshot().capacity.available).toBe(total);
    reopen();
    await reconnected(vm, 0);
    expect(vm.lastReconnect).toMatchObject({ resumed: false, replay: { pasids: 3, bindings: 3, failures: [] } });
    expect(durableState(vmIn(host.snapshot(), 'rc'))).toEqual(before);
    expect(await dmaAll(vm, bound)).toEqual(bound.map(() => 'hello'));
  });
});

describe('a session without its token', () => {
  it('cannot take the VM over: EEXIST for its name in the grace period, ENOENT for a wrong token; afterwards a fresh VM starts empty', async () => {
    // The grace period must outlast the handshake and two VM_SETUPs below, on a loaded machine too.
    const { host, vm } = await rig(scaled(1500), { enabled: false });
    vm.client.close();
    await waitFor(() => vm.link.state === 'failed', { timeoutMs: 1000, what: 'link failed' });
    await expect(vm.dma('00:03.0', { addr: 0n, length: 4 })).rejects.toMatchObject({ code: 'ENOTCONN' });
    const fe = await FrontendClient.connect({ connect: host.connector() });
    open.push(fe);
    await fe.handshake();
    const zero = new Uint8Array(16);
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'rc', pasid_quota: 4, flags: 1, session_token: zero }))).toBe('EEXIST');
    expect(await errnoOf(fe.call('VM_SETUP', { name: 'rc', pasid_quota: 4, flags: 1, session_token: new Uint8Array(16).fill(7) }))).toBe('ENOENT');
    await waitFor(() => host.snapshot().vms.length === 0, { timeoutMs: 5000, what: 'VM released' });
    const r = await fe.setupVm({ name: 'rc', pasid_quota: 4, flags: 1, session_token: zero });
    expect(r.flags).toBe(0);
    expect(vmIn(host.snapshot(), 'rc')!.pasids).toEqual([]);
  });
});

describe('outage bounds: no spin, bounded queue (docs/reliability.md §2.3)', () => {
  it('holds at most maxQueued requests during an outage; one more fails at once with EAGAIN; the held ones go through after the reconnect', async () => {
    const { vm, bound, gate } = await rig(RESUME_GRACE_MS, { initialDelayMs: 5, maxDelayMs: 20, maxQueued: 4, outageWaitMs: scaled(10_000) });
    let reopen!: () => void;
    gate.held = new Promise<void>((r) => (reopen = r));
    vm.client.close();
    await waitFor(() => vm.link.state === 'reconnecting', { what: 'link reconnecting' });
    const held = [0, 1, 2, 3].map(() => vm.dma('00:03.0', { pasid: bound[0]!, addr: BENCH_BUFFER_VA, length: 5 }));
    expect(vm.link.queued).toBe(4);
    await expect(vm.dma('00:03.0', { pasid: bound[0]!, addr: BENCH_BUFFER_VA, length: 5 })).rejects.toMatchObject({ code: 'EAGAIN' });
    expect(vm.link.counters.overflowed).toBe(1);
    expect(vm.link.queued).toBe(4);
    reopen();
    expect((await Promise.all(held)).map((r) => r.ok && dec(r.data))).toEqual(['hello', 'hello', 'hello', 'hello']);
    expect(vm.link.queued).toBe(0);
  });

  it('rejects maxQueued that is not a non-negative integer (EINVAL)', async () => {
    await expect(rig(0, { maxQueued: -1 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(rig(0, { maxQueued: 1.5 })).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('rejects backoff delays and bounds that are not numbers ≥ 0 (EINVAL): no uncapped or 1 ms retry loop', async () => {
    await expect(rig(0, { initialDelayMs: -1 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(rig(0, { maxDelayMs: Number.NaN })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(rig(0, { maxDelayMs: Number.POSITIVE_INFINITY })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(rig(0, { giveUpAfterMs: -5 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(rig(0, { outageWaitMs: Number.NaN })).rejects.toMatchObject({ code: 'EINVAL' });
  });

  for (const how of ['closed', 'failed'] as const) {
    it(`a caller retrying in a loop on a ${how} link still lets timers run (ENOTCONN, never a synchronous rejection)`, async () => {
      const { vm } = await rig(0, { enabled: how === 'closed' });
      if (how === 'closed') await vm.close();
      else {
        vm.client.close();
        await waitFor(() => vm.link.state === 'failed', { what: 'link failed' });
      }
      let fired = false;
      const timer = setTimeout(() => (fired = true), 5);
      const codes = new Set<string>();
      let calls = 0;
      // Bounded by `calls` so a regression fails here instead of hanging the worker.
      while (!fired && calls < 50_000) {
        calls++;
        await vm.dma('00:03.0', { addr: 0n, length: 4 }).catch((e: { code?: string }) => codes.add(String(e.code)));
      }
      clearTimeout(timer);
      expect(fired).toBe(true);
      expect([...codes]).toEqual(['ENOTCONN']);
    });
  }
});

describe('duplicate requests at the host (what a resend after a reconnect relies on)', () => {
  it('re-BIND, re-ATTACH and re-MAP of identical objects succeed and change nothing; different ones keep EEXIST / EBUSY', async () => {
    const host = new HostServer({ graceMs: 0 });
    open.push(host);
    const g = await TestGuest.start({ name: 'dup', connect: host.connector(), backing: 'inproc', quota: 4, devices: [{ rid: 0x18 }, { rid: 0x20 }] });
    open.push(g);
    const p = await g.alloc();
    const q = await g.alloc();
    const root = g.fl.newRoot();
    await g.bind(0x18, p, root, 9);
    const dom = (await g.fe.call('DOMAIN_ALLOC', {})).domain;
    await g.fe.call('DMA_MAP', { domain: dom, flags: 3, iova: 0x10_0000n, gpa: 0x20_0000n, size: 0x2000n });
    await g.fe.call('ATTACH', { rid: 0x18, pgtt: 2, flags: 1, pasid: q, domain: dom });
    await g.fe.call('DETACH', { rid: 0x20, pgtt: 0, flags: 0, pasid: 0, domain: 0 });
    await g.fe.call('ATTACH', { rid: 0x20, pgtt: 0, flags: 0, pasid: 0, domain: dom });
    const before = JSON.stringify({ ...vmIn(host.snapshot(), 'dup'), stats: null });

    await g.bind(0x18, p, root, 9);
    await g.fe.call('DMA_MAP', { domain: dom, flags: 3, iova: 0x10_0000n, gpa: 0x20_0000n, size: 0x2000n });
    await g.fe.call('ATTACH', { rid: 0x18, pgtt: 2, flags: 1, pasid: q, domain: dom });
    await g.fe.call('ATTACH', { rid: 0x20, pgtt: 0, flags: 0, pasid: 0, domain: dom });
    await g.fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(g.ram.size), userspace_addr: 0n, mmap_offset: 0n, path: g.ram.path }] });
    expect(JSON.stringify({ ...vmIn(host.snapshot(), 'dup'), stats: null })).toBe(before);

    expect(await errnoOf(g.bind(0x18, p, g.fl.newRoot(), 9))).toBe('EEXIST');
    expect(await errnoOf(g.fe.call('DMA_MAP', { domain: dom, flags: 1, iova: 0x10_0000n, gpa: 0x20_0000n, size: 0x2000n }))).toBe('EEXIST');
    expect(await errnoOf(g.fe.call('ATTACH', { rid: 0x18, pgtt: 4, flags: 1, pasid: q, domain: 0 }))).toBe('EBUSY');
    expect(await errnoOf(g.fe.call('ATTACH', { rid: 0x20, pgtt: 0, flags: 0, pasid: 0, domain: 0 }))).toBe('EBUSY');
    // A second removal finds nothing: ENOENT at the host (the link counts that as done on a resend).
    await g.unbind(0x18, p);
    expect(await errnoOf(g.unbind(0x18, p))).toBe('ENOENT');
    expect((await g.fe.call('DMA_UNMAP', { domain: dom, iova: 0x10_0000n, size: 0x2000n })).unmapped).toBe(0x2000n);
    expect((await g.fe.call('DMA_UNMAP', { domain: dom, iova: 0x10_0000n, size: 0x2000n })).unmapped).toBe(0n);
    expect(snapshotInvariants(host.snapshot())).toEqual([]);
  });
});
