/**
 * HWPT_ALLOC (paging with NEST_PARENT, nested VT-d stage-1), HWPT_INVALIDATE with its handled
 * count, GET_HW_INFO — with the errno cases of Linux's tools/testing/selftests/iommu/iommufd.c
 * (hwpt_alloc, hwpt_alloc_nested, hwpt_invalidate of the iommufd_ioas fixture) that apply to VT-d.
 */
import { describe, it, expect } from 'vitest';
import { IOMMU_HW_INFO_TYPE, IOMMU_HWPT_ALLOC, IOMMU_HWPT_DATA, IOMMU_VTD_INV_FLAGS_LEAF, IOMMU_VTD_S1 } from '../../../../vhost/messages/iommufd.js';
import { bind, errno, inv, invalidate, makeWorld, nestParent, nested, ramIoas, s1 } from './fixture.js';

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const NONE = { data_type: IOMMU_HWPT_DATA.NONE, data_len: 0, fault_id: 0, data: new Uint8Array(0) };

describe('HWPT_ALLOC', () => {
  it('allocates a nest parent from an IOAS and nested HWPTs on it; the parent cannot be destroyed while used', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = ramIoas(w);
    const parent = nestParent(w, dev, ioas);
    const n1 = nested(w, dev, parent);
    const n2 = nested(w, dev, parent, s1({ addr_width: 57, flags: IOMMU_VTD_S1.SRE | IOMMU_VTD_S1.WPE | IOMMU_VTD_S1.EAFE }));
    expect(errno(() => w.fd.destroy(parent))).toBe('EBUSY');
    expect(errno(() => w.fd.destroy(ioas))).toBe('EBUSY');
    const snap = w.fd.snapshot();
    expect(snap.hwpts.find((h) => h.id === parent)).toMatchObject({ kind: 'paging', nestParent: true, children: [n1, n2], ioas });
    expect(snap.hwpts.find((h) => h.id === n1)).toMatchObject({ kind: 'nested', parent, flptr: '0x100000' });
    w.fd.destroy(n1);
    w.fd.destroy(n2);
    w.fd.destroy(parent);
    w.fd.destroy(ioas);
  });

  it('refuses bad flags, types, IDs and data with iommufd errnos', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = ramIoas(w);
    const parent = nestParent(w, dev, ioas);
    const plain = nestParent(w, dev, ioas, 0);
    const n1 = nested(w, dev, parent);
    const alloc = (o: Partial<Parameters<typeof w.fd.hwptAlloc>[0]>) => errno(() => w.fd.hwptAlloc({ flags: 0, dev_id: dev, pt_id: ioas, ...NONE, ...o }));
    expect(alloc({ flags: 1 << 7 })).toBe('EOPNOTSUPP');
    expect(alloc({ dev_id: 999 })).toBe('ENOENT');
    expect(alloc({ dev_id: ioas })).toBe('ENOENT');
    expect(alloc({ pt_id: 999 })).toBe('ENOENT');
    expect(alloc({ pt_id: dev })).toBe('EINVAL');
    // data_len and data_type must agree
    expect(alloc({ data_type: IOMMU_HWPT_DATA.NONE, data_len: 24, data: s1() })).toBe('EINVAL');
    expect(alloc({ data_type: IOMMU_HWPT_DATA.VTD_S1, data_len: 0 })).toBe('EINVAL');
    // an IOAS takes no driver data
    expect(alloc({ data_type: IOMMU_HWPT_DATA.VTD_S1, data_len: 24, data: s1() })).toBe('EINVAL');
    // fault_id without FAULT_ID_VALID; unknown fault queue
    expect(alloc({ fault_id: 5 })).toBe('EINVAL');
    expect(alloc({ flags: IOMMU_HWPT_ALLOC.FAULT_ID_VALID, fault_id: 999 })).toBe('ENOENT');
    // nested: needs data, accepts only FAULT_ID_VALID / PASID, a VT-d type, a nest parent
    expect(errno(() => nested(w, dev, parent, s1(), { flags: IOMMU_HWPT_ALLOC.NEST_PARENT }))).toBe('EOPNOTSUPP');
    expect(errno(() => nested(w, dev, parent, s1(), { data_type: IOMMU_HWPT_DATA.ARM_SMMUV3 }))).toBe('EOPNOTSUPP');
    expect(errno(() => nested(w, dev, parent, s1(), { data_type: 0xff }))).toBe('EOPNOTSUPP');
    expect(errno(() => nested(w, dev, plain))).toBe('EINVAL');
    expect(errno(() => nested(w, dev, n1))).toBe('EINVAL');
    // struct iommu_hwpt_vtd_s1: short → EINVAL, non-zero tail → E2BIG, zero tail accepted
    expect(errno(() => nested(w, dev, parent, s1().subarray(0, 20)))).toBe('EINVAL');
    const long = new Uint8Array(32);
    long.set(s1());
    expect(nested(w, dev, parent, long)).toBeGreaterThan(0);
    long[31] = 1;
    expect(errno(() => nested(w, dev, parent, long))).toBe('E2BIG');
    expect(errno(() => nested(w, dev, parent, s1({ flags: 1n << 3n })))).toBe('EOPNOTSUPP');
    expect(errno(() => nested(w, dev, parent, s1({ __reserved: 1 })))).toBe('EOPNOTSUPP');
    expect(errno(() => nested(w, dev, parent, s1({ addr_width: 39 })))).toBe('EINVAL');
    expect(errno(() => nested(w, dev, parent, s1({ pgtbl_addr: 0x10_0800n })))).toBe('EINVAL');
    expect(errno(() => nested(w, dev, parent, s1({ pgtbl_addr: 1n << 48n })))).toBe('EINVAL');
  });

  it('holds its fault queue (EBUSY) until destroyed', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = ramIoas(w);
    const parent = nestParent(w, dev, ioas);
    const fault = w.fd.faultQueueAlloc(0);
    expect(errno(() => w.fd.faultQueueAlloc(1))).toBe('EOPNOTSUPP');
    const n = nested(w, dev, parent, s1(), { flags: IOMMU_HWPT_ALLOC.FAULT_ID_VALID | IOMMU_HWPT_ALLOC.PASID, fault_id: fault });
    expect(errno(() => w.fd.destroy(fault))).toBe('EBUSY');
    w.fd.destroy(n);
    w.fd.destroy(fault);
  });
});

describe('HWPT_INVALIDATE', () => {
  it('reports how many entries it handled, stopping at the first failing one', () => {
    const w = makeWorld();
    const dev = bind(w);
    const ioas = ramIoas(w);
    const parent = nestParent(w, dev, ioas);
    const n = nested(w, dev, parent);
    // only a nested HWPT: a paging one or an IOAS is ENOENT; unknown IDs too
    expect(errno(() => invalidate(w, parent, inv([{}])))).toBe('ENOENT');
    expect(errno(() => invalidate(w, ioas, inv([{}])))).toBe('ENOENT');
    expect(errno(() => invalidate(w, 999, inv([{}])))).toBe('ENOENT');
    // entry_num 0 checks the data type only
    expect(invalidate(w, n, new Uint8Array(0), 0)).toEqual({ entry_num: 0, first_error: 0 });
    expect(errno(() => invalidate(w, n, new Uint8Array(0), 0, 24, 1))).toBe('EINVAL');
    expect(errno(() => invalidate(w, n, inv([{}]), 1, 24, 0xff))).toBe('EINVAL');
    // entry_len shorter than the struct
    expect(errno(() => invalidate(w, n, new Uint8Array(16), 1, 16))).toBe('EINVAL');
    // a longer entry with a non-zero tail: E2BIG at that entry
    const long = new Uint8Array(64);
    long.set(inv([{}]), 0);
    long.set(inv([{}]), 32);
    long[60] = 7;
    expect(invalidate(w, n, long, 2, 32)).toEqual({ entry_num: 1, first_error: -7 });
    // unknown flags, __reserved, alignment, npages U64_MAX with an address
    expect(invalidate(w, n, inv([{}, { flags: 1 << 1 }]))).toEqual({ entry_num: 1, first_error: -95 });
    expect(invalidate(w, n, inv([{ __reserved: 1 }]))).toEqual({ entry_num: 0, first_error: -95 });
    expect(invalidate(w, n, inv([{}, {}, { addr: 0x1800n }]))).toEqual({ entry_num: 2, first_error: -22 });
    expect(invalidate(w, n, inv([{ addr: 0x1000n, npages: U64_MAX }]))).toEqual({ entry_num: 0, first_error: -22 });
    // all good: addr 0 / U64_MAX is everything; LEAF; ranges
    expect(invalidate(w, n, inv([{ npages: U64_MAX }, { addr: 0x4000n, npages: 3n, flags: IOMMU_VTD_INV_FLAGS_LEAF }, { addr: 0x1_0000n, npages: 0n }]))).toEqual({ entry_num: 3, first_error: 0 });
  });
});

describe('GET_HW_INFO', () => {
  it("gives the host IOMMU's VT-d CAP / ECAP and the device's PASID width", () => {
    const w = makeWorld();
    const dev = bind(w, 0x18, 16);
    const info = w.fd.getHwInfo({ dev_id: dev, flags: 0 });
    expect(info.out_data_type).toBe(IOMMU_HW_INFO_TYPE.INTEL_VTD);
    expect(info.out_max_pasid_log2).toBe(16);
    expect({ cap: info.cap_reg, ecap: info.ecap_reg }).toEqual(w.fx.iommu.capabilities());
    expect(info.ecap_reg).toBe(w.fx.iommu.capabilities().ecap);
    expect(errno(() => w.fd.getHwInfo({ dev_id: dev, flags: 1 }))).toBe('EOPNOTSUPP');
    expect(errno(() => w.fd.getHwInfo({ dev_id: 77, flags: 0 }))).toBe('ENOENT');
  });
});
