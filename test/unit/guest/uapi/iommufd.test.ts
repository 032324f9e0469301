/**
 * The guest's iommufd uAPI (guest/uapi/iommufd.ts) against a scripted host: what each model
 * request becomes on the wire, the errors it raises itself, the fault-queue translation and the
 * HWPT_INVALIDATE batch with the handled count.
 */
import { describe, expect, it } from 'vitest';
import { createHostUapi, IommufdUapi, VfioSvaUapi, type HostCalls, type UapiDevice } from '../../../../guest/uapi/index.js';
import { checkHwInfo, vtdS1Flags } from '../../../../guest/uapi/iommufd.js';
import { IommufdInvalidationBatch, U64_MAX } from '../../../../guest/uapi/iommufd-invalidations.js';
import { encodeCap, encodeEcap } from '../../../../src/vtd/cap-ecap.js';
import { childLogger } from '../../../../src/log.js';
import { TraceBus } from '../../../../src/trace/bus.js';
import { DeviceCap } from '../../../../vhost/messages/device.js';
import { PageRequestFlag } from '../../../../vhost/messages/backend.js';
import { IOMMU_PAGE_RESP } from '../../../../vhost/messages/page.js';
import { IOMMU_SVA_VTD_GPASID } from '../../../../vhost/messages/pasid.js';
import {
  IOMMU_HW_INFO_TYPE, IOMMU_HWPT_ALLOC, IOMMU_PGFAULT_FLAGS, IOMMU_PGFAULT_PERM, IOMMU_VTD_INV_FLAGS_LEAF, IOMMU_VTD_S1, IOMMUFD_ATTACH,
  VtdS1InvalidateStruct, type HwInfoReply,
} from '../../../../vhost/messages/iommufd.js';
import { iotlbAll, iotlbPasid, devIotlb } from '../../../../guest/vtd/cache-invalidations.js';
import { VsvaError } from '../../../../src/errors.js';

const HOST_HW: HwInfoReply = {
  out_data_type: IOMMU_HW_INFO_TYPE.INTEL_VTD,
  vtd_flags: 0,
  out_capabilities: 0n,
  cap_reg: encodeCap({ MGAW: 47, FL1GP: 1, FL5LP: 1 }),
  ecap_reg: encodeEcap({ SMTS: 1, PASID: 1, NEST: 1, FLTS: 1 }),
  out_max_pasid_log2: 20,
};

interface Call {
  name: string;
  payload: Record<string, unknown>;
}

/** A host that answers iommufd requests with increasing IDs; `fail` makes a named request throw. */
function scriptedHost(opts: { fail?: Record<string, string>; invalidateHandled?: (n: number) => { entry_num: number; first_error: number } } = {}) {
  const calls: Call[] = [];
  let next = 1;
  const host = {
    async call(name: string, payload?: Record<string, unknown>): Promise<unknown> {
      calls.push({ name, payload: payload ?? {} });
      const errno = opts.fail?.[name];
      if (errno !== undefined) throw new VsvaError(errno as 'EINVAL', `${name} refused`);
      switch (name) {
        case 'IOMMUFD_IOAS_ALLOC':
        case 'IOMMUFD_FAULT_QUEUE_ALLOC':
        case 'IOMMUFD_DEVICE_BIND':
        case 'IOMMUFD_HWPT_ALLOC':
          return { out_id: next++ };
        case 'IOMMUFD_GET_HW_INFO':
          return HOST_HW;
        case 'IOMMUFD_IOAS_MAP':
          return { iova: payload!.iova };
        case 'IOMMUFD_HWPT_INVALIDATE': {
          const n = payload!.entry_num as number;
          return opts.invalidateHandled?.(n) ?? { entry_num: n, first_error: 0 };
        }
        default:
          return {};
      }
    },
  };
  return { host: host as unknown as HostCalls, calls, names: () => calls.map((c) => c.name), fail: (opts.fail ??= {}) };
}

const PF: UapiDevice = { bdf: '00:03.0', rid: 0x18, kind: 'pf', caps: DeviceCap.PASID | DeviceCap.ATS | DeviceCap.PRI, pasidWidth: 20 };
const PF2: UapiDevice = { ...PF, bdf: '00:04.0', rid: 0x20 };
const TABLE = { flptr: 0x12_3000n, addrWidth: 48, vtdFlags: IOMMU_SVA_VTD_GPASID.SRE | IOMMU_SVA_VTD_GPASID.WPE | IOMMU_SVA_VTD_GPASID.PCD, pat: 0, emt: 0 };

async function announced(opts: Parameters<typeof scriptedHost>[0] = {}) {
  const h = scriptedHost(opts);
  const u = new IommufdUapi(h.host);
  await u.announce([PF, PF2], 16 << 20);
  h.calls.length = 0;
  return { ...h, u };
}

describe('guest iommufd uAPI', () => {
  it('createHostUapi picks the implementation; an unknown uAPI is EINVAL', () => {
    const { host } = scriptedHost();
    expect(createHostUapi('vfio-sva', host)).toBeInstanceOf(VfioSvaUapi);
    expect(createHostUapi('iommufd', host)).toBeInstanceOf(IommufdUapi);
    expect(() => createHostUapi('vfio' as 'iommufd', host)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('bring-up: IOAS with guest RAM at IOVA = GPA, fault queue, DEVICE_BIND + GET_HW_INFO per device, nest parent, RIDs attached', async () => {
    const h = scriptedHost();
    const u = new IommufdUapi(h.host);
    await u.announce([PF, PF2], 16 << 20);
    expect(h.names()).toEqual([
      'IOMMUFD_IOAS_ALLOC', 'IOMMUFD_IOAS_MAP', 'IOMMUFD_FAULT_QUEUE_ALLOC',
      'IOMMUFD_DEVICE_BIND', 'IOMMUFD_GET_HW_INFO', 'IOMMUFD_DEVICE_BIND', 'IOMMUFD_GET_HW_INFO',
      'IOMMUFD_HWPT_ALLOC', 'IOMMUFD_DEVICE_ATTACH', 'IOMMUFD_DEVICE_ATTACH',
    ]);
    expect(h.calls[1]!.payload).toMatchObject({ user_va: 0n, iova: 0n, length: BigInt(16 << 20) });
    expect(h.calls[3]!.payload).toEqual({ rid: 0x18, pasid_width: 20, caps: 3 });
    expect(h.calls[7]!.payload).toMatchObject({ flags: IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID, pt_id: u.objects.ioas, data_len: 0 });
    expect(h.calls[8]!.payload).toEqual({ dev_id: u.objects.devices.get(0x18)!.devId, flags: 0, pasid: 0, pt_id: u.objects.nestParent });
    expect(u.hwInfo(0x18)).toEqual({ cap: HOST_HW.cap_reg, ecap: HOST_HW.ecap_reg });
  });

  it('guest RAM over the interrupt window is mapped around it', async () => {
    const h = scriptedHost();
    await new IommufdUapi(h.host).announce([PF], 0x1_0000_0000);
    expect(h.calls.filter((c) => c.name === 'IOMMUFD_IOAS_MAP').map((c) => [c.payload.iova, c.payload.length])).toEqual([
      [0n, 0xfee0_0000n],
      [0xfef0_0000n, 0x1_0000_0000n - 0xfef0_0000n],
    ]);
  });

  it('an ADI is EOPNOTSUPP before anything reaches the host', async () => {
    const h = scriptedHost();
    await expect(new IommufdUapi(h.host).announce([PF, { ...PF2, kind: 'adi' }], 16 << 20)).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
    expect(h.calls).toEqual([]);
  });

  it('GET_HW_INFO: a host IOMMU without nesting, first-level tables, 48 bits or the guest\'s first-level page sizes is EOPNOTSUPP', () => {
    expect(() => checkHwInfo('00:03.0', HOST_HW)).not.toThrow();
    expect(() => checkHwInfo('00:03.0', { ...HOST_HW, ecap_reg: encodeEcap({ SMTS: 1, PASID: 1, FLTS: 1 }) })).toThrow(/ECAP\.NEST/);
    expect(() => checkHwInfo('00:03.0', { ...HOST_HW, ecap_reg: encodeEcap({ SMTS: 1, PASID: 1, NEST: 1 }) })).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }));
    expect(() => checkHwInfo('00:03.0', { ...HOST_HW, cap_reg: encodeCap({ MGAW: 38, FL1GP: 1, FL5LP: 1 }) })).toThrow(/39 is below/);
    expect(() => checkHwInfo('00:03.0', { ...HOST_HW, cap_reg: encodeCap({ MGAW: 47, FL1GP: 1 }) })).toThrow(/CAP\.FL5LP/);
    expect(() => checkHwInfo('00:03.0', { ...HOST_HW, out_data_type: IOMMU_HW_INFO_TYPE.ARM_SMMUV3 })).toThrow(/not Intel VT-d/);
  });

  it('a first-level table: nested HWPT (VT-d stage-1 data) over the nest parent, attached at the PASID; replaced in place; detached and destroyed', async () => {
    const { u, calls, names } = await announced();
    const ref = { rid: 0x20, gpasid: 7, hpasid: 7, global: true };
    await u.routePasid(ref, { kind: 'nested', table: TABLE }, false);
    expect(names()).toEqual(['IOMMUFD_HWPT_ALLOC', 'IOMMUFD_DEVICE_ATTACH']);
    const alloc = calls[0]!.payload;
    expect(alloc).toMatchObject({ flags: IOMMU_HWPT_ALLOC.PASID | IOMMU_HWPT_ALLOC.FAULT_ID_VALID, pt_id: u.objects.nestParent, data_type: 1, data_len: 24, fault_id: u.objects.faultQueue });
    const hwpt1 = u.nestedAt(7)[0]!;
    expect(calls[1]!.payload).toEqual({ dev_id: u.objects.devices.get(0x20)!.devId, flags: IOMMUFD_ATTACH.PASID | IOMMUFD_ATTACH.GLOBAL_PASID, pasid: 7, pt_id: hwpt1 });
    calls.length = 0;
    await u.routePasid(ref, { kind: 'nested', table: { ...TABLE, flptr: 0x45_6000n } }, true);
    expect(names()).toEqual(['IOMMUFD_HWPT_ALLOC', 'IOMMUFD_DEVICE_REPLACE', 'IOMMUFD_DESTROY']);
    expect(calls[2]!.payload).toEqual({ id: hwpt1 });
    const hwpt2 = u.nestedAt(7)[0]!;
    calls.length = 0;
    await u.unroutePasid(ref);
    expect(names()).toEqual(['IOMMUFD_DEVICE_DETACH', 'IOMMUFD_DESTROY']);
    expect(calls[1]!.payload).toEqual({ id: hwpt2 });
    expect(u.allNested()).toEqual([]);
  });

  it('a refused attach destroys the nested HWPT it allocated and leaves the route as it was', async () => {
    const { u, names, fail } = await announced();
    fail.IOMMUFD_DEVICE_ATTACH = 'EINVAL';
    await expect(u.routePasid({ rid: 0x18, gpasid: 3, hpasid: 3, global: false }, { kind: 'nested', table: TABLE }, false)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(names()).toEqual(['IOMMUFD_HWPT_ALLOC', 'IOMMUFD_DEVICE_ATTACH', 'IOMMUFD_DESTROY']);
    expect(u.allNested()).toEqual([]);
    expect(u.objects.pending.size).toBe(0);
  });

  it('domains are IOASes: map with FIXED_IOVA, pass-through and second-level PASIDs and the RID attach to the nest parent / the IOAS', async () => {
    const { u, calls, names } = await announced();
    const d = await u.domainAlloc();
    const ioas = u.objects.domains.get(d)!;
    await u.dmaMap(d, 0x10_0000n, 0x20_0000n, 0x1000n, 1);
    expect(calls[1]!.payload).toEqual({ ioas_id: ioas, flags: 1 | 4, user_va: 0x20_0000n, length: 0x1000n, iova: 0x10_0000n });
    await u.routePasid({ rid: 0x18, gpasid: 9, hpasid: 9, global: false }, { kind: 'sl', domain: d }, false);
    expect(calls[2]!.payload).toMatchObject({ flags: IOMMUFD_ATTACH.PASID, pasid: 9, pt_id: ioas });
    await u.routePasid({ rid: 0x18, gpasid: 10, hpasid: 10, global: false }, { kind: 'pt' }, false);
    expect(calls[3]!.payload).toMatchObject({ pt_id: u.objects.nestParent });
    await u.attachRid(0x18, 0, d);
    expect(calls[4]).toMatchObject({ name: 'IOMMUFD_DEVICE_REPLACE', payload: { flags: 0, pt_id: ioas } });
    await u.detachRid(0x18, d);
    await u.attachRid(0x18, null, 0);
    expect(names().slice(5)).toEqual(['IOMMUFD_DEVICE_DETACH', 'IOMMUFD_DEVICE_ATTACH']);
    await u.dmaUnmap(d, 0x10_0000n, 0x1000n);
    await u.domainFree(d);
    expect(calls.at(-1)).toEqual({ name: 'IOMMUFD_DESTROY', payload: { id: ioas } });
    await expect(u.dmaMap(d, 0n, 0n, 0x1000n, 1)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(u.routePasid({ rid: 0x99, gpasid: 1, hpasid: 1, global: false }, { kind: 'pt' }, false)).rejects.toMatchObject({ code: 'ENODEV' });
  });

  it('IOMMUFD_FAULT becomes the PAGE_REQUEST it reports; the response goes back by cookie; an unknown group is ENOENT', async () => {
    const { u, calls } = await announced();
    const devId = u.objects.devices.get(0x20)!.devId;
    const ev = u.backendEvent({
      name: 'IOMMUFD_FAULT',
      msg: { fault_id: u.objects.faultQueue, flags: IOMMU_PGFAULT_FLAGS.PASID_VALID | IOMMU_PGFAULT_FLAGS.LAST_PAGE, dev_id: devId, pasid: 7, grpid: 3, perm: IOMMU_PGFAULT_PERM.WRITE | IOMMU_PGFAULT_PERM.READ, addr: 0x7000n, length: 4096, cookie: 42 },
    });
    expect(ev).toEqual({ name: 'PAGE_REQUEST', msg: { rid: 0x20, prgi: 3, pasid: 7, addr: 0x7000n, flags: PageRequestFlag.PASID_VALID | PageRequestFlag.LPIG | PageRequestFlag.READ | PageRequestFlag.WRITE } });
    await u.pageResponse({ rid: 0x20, pasid: 7, prgi: 3, code: IOMMU_PAGE_RESP.FAILURE });
    expect(calls.at(-1)).toEqual({ name: 'IOMMUFD_FAULT_RESPOND', payload: { fault_id: u.objects.faultQueue, cookie: 42, code: 1 } });
    await expect(u.pageResponse({ rid: 0x20, pasid: 7, prgi: 3, code: 0 })).rejects.toMatchObject({ code: 'ENOENT' });
    const other = { name: 'PASID_FREED' as const, msg: { pasid: 3, reason: 0 } };
    expect(u.backendEvent(other as never)).toBe(other);
  });

  it('stage-1 flags: SRE, EAFE and WPE carry over; the cache attributes have no stage-1 field', () => {
    expect(vtdS1Flags(IOMMU_SVA_VTD_GPASID.SRE | IOMMU_SVA_VTD_GPASID.EAFE | IOMMU_SVA_VTD_GPASID.WPE | IOMMU_SVA_VTD_GPASID.PCD)).toBe(IOMMU_VTD_S1.SRE | IOMMU_VTD_S1.EAFE | IOMMU_VTD_S1.WPE);
  });
});

describe('HWPT_INVALIDATE batch', () => {
  const log = childLogger('test');
  const trace = new TraceBus();
  const index = (m: Record<number, number[]>) => ({ nestedAt: (p: number) => m[p] ?? [], allNested: () => [...new Set(Object.values(m).flat())] });
  const entriesOf = (c: Call) => {
    const data = Buffer.from(c.payload.data as Uint8Array);
    return Array.from({ length: c.payload.entry_num as number }, (_, i) => VtdS1InvalidateStruct.decode(data, i * VtdS1InvalidateStruct.size));
  };

  it('one HWPT_INVALIDATE per nested HWPT of the PASIDs; ranges aligned to 2^AM pages with LEAF; device-TLB entries are the kernel’s', async () => {
    const h = scriptedHost();
    const b = new IommufdInvalidationBatch(h.host, index({ 5: [11, 12], 6: [13] }), log, trace, 'vm');
    b.addPasidAddr(5, 0x7003_5000, 0x7f, 2, true);
    b.add(iotlbPasid(6));
    b.add(devIotlb(0x18, 5, 0x1000n, 0x1000n));
    b.addPasid(99); // no nested HWPT at that PASID: nothing
    expect(b.pending).toBe(3);
    await b.flush();
    expect(b.pending).toBe(0);
    expect(h.calls.map((c) => c.payload.hwpt_id)).toEqual([11, 12, 13]);
    expect(entriesOf(h.calls[0]!)).toEqual([{ addr: 0x7f_7003_4000n, npages: 4n, flags: IOMMU_VTD_INV_FLAGS_LEAF, __reserved: 0 }]);
    expect(entriesOf(h.calls[2]!)).toEqual([{ addr: 0n, npages: U64_MAX, flags: 0, __reserved: 0 }]);
    expect(b.counters).toEqual({ messages: 3, entries: 3, refused: 0 });
    h.calls.length = 0;
    b.add(iotlbAll());
    await b.flush();
    expect(h.calls.map((c) => c.payload.hwpt_id)).toEqual([11, 12, 13]);
  });

  it('the handled count: the failing entry is counted refused, the entries after it are sent again', async () => {
    let first = true;
    const h = scriptedHost({ invalidateHandled: (n) => (first ? ((first = false), { entry_num: 1, first_error: -22 }) : { entry_num: n, first_error: 0 }) });
    const b = new IommufdInvalidationBatch(h.host, index({ 5: [11] }), log, trace, 'vm');
    for (const am of [0, 1, 2]) b.addPasidAddr(5, 0x1000 << am, 0, am, false);
    await b.flush();
    expect(h.calls.map((c) => c.payload.entry_num)).toEqual([3, 1]);
    expect(entriesOf(h.calls[1]!)[0]).toMatchObject({ addr: 0x4000n, npages: 4n });
    expect(b.counters).toEqual({ messages: 2, entries: 2, refused: 1 });
  });

  it('a request the host refuses whole counts all its entries refused', async () => {
    const h = scriptedHost({ fail: { IOMMUFD_HWPT_INVALIDATE: 'ENOENT' } });
    const b = new IommufdInvalidationBatch(h.host, index({ 5: [11] }), log, trace, 'vm');
    b.addPasid(5);
    b.addPasid(5);
    await b.flush();
    expect(b.counters).toEqual({ messages: 1, entries: 0, refused: 2 });
  });
});
