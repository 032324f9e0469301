/**
 * The snapshot's PASID tables are kept row by row (host/server/pasid-rows.ts, through the IOASID
 * core's change listeners): after any core call and any sequence of requests they equal a
 * table rebuilt from scratch, GET_STATE's JSON text says the same as the snapshot object, and
 * rows already handed out never change.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import fc from 'fast-check';
import type { IoasidCore, IoasidSet } from '../../../../host/ioasid/index.js';
import { HostServer } from '../../../../host/server/index.js';
import { PasidRows, rowJson } from '../../../../host/server/pasid-rows.js';
import type { PasidSnapshot } from '../../../../src/api/types.js';
import { DeviceDmaFlag, DeviceDmaOp } from '../../../../vhost/index.js';
import { TestGuest } from '../../../integration/host/client.js';
import { waitFor } from '../../../support/wait.js';
import { CORE_CALLS, callFixture } from '../ioasid/core-calls.js';

const PF = 0x18;
const PF2 = 0x30;
const ADI = 0x20;
const servers: HostServer[] = [];
const guests: TestGuest[] = [];

afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const s of servers.splice(0)) await s.close();
});

async function setup(names: string[]) {
  const host = new HostServer({ graceMs: 0 });
  servers.push(host);
  const gs: TestGuest[] = [];
  for (const name of names) {
    const g = await TestGuest.start({ name, connect: host.connector(), backing: 'inproc', quota: 12, devices: [{ rid: PF }, { rid: PF2 }, { rid: ADI, kind: 'adi' }] });
    guests.push(g);
    gs.push(g);
  }
  return { host, gs };
}

/** A VM's PASID table built from scratch, the way the snapshot is defined. */
function rebuilt(host: HostServer, name: string): PasidSnapshot[] {
  const vm = host.vm(name)!;
  if (!host.core.isSetValid(vm.set)) return [];
  return host.core.snapshotSet(vm.set).ids.map((id) => ({
    hpasid: id.id,
    gpasid: id.spid,
    state: id.state,
    refs: id.refs,
    users: id.users,
    bindings: vm.container.bindingsOf(id.id),
  }));
}

/** A set's rows built from scratch from the core (no bindings). */
function rebuiltRows(core: IoasidCore, set: IoasidSet): PasidSnapshot[] {
  if (!core.isSetValid(set)) return [];
  return core.snapshotSet(set).ids.map((id) => ({ hpasid: id.id, gpasid: id.spid, state: id.state, refs: id.refs, users: id.users, bindings: [] }));
}

describe('PasidRows on the IOASID core', () => {
  it.each(Object.entries(CORE_CALLS))('equal a from-scratch table after %s', (_name, call) => {
    const f = callFixture();
    const tables = [f.a, f.b].map((set) => ({ set, rows: new PasidRows(f.core, set, () => []) }));
    for (const t of tables) expect(t.rows.rows()).toEqual(rebuiltRows(f.core, t.set)); // read once: later reads are row by row
    const versions = tables.map((t) => t.rows.version);
    call.run(f);
    for (const [i, t] of tables.entries()) {
      expect(t.rows.rows()).toEqual(rebuiltRows(f.core, t.set));
      expect(JSON.parse(t.rows.json())).toEqual(rebuiltRows(f.core, t.set));
      // A call that changes no ID record rebuilds no row.
      if (!call.changes) expect(t.rows.version).toBe(versions[i]);
    }
  });

  it('follow a set to its end, and stop listening on dispose', () => {
    const f = callFixture();
    const unregister = vi.spyOn(f.core, 'unregisterChangeListener');
    const rows = new PasidRows(f.core, f.b, () => []);
    expect(rows.rows().map((r) => r.hpasid)).toEqual([f.other]);
    f.core.setPut(f.b);
    f.core.free(f.b, f.other); // the last ID of an unheld set: the set goes
    expect(f.core.isSetValid(f.b)).toBe(false);
    expect(rows.rows()).toEqual([]);
    rows.dispose(); // the listener went with the set: nothing to unregister
    expect(unregister).not.toHaveBeenCalled();

    const live = new PasidRows(f.core, f.a, () => []);
    live.dispose();
    live.dispose();
    expect(unregister).toHaveBeenCalledTimes(1);
    expect(unregister).toHaveBeenCalledWith(f.a, expect.any(Function));
    f.core.alloc(f.a, 1, 255);
    expect(live.rows()).toEqual(rebuiltRows(f.core, f.a)); // disposed tables rebuild on every read
  });
});

describe('a row\'s JSON text', () => {
  it('is JSON.stringify(row) exactly, for every state, SPID or none, users and bindings', () => {
    const binding = fc.record(
      { bdf: fc.string(), pgtt: fc.constantFrom<'nested' | 'sl' | 'pt'>('nested', 'sl', 'pt'), flptr: fc.string() },
      { requiredKeys: ['bdf', 'pgtt'] },
    );
    const row = fc.record({
      hpasid: fc.integer({ min: 1, max: 0xfffff }),
      gpasid: fc.option(fc.integer({ min: 0, max: 0xfffff }), { nil: null }),
      state: fc.constantFrom<PasidSnapshot['state']>('idle', 'active', 'free-pending'),
      refs: fc.nat(1000),
      users: fc.array(fc.string(), { maxLength: 4 }),
      bindings: fc.array(binding, { maxLength: 3 }),
    });
    fc.assert(fc.property(row, (r) => rowJson(r) === JSON.stringify(r)));
  });
});

describe('PasidRows kept current without reads', () => {
  it('rebuild changed rows in the turn after the change, before anyone reads them', async () => {
    const f = callFixture();
    const rows = new PasidRows(f.core, f.a, () => []);
    rows.rows();
    const version = rows.version;
    f.core.get(f.a, f.idle, 'kvm');
    f.core.alloc(f.a, 1, 255);
    expect(rows.pendingChanges).toBe(2);
    expect(rows.version).toBe(version);
    await new Promise((resolve) => setImmediate(resolve));
    expect(rows.pendingChanges).toBe(0);
    expect(rows.version).toBe(version + 1);
    expect(rows.rows()).toEqual(rebuiltRows(f.core, f.a));
    expect(JSON.parse(rows.json())).toEqual(rebuiltRows(f.core, f.a));
    expect(rows.version).toBe(version + 1); // the read found nothing to do
  });

  it('stop their upkeep on dispose; reads still see the core', async () => {
    const f = callFixture();
    const rows = new PasidRows(f.core, f.a, () => []);
    rows.rows();
    rows.dispose();
    f.core.alloc(f.a, 1, 255);
    await new Promise((resolve) => setImmediate(resolve));
    const version = rows.version;
    expect(rows.rows()).toEqual(rebuiltRows(f.core, f.a));
    expect(rows.version).toBe(version + 1); // rebuilt by the read
  });
});

describe('snapshot PASID tables kept row by row', () => {
  it('equal a from-scratch table after every step of random request sequences; GET_STATE says the same', async () => {
    const { host, gs } = await setup(['A', 'B']);
    const roots = gs.map((g) => g.fl.newRoot());
    for (const [i, g] of gs.entries()) g.fl.map(roots[i]!, 0x1000n, 0x20_0000);
    type Op = { vm: number; kind: 'alloc' | 'bind' | 'bind2' | 'unbind' | 'free' | 'attach' | 'detach' | 'adi' | 'dma'; pick: number };
    const op = fc.record({
      vm: fc.integer({ min: 0, max: 1 }),
      kind: fc.constantFrom<Op['kind']>('alloc', 'bind', 'bind', 'bind2', 'unbind', 'unbind', 'free', 'attach', 'detach', 'adi', 'dma'),
      pick: fc.nat(20),
    });
    let rowsSeen = 0;
    const dom = await gs[0]!.fe.call('DOMAIN_ALLOC', {});
    const dom1 = [dom.domain, (await gs[1]!.fe.call('DOMAIN_ALLOC', {})).domain];
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
        // Three PASIDs each to start with, interleaved between the VMs.
        for (let k = 0; k < 3; k++) for (const g of gs) await g.alloc();
        for (const o of ops) {
          const g = gs[o.vm]!;
          const own = host.vm(g.name)!.snapshot().pasids.map((p) => p.hpasid);
          const p = own.length === 0 ? 1 : own[o.pick % own.length]!;
          const call = (() => {
            switch (o.kind) {
              case 'alloc': return g.alloc();
              case 'bind': return g.bind(PF, p, roots[o.vm]!, 100 + (p % 50));
              case 'bind2': return g.bind(PF2, p, roots[o.vm]!, 100 + (p % 50));
              case 'unbind': return g.unbind(o.pick % 2 === 0 ? PF : PF2, p);
              case 'free': return g.free(p);
              case 'attach': return g.fe.call('ATTACH', { rid: PF2, pgtt: 2, flags: 1, pasid: p, domain: dom1[o.vm]! });
              case 'detach': return g.fe.call('DETACH', { rid: PF2, pgtt: 2, flags: 1, pasid: p, domain: dom1[o.vm]! });
              case 'adi': return g.read(ADI, 0x1000n, 4, 100 + (p % 50));
              case 'dma': return g.fe.call('DEVICE_DMA', { rid: PF, op: DeviceDmaOp.READ, flags: DeviceDmaFlag.PASID_VALID, pasid: p, addr: 0x1000n, length: 4 });
            }
          })();
          await (call as Promise<unknown>).catch(() => undefined); // refusals are fine: the table must still match
          const snap = host.snapshot();
          for (const name of ['A', 'B']) expect(snap.vms.find((v) => v.name === name)!.pasids).toEqual(rebuilt(host, name));
          rowsSeen += snap.vms.reduce((n, v) => n + v.pasids.length, 0);
        }
        expect(JSON.parse(host.snapshotJson())).toEqual(JSON.parse(JSON.stringify(host.snapshot())));
        // Leave the VMs empty for the next run.
        for (const g of gs) {
          const ids = host.vm(g.name)!.snapshot().pasids.map((x) => x.hpasid);
          for (const id of ids) await g.free(id).catch(() => undefined);
        }
      }),
      { numRuns: 15 },
    );
    expect(rowsSeen).toBeGreaterThan(200); // the sequences really exercised the tables
    // Disconnected VMs go away with everything they held.
    gs[1]!.close();
    await waitFor(() => host.snapshot().vms.length === 1, { what: 'closed VM released' });
    expect(host.snapshot().vms.map((v) => v.name)).toEqual(['A']);
  });

  it('never changes rows it has handed out', async () => {
    const { host, gs: [g] } = await setup(['A']);
    const p = await g!.alloc();
    const before = host.snapshot().vms[0]!.pasids;
    const copy = structuredClone(before);
    await g!.bind(PF, p, g!.fl.newRoot(), 9);
    const after = host.snapshot().vms[0]!.pasids;
    expect(before).toEqual(copy);
    expect(after[0]).toMatchObject({ hpasid: p, gpasid: 9, refs: 3, users: ['iommu', 'kvm'] });
    after.length = 0; // a caller changing its copy changes nothing inside
    expect(host.snapshot().vms[0]!.pasids).toHaveLength(1);
  });

  it('serves GET_STATE from the cached text: equal to the snapshot, kvm table included', async () => {
    const { host, gs: [a, b] } = await setup(['A', 'B']);
    const pa = await a!.alloc();
    await a!.bind(PF, pa, a!.fl.newRoot(), 42);
    await b!.alloc();
    const text = (await a!.fe.call('GET_STATE')).json;
    const parsed = JSON.parse(text) as { vms: { name: string; kvm: unknown }[] };
    // A VM's connection sees its own VM; the host head without the host-wide IOMMU counters.
    const { iommu, ...head } = JSON.parse(JSON.stringify(host.snapshot())) as { iommu: unknown; vms: { name: string }[] };
    void iommu;
    expect(parsed).toEqual({ ...head, vms: head.vms.filter((v) => v.name === 'A') });
    expect(parsed.vms.find((v) => v.name === 'A')!.kvm).toEqual([{ gpasid: 42, hpasid: pa }]);
    expect(JSON.parse(host.snapshotJson())).toEqual(JSON.parse(JSON.stringify(host.snapshot())));
  });
});
