/**
 * KVM's gPASID→hPASID table and the VDCM's ADI programming, driven by IOASID notifications with
 * the reference counts of "IOASID Extensions for SIOV" (Jacob Pan, Yi L. Liu, LPC 2020); and the
 * misbehaving guest that frees a bound PASID.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { IoasidCore } from '../../../host/ioasid/index.js';
import { Kvm } from '../../../host/kvm/kvm.js';
import { Vdcm } from '../../../host/vdcm/vdcm.js';
import { HostServer } from '../../../host/server/index.js';
import { TestGuest, errnoOf } from '../../integration/host/client.js';

function setup() {
  const core = new IoasidCore({ pasidBits: 10 });
  const set = core.setAlloc({ quota: 8, name: 'vm' });
  const kvm = new Kvm(core).createVm(set, 'vm');
  const vdcm = new Vdcm(core).createVm(set, 'vm');
  vdcm.addAdi(0x20);
  return { core, set, kvm, vdcm };
}

/** A PASID bound with guest PASID `gpasid` (KVM took its reference) and programmed into the ADI. */
function boundAndProgrammed(gpasid: number) {
  const w = setup();
  const id = w.core.alloc(w.set, 1, 100);
  w.core.attachSpid(w.set, id, gpasid);
  w.core.notify(id, 'BIND');
  w.vdcm.program(0x20, gpasid);
  return { ...w, id };
}

const refs = (core: IoasidCore, id: number) => core.idInfo(id) && { refs: core.idInfo(id)!.refs, users: core.idInfo(id)!.users };

describe('KVM and VDCM as IOASID users (LPC 2020 SIOV IOASID life cycle)', () => {
  it('follows the guest SVA life cycle: alloc 1, bind 2, KVM 3, VDCM 4, and back down to reclaim', () => {
    const { core, set, kvm, vdcm } = setup();
    const id = core.alloc(set, 1, 100);
    expect(refs(core, id)).toEqual({ refs: 1, users: [] });
    core.get(set, id, 'iommu');
    core.attachSpid(set, id, 42);
    core.notify(id, 'BIND');
    expect(refs(core, id)).toEqual({ refs: 3, users: ['iommu', 'kvm'] });
    expect(kvm.translate(42)).toBe(id);
    expect(vdcm.program(0x20, 42)).toBe(id);
    expect(refs(core, id)).toEqual({ refs: 4, users: ['iommu', 'kvm', 'vdcm'] });
    // Programming the same guest PASID again takes no second reference.
    expect(vdcm.program(0x20, 42)).toBe(id);
    expect(core.idInfo(id)!.refs).toBe(4);
    vdcm.clear(0x20, 42);
    expect(refs(core, id)).toEqual({ refs: 3, users: ['iommu', 'kvm'] });
    core.notify(id, 'UNBIND');
    core.detachSpid(set, id);
    expect(kvm.translate(42)).toBeUndefined();
    core.put(set, id, 'iommu');
    expect(refs(core, id)).toEqual({ refs: 1, users: [] });
    expect(core.free(set, id)).toBe(true);
    expect(core.idInfo(id)).toBeNull();
  });

  it('drops KVM and VDCM references on FREE, so a freed bound PASID is reclaimed', () => {
    const { core, set, kvm, vdcm, id } = boundAndProgrammed(7);
    expect(core.idInfo(id)!.refs).toBe(3);
    core.free(set, id);
    expect(core.idInfo(id)).toBeNull();
    expect(kvm.size).toBe(0);
    expect(vdcm.programmedHpasid(0x20, 7)).toBeUndefined();
  });

  it('VDCM errors: unknown ADI and unbound guest PASID are ENOENT; a duplicate ADI is EEXIST', () => {
    const { core, set, vdcm } = setup();
    const id = core.alloc(set, 1, 100);
    expect(() => vdcm.program(0x28, 1)).toThrow(/ENOENT/);
    expect(() => vdcm.program(0x20, 99)).toThrow(/ENOENT/);
    expect(() => vdcm.clear(0x20, 99)).toThrow(/ENOENT/);
    expect(() => vdcm.addAdi(0x20)).toThrow(/EEXIST/);
    expect(core.idInfo(id)!.refs).toBe(1);
  });

  it('detach releases every reference and leaves the chain', () => {
    const { core, kvm, vdcm, id } = boundAndProgrammed(5);
    kvm.detach();
    vdcm.detach();
    expect(core.idInfo(id)!.refs).toBe(1);
    core.notify(id, 'BIND'); // nobody listens any more
    expect(core.idInfo(id)!.refs).toBe(1);
  });
});

describe('a guest that frees a bound PASID (the misbehaving case of the IOASID extensions for guest SVA)', () => {
  const servers: HostServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  it('tears the binding down, drops every reference, reclaims the PASID; a later unbind is ENOENT', async () => {
    const host = new HostServer({ graceMs: 0 });
    servers.push(host);
    const g = await TestGuest.start({ name: 'vm', connect: host.connector(), backing: 'inproc' });
    const p = await g.alloc();
    const root = g.fl.newRoot();
    g.fl.map(root, 0x1000n, 0x20_0000);
    await g.bind(0x18, p, root, 33);
    expect((await g.read(0x18, 0x1000n, 4, p)).status).toBe(0);
    expect(await g.free(p)).toBe(1);
    const vm = await g.vm();
    expect(vm.pasids).toEqual([]);
    expect(vm.kvm).toEqual([]);
    expect(host.iommu.device(host.iommu.listDevices()[0]!.rid).pasidAttachments.size).toBe(0);
    expect(await errnoOf(g.unbind(0x18, p))).toBe('ENOENT');
    // The freed PASID has no PASID entry any more: the DMA faults (SPT.2), it does not reach memory.
    expect(await g.read(0x18, 0x1000n, 4, p)).toEqual({ status: 1, reason: 0x59, flags: 1, pasid: p, fault_addr: 0x1000n });
    g.close();
  });
});
