/**
 * A VM's iommufd context on a host IOMMU fixture: guest RAM (GPA 0 … GUEST_SIZE) at GUEST_HPA,
 * the VM's IOASID set, host RIDs from a counter; and helpers that fill in the iommufd requests.
 */
import { afterEach } from 'vitest';
import { fail } from '../../../../src/errors.js';
import { IoasidCore } from '../../../../host/ioasid/index.js';
import { IommufdContext } from '../../../../host/iommufd/index.js';
import {
  HwptVtdS1Struct, IOMMU_HWPT_ALLOC, IOMMU_HWPT_DATA, IOMMU_HWPT_INVALIDATE_DATA, IOMMU_IOAS_MAP, IOMMUFD_ATTACH, IOMMUFD_DEVICE_CAP,
  VtdS1InvalidateStruct, structBytes, type HwptVtdS1, type VtdS1Invalidate,
} from '../../../../vhost/messages/iommufd.js';
import { GUEST_HPA, GUEST_SIZE, makeFixture, type Fixture } from '../iommu/helpers.js';

export const RW = IOMMU_IOAS_MAP.READABLE | IOMMU_IOAS_MAP.WRITEABLE;
export const FIXED_RW = RW | IOMMU_IOAS_MAP.FIXED_IOVA;
export const PF = 0x18;

export interface World {
  fx: Fixture;
  core: IoasidCore;
  set: ReturnType<IoasidCore['setAlloc']>;
  fd: IommufdContext;
  freed: number[];
}

let worlds: World[] = [];
afterEach(() => {
  for (const w of worlds) {
    w.fd.close();
    w.fx.dispose();
  }
  worlds = [];
});

export function makeWorld(): World {
  const fx = makeFixture();
  const core = new IoasidCore({ pasidBits: 20 });
  const set = core.setAlloc({ quota: 16, name: 'vm' });
  let nextRid = 0x100;
  const freed: number[] = [];
  const fd = new IommufdContext({
    vmName: 'vm',
    iommu: fx.iommu,
    core,
    set,
    gpaToHpa: (gpa, size) => {
      if (gpa + size > BigInt(GUEST_SIZE)) fail('EFAULT', 'outside guest RAM');
      return GUEST_HPA + Number(gpa);
    },
    allocHostRid: () => nextRid++,
    freeHostRid: (rid) => freed.push(rid),
  });
  const w = { fx, core, set, fd, freed };
  worlds.push(w);
  return w;
}

/** The code of the VsvaError a call must throw (test/support/error-code.ts). */
export { expectedErrnoOf as errno } from '../../../support/error-code.js';

export function bind(w: World, rid = PF, pasidWidth = 20, caps = IOMMUFD_DEVICE_CAP.ATS | IOMMUFD_DEVICE_CAP.PRI): number {
  return w.fd.deviceBind({ rid, pasid_width: pasidWidth, caps });
}

/** An IOAS with guest RAM [0, size) mapped IOVA = GPA. */
export function ramIoas(w: World, size = 0x100_0000n): number {
  const ioas = w.fd.ioasAlloc(0);
  w.fd.ioasMap({ ioas_id: ioas, flags: FIXED_RW, user_va: 0n, length: size, iova: 0n });
  return ioas;
}

export function s1(v: Partial<HwptVtdS1> = {}): Uint8Array {
  return structBytes(HwptVtdS1Struct, [{ flags: 0n, pgtbl_addr: 0x10_0000n, addr_width: 48, __reserved: 0, ...v }]);
}

/** An object ID a call returned synchronously (the fixtures' IOASes are small: no fill in slices). */
export function now(id: number | Promise<number>): number {
  if (typeof id !== 'number') throw new Error('expected a synchronous answer');
  return id;
}

export function nestParent(w: World, dev: number, ioas: number, flags = IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID): number {
  return now(w.fd.hwptAlloc({ flags, dev_id: dev, pt_id: ioas, data_type: IOMMU_HWPT_DATA.NONE, data_len: 0, fault_id: 0, data: new Uint8Array(0) }));
}

export function nested(w: World, dev: number, parent: number, data = s1(), over: Partial<Parameters<IommufdContext['hwptAlloc']>[0]> = {}): number {
  return now(w.fd.hwptAlloc({ flags: IOMMU_HWPT_ALLOC.PASID, dev_id: dev, pt_id: parent, data_type: IOMMU_HWPT_DATA.VTD_S1, data_len: data.length, fault_id: 0, data, ...over }));
}

export function attachPasid(w: World, dev: number, pasid: number, pt: number, flags: number = IOMMUFD_ATTACH.PASID): number {
  return now(w.fd.deviceAttach({ dev_id: dev, flags, pasid, pt_id: pt }));
}

export function inv(entries: Partial<VtdS1Invalidate>[]): Uint8Array {
  return structBytes(VtdS1InvalidateStruct, entries.map((e) => ({ addr: 0n, npages: 1n, flags: 0, __reserved: 0, ...e })));
}

export function invalidate(w: World, hwpt: number, data: Uint8Array, entryNum = data.length / 24, entryLen = 24, dataType: number = IOMMU_HWPT_INVALIDATE_DATA.VTD_S1) {
  return w.fd.hwptInvalidate({ hwpt_id: hwpt, data_type: dataType, entry_len: entryLen, entry_num: entryNum, data });
}
