/**
 * host/iommufd/snapshot.ts beside the PASID table: the bindings a global PASID's row shows (its
 * GLOBAL_PASID attachments: nested → PGTT nested with the first-level table, paging → sl) and
 * GlobalPasidTracker, which names the global PASIDs whose attachments moved without an IOASID
 * core call (REPLACE) — only when the VM's generation moved.
 */
import { describe, it, expect } from 'vitest';
import { GlobalPasidTracker, globalPasidBindings } from '../../../../host/iommufd/snapshot.js';
import { IOMMUFD_ATTACH } from '../../../../vhost/messages/iommufd.js';
import { attachPasid, bind, makeWorld, nestParent, nested, ramIoas, s1 } from './fixture.js';

const GLOBAL = IOMMUFD_ATTACH.PASID | IOMMUFD_ATTACH.GLOBAL_PASID;

describe('iommufd bindings of the PASID table', () => {
  it('lists a global PASID’s attachments; device-local PASIDs are not bindings of a row', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = ramIoas(w);
    const parent = nestParent(w, dev, ioas);
    const a = nested(w, dev, parent, s1({ pgtbl_addr: 0x20_0000n }));
    const pasid = w.core.alloc(w.set, 1, 100);
    attachPasid(w, dev, pasid, a, GLOBAL);
    attachPasid(w, dev, 77, parent); // device-local, on the paging HWPT
    expect(globalPasidBindings(w.fd.objects, pasid)).toEqual([{ bdf: '00:03.0', pgtt: 'nested', flptr: '0x200000' }]);
    expect(globalPasidBindings(w.fd.objects, 77)).toEqual([]);
    const other = w.core.alloc(w.set, 1, 100);
    attachPasid(w, dev, other, parent, GLOBAL);
    expect(globalPasidBindings(w.fd.objects, other)).toEqual([{ bdf: '00:03.0', pgtt: 'sl' }]);
  });

  it('names the global PASIDs whose attachments moved, once per generation', () => {
    const w = makeWorld();
    const dev = bind(w);
    const parent = nestParent(w, dev, ramIoas(w));
    const a = nested(w, dev, parent, s1({ pgtbl_addr: 0x20_0000n }));
    const b = nested(w, dev, parent, s1({ pgtbl_addr: 0x30_0000n }));
    const p1 = w.core.alloc(w.set, 1, 100);
    const p2 = w.core.alloc(w.set, 1, 100);
    const t = new GlobalPasidTracker();
    expect(t.changed(w.fd.objects, 1)).toEqual([]);
    attachPasid(w, dev, p1, a, GLOBAL);
    attachPasid(w, dev, p2, a, GLOBAL);
    expect(t.changed(w.fd.objects, 2).sort()).toEqual([p1, p2].sort());
    expect(t.changed(w.fd.objects, 3)).toEqual([]); // nothing moved
    w.fd.deviceReplace({ dev_id: dev, flags: GLOBAL, pasid: p2, pt_id: b });
    expect(t.changed(w.fd.objects, 3)).toEqual([]); // the same generation: not looked at
    expect(t.changed(w.fd.objects, 4)).toEqual([p2]);
    w.fd.deviceDetach({ dev_id: dev, flags: GLOBAL, pasid: p1, pt_id: 0 });
    expect(t.changed(w.fd.objects, 5)).toEqual([p1]);
  });
});
