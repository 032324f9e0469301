/**
 * Device attach / replace / detach by RID and by RID+PASID to an IOAS or a HWPT, nested
 * translation end to end with stale-until-HWPT_INVALIDATE, global PASIDs through the VM's IOASID
 * set, and the fault queue — with the errno cases of Linux's
 * tools/testing/selftests/iommu/iommufd.c (pasid_attach / replace / detach, fault queue tests).
 */
import { describe, it, expect } from 'vitest';
import { IOMMUFD_ATTACH, IOMMU_HWPT_ALLOC, IOMMU_PGFAULT_FLAGS, IOMMUFD_PAGE_RESP } from '../../../../vhost/messages/iommufd.js';
import { PageResponseCode } from '../../../../host/iommu/index.js';
import { IOMMUFD_USER } from '../../../../host/iommufd/index.js';
import { FlBuilder } from '../iommu/helpers.js';
import { FaultQueue } from '../../../../host/iommufd/fault-queue.js';
import { attachPasid, bind, errno, inv, invalidate, makeWorld, nestParent, nested, ramIoas, s1, type World } from './fixture.js';

const HOST_RID = 0x100;
const GVA = 0x4000_0000n;
const P = IOMMUFD_ATTACH.PASID;

function nestedWorld() {
  const w = makeWorld();
  const dev = bind(w);
  const ioas = ramIoas(w);
  const parent = nestParent(w, dev, ioas);
  const fl = new FlBuilder(w.fx.ram, 4, 0x10_0000n);
  fl.map(GVA, 0x20_0000n);
  w.fx.ram.write(0x20_0000, new Uint8Array([0xaa]));
  w.fx.ram.write(0x30_0000, new Uint8Array([0xbb]));
  const n = nested(w, dev, parent, s1({ pgtbl_addr: fl.root }));
  return { w, dev, ioas, parent, fl, n };
}

function read(w: World, pasid?: number, addr = GVA) {
  const r = w.fx.iommu.dmaRead(pasid === undefined ? { rid: HOST_RID, addr } : { rid: HOST_RID, pasid, addr }, 1);
  return r.ok ? r.data[0] : 'fault';
}

describe('attach by RID+PASID to a nested HWPT', () => {
  it('translates GVA → GPA → HPA, stays stale until HWPT_INVALIDATE, and detaches', () => {
    const { w, dev, n, fl } = nestedWorld();
    expect(attachPasid(w, dev, 5, n)).toBe(n);
    expect(attachPasid(w, dev, 5, n)).toBe(n); // the same attach again: done
    expect(read(w, 5)).toBe(0xaa);
    expect(read(w, 6)).toBe('fault');
    fl.map(GVA, 0x30_0000n);
    expect(read(w, 5)).toBe(0xaa); // cached: stale until flushed
    expect(invalidate(w, n, inv([{ addr: GVA, npages: 1n }]))).toEqual({ entry_num: 1, first_error: 0 });
    expect(read(w, 5)).toBe(0xbb);
    expect(w.fd.snapshot().devices).toEqual([{ id: dev, bdf: '00:03.0', hostBdf: '01:00.0', rid: null, pasids: [{ pasid: 5, hwpt: n, global: false }] }]);
    expect(errno(() => w.fd.destroy(n))).toBe('EBUSY');
    w.fd.deviceDetach({ dev_id: dev, flags: P, pasid: 5, pt_id: 0 });
    expect(read(w, 5)).toBe('fault');
    expect(errno(() => w.fd.deviceDetach({ dev_id: dev, flags: P, pasid: 5, pt_id: 0 }))).toBe('ENOENT');
    w.fd.destroy(n);
  });

  it('replaces a PASID between nested HWPTs and to the IOAS (second level), restoring the old route on failure', () => {
    const { w, dev, ioas, parent, n } = nestedWorld();
    const fl2 = new FlBuilder(w.fx.ram, 4, 0x18_0000n);
    fl2.map(GVA, 0x30_0000n);
    const n2 = nested(w, dev, parent, s1({ pgtbl_addr: fl2.root }));
    expect(errno(() => w.fd.deviceReplace({ dev_id: dev, flags: P, pasid: 5, pt_id: n2 }))).toBe('EINVAL');
    attachPasid(w, dev, 5, n);
    expect(errno(() => attachPasid(w, dev, 5, n2))).toBe('EINVAL');
    expect(w.fd.deviceReplace({ dev_id: dev, flags: P, pasid: 5, pt_id: n2 })).toBe(n2);
    expect(read(w, 5)).toBe(0xbb);
    const auto = w.fd.deviceReplace({ dev_id: dev, flags: P, pasid: 5, pt_id: ioas });
    expect(read(w, 5, 0x20_0000n)).toBe(0xaa); // IOVA = GPA through the IOAS
    expect(w.fd.snapshot().hwpts.find((h) => h.id === auto)).toMatchObject({ auto: true, users: 1 });
    w.fd.deviceReplace({ dev_id: dev, flags: P, pasid: 5, pt_id: n });
    expect(w.fd.snapshot().hwpts.find((h) => h.id === auto)).toBeUndefined(); // the automatic HWPT went with its last user
    expect(read(w, 5)).toBe(0xaa);
  });

  it('refuses PASID attaches iommufd refuses', () => {
    const { w, dev, ioas, parent, n } = nestedWorld();
    const noPasid = bind(w, 0x20, 0, 0);
    const narrow = bind(w, 0x28, 4, 0);
    const plainParent = nestParent(w, dev, ioas, IOMMU_HWPT_ALLOC.NEST_PARENT); // no ALLOC_PASID
    const plainNested = nested(w, dev, parent, s1(), { flags: 0 });
    expect(errno(() => attachPasid(w, noPasid, 1, n))).toBe('EINVAL');
    expect(errno(() => attachPasid(w, narrow, 16, n))).toBe('EINVAL');
    expect(errno(() => attachPasid(w, dev, 0, n))).toBe('EINVAL');
    expect(errno(() => attachPasid(w, dev, 3, plainParent))).toBe('EINVAL');
    expect(errno(() => attachPasid(w, dev, 3, plainNested))).toBe('EINVAL');
    expect(errno(() => attachPasid(w, dev, 3, n, P | 0x80))).toBe('EOPNOTSUPP');
    expect(errno(() => attachPasid(w, dev, 3, 999))).toBe('ENOENT');
    expect(errno(() => attachPasid(w, 999, 3, n))).toBe('ENOENT');
    const fault = w.fd.faultQueueAlloc(0);
    expect(errno(() => attachPasid(w, dev, 3, fault))).toBe('EINVAL');
    expect(errno(() => w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 3, pt_id: n }))).toBe('EINVAL');
    // a nested HWPT on the RID is not modelled by the host IOMMU
    expect(errno(() => w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: n }))).toBe('EOPNOTSUPP');
    // RID on a HWPT without ALLOC_PASID blocks PASID attaches, and the other way round
    w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: plainParent });
    expect(errno(() => attachPasid(w, dev, 3, n))).toBe('EINVAL');
    w.fd.deviceReplace({ dev_id: dev, flags: 0, pasid: 0, pt_id: parent });
    attachPasid(w, dev, 3, n);
    expect(errno(() => w.fd.deviceReplace({ dev_id: dev, flags: 0, pasid: 0, pt_id: plainParent }))).toBe('EINVAL');
    expect(errno(() => w.fd.deviceAttach({ dev_id: dev, flags: 0, pasid: 0, pt_id: ioas }))).toBe('EINVAL');
  });
});

describe('global PASIDs (ENQCMD / SIOV) through the IOASID set', () => {
  it('attach with GLOBAL_PASID takes an iommufd reference; a free while attached is deferred to the detach', () => {
    const { w, dev, n } = nestedWorld();
    const G = P | IOMMUFD_ATTACH.GLOBAL_PASID;
    expect(errno(() => attachPasid(w, dev, 9, n, G))).toBe('ENOENT'); // not allocated by this VM
    expect(errno(() => attachPasid(w, dev, 9, n, IOMMUFD_ATTACH.GLOBAL_PASID))).toBe('EINVAL');
    const pasid = w.core.alloc(w.set, 1, 0xfffff);
    attachPasid(w, dev, pasid, n, G);
    expect(w.core.userRefCount(pasid, IOMMUFD_USER)).toBe(1);
    expect(errno(() => w.fd.deviceReplace({ dev_id: dev, flags: P, pasid, pt_id: n }))).toBe('EINVAL');
    w.core.free(w.set, pasid);
    expect(w.core.idInfo(pasid)).not.toBeNull(); // pending
    w.fd.deviceDetach({ dev_id: dev, flags: P, pasid, pt_id: 0 });
    expect(w.core.idInfo(pasid)).toBeNull(); // reclaimed
  });
});

describe('fault queue', () => {
  function faultWorld() {
    const x = nestedWorld();
    const fault = x.w.fd.faultQueueAlloc(0);
    const fn = nested(x.w, x.dev, x.parent, s1({ pgtbl_addr: x.fl.root }), { flags: IOMMU_HWPT_ALLOC.FAULT_ID_VALID | IOMMU_HWPT_ALLOC.PASID, fault_id: fault });
    attachPasid(x.w, x.dev, 7, fn);
    return { ...x, fault, fn };
  }

  it('queues page requests as records, reads whole groups, answers by cookie', async () => {
    const { w, dev, fault } = faultWorld();
    const p1 = w.fx.iommu.pageRequest(HOST_RID, { pasid: 7, addr: 0x5000_0000n, write: true, prgi: 3, lpig: false });
    const p2 = w.fx.iommu.pageRequest(HOST_RID, { pasid: 7, addr: 0x5000_1000n, write: true, prgi: 4 });
    expect(w.fd.faultRead(fault, 8)).toEqual([
      { flags: IOMMU_PGFAULT_FLAGS.PASID_VALID | IOMMU_PGFAULT_FLAGS.LAST_PAGE, dev_id: dev, pasid: 7, grpid: 4, perm: 2, addr: 0x5000_1000n, length: 4096, cookie: 2 },
    ]); // group 3 is incomplete
    expect(errno(() => w.fd.faultRespond({ fault_id: fault, cookie: 1, code: 0 }))).toBe('EINVAL'); // not read yet
    expect(errno(() => w.fd.faultRespond({ fault_id: fault, cookie: 2, code: 2 }))).toBe('EINVAL');
    expect(errno(() => w.fd.faultRespond({ fault_id: fault, cookie: 99, code: 0 }))).toBe('EINVAL');
    w.fd.faultRespond({ fault_id: fault, cookie: 2, code: IOMMUFD_PAGE_RESP.SUCCESS });
    expect(errno(() => w.fd.faultRespond({ fault_id: fault, cookie: 2, code: 0 }))).toBe('EINVAL');
    expect(await p2).toBe(PageResponseCode.SUCCESS);
    // the incomplete group 3 is answered INVALID when the device is unbound
    w.fd.deviceDetach({ dev_id: dev, flags: P, pasid: 7, pt_id: 0 });
    w.fd.deviceUnbind(dev);
    expect(await p1).toBe(PageResponseCode.INVALID);
  });

  it('reads whole groups only: a group that does not fit stays queued', () => {
    const q = new FaultQueue(1);
    const answers: number[] = [];
    const rec = { flags: IOMMU_PGFAULT_FLAGS.PASID_VALID, dev_id: 2, pasid: 7, grpid: 3, perm: 1, addr: 0x1000n, length: 4096 };
    q.push(rec, (c) => answers.push(c));
    q.push({ ...rec, addr: 0x2000n, flags: rec.flags | IOMMU_PGFAULT_FLAGS.LAST_PAGE }, (c) => answers.push(c));
    expect(q.read(1)).toEqual([]);
    expect(q.read(2).map((r) => [r.addr, r.cookie])).toEqual([[0x1000n, 1], [0x2000n, 1]]);
    q.push({ ...rec, grpid: 4, flags: rec.flags | IOMMU_PGFAULT_FLAGS.LAST_PAGE }, (c) => answers.push(100 + c));
    q.close();
    expect(answers.sort()).toEqual([1, 101]); // the read group and the queued one, INVALID on destroy
  });

  it('answers INVALID without a queue, and for every unanswered group when its HWPT and queue go', async () => {
    const { w, dev, n, fault, fn } = faultWorld();
    attachPasid(w, dev, 8, n);
    expect(await w.fx.iommu.pageRequest(HOST_RID, { pasid: 8, addr: 0x6000_0000n })).toBe(PageResponseCode.INVALID);
    const p = w.fx.iommu.pageRequest(HOST_RID, { pasid: 7, addr: 0x6000_0000n });
    expect(errno(() => w.fd.destroy(fault))).toBe('EBUSY');
    w.fd.deviceDetach({ dev_id: dev, flags: P, pasid: 7, pt_id: 0 });
    w.fd.destroy(fn);
    w.fd.destroy(fault);
    expect(await p).toBe(PageResponseCode.INVALID);
  });
});

describe('close', () => {
  it('releases every object, host device and domain of the VM', () => {
    const { w } = nestedWorld();
    const before = w.fx.iommu.stats().domains;
    attachPasid(w, 1, 5, 4);
    w.fd.close();
    expect(w.fd.objects.size).toBe(0);
    expect(w.fx.iommu.stats().devices).toBe(0);
    expect(w.fx.iommu.stats().domains).toBe(before - 1);
    expect(w.freed).toEqual([HOST_RID]);
  });
});
