/**
 * Guest-private PASIDs (`vcmd: false`) against a recording fake host: one host PASID per bound
 * guest PASID, BIND with both and GPASID_VAL, invalidations with the host PASID, faults back in
 * the guest's PASID, the host PASID freed after the last unbind and re-allocated at replay.
 */
import { describe, it, expect } from 'vitest';
import { makeModel, RID } from './harness.js';
import { PageAllocator } from '../../../../guest/driver/page-allocator.js';
import { GuestProcess } from '../../../../guest/driver/guest-process.js';
import { VtdDriver, SVA_DID } from '../../../../guest/driver/vtd-driver.js';
import { encodeDescriptor, InvDescType } from '../../../../src/vtd/descriptors.js';
import { DMAR } from '../../../../src/vtd/registers.js';
import { FaultFlag } from '../../../../vhost/messages/backend.js';
import type { CacheInvalidateEntry } from '../../../../vhost/messages/invalidate.js';

async function rig() {
  const m = makeModel({ vcmd: false });
  // The host's first PASIDs are taken, so host and guest PASIDs differ.
  for (let i = 0; i < 3; i++) await m.host.port.call('PASID_ALLOC', { min: 1, max: 100 });
  const alloc = new PageAllocator(m.h, { base: 0x40_0000n, size: 0x80_0000 });
  const drv = await VtdDriver.init(m.h, alloc);
  await drv.attachDevice('00:03.0');
  const proc = await GuestProcess.create(m.h, alloc);
  await proc.mapNew(0x1000_0000n, 0x1000);
  return { ...m, drv, proc };
}

describe('VT-d without VCMD: guest-private PASIDs', () => {
  it('binds, invalidates, reports faults and unbinds through a host PASID of its own', async () => {
    const { host, drv, proc, model, h } = await rig();
    await drv.bindProcess('00:03.0', proc, { pasid: 2 });
    expect(model.pasidMappings()).toEqual([{ gpasid: 2, hpasid: 4, users: 1 }]);
    expect(host.calls.find((c) => c.name === 'BIND_GPASID')!.payload).toMatchObject({ rid: RID, hpasid: 4n, gpasid: 2n, flags: 1n });
    expect(model.devicePasid(RID, 2)).toBe(4);

    const before = host.calls.length;
    await drv.submit([encodeDescriptor(InvDescType.PIOTLB, { G: 3, DID: SVA_DID, PASID: 2, ADDR: 0x1000_0n, AM: 0 }, 1), encodeDescriptor(InvDescType.PIOTLB, { G: 2, DID: SVA_DID, PASID: 2 }, 1)]);
    const inv = host.calls.slice(before).find((c) => c.name === 'CACHE_INVALIDATE')!.payload as { entries: CacheInvalidateEntry[] };
    expect(inv.entries.map((e) => e.pasid)).toEqual([4n, 4n]);

    model.onBackendMessage({ name: 'FAULT', msg: { rid: RID, flags: FaultFlag.PASID_VALID | FaultFlag.WRITE, pasid: 4, reason: 0x71, addr: 0x1000_0000n } });
    expect((await drv.readFaults())[0]).toMatchObject({ pasid: 2, reason: 0x71, addr: 0x1000_0000n });

    await drv.unbind('00:03.0', 2);
    const tail = host.calls.slice(-2);
    expect(tail.map((c) => c.name)).toEqual(['UNBIND_GPASID', 'PASID_FREE']);
    expect(tail[1]!.payload).toEqual({ min: 4, max: 4 });
    expect(model.pasidMappings()).toEqual([]);
    expect((await h.readl(DMAR.FSTS)) & 0x10).toBe(0); // no queue error along the way
  });

  it('replays on a fresh host with newly allocated host PASIDs, and names them in hostResources', async () => {
    const { host, drv, proc, model } = await rig();
    await drv.bindProcess('00:03.0', proc, { pasid: 9 });
    expect([...model.hostResources().pasids]).toEqual([4]);
    const fresh = makeModel({ vcmd: false }).host; // a host that knows nothing
    const r = await model.replay(fresh.port);
    expect(r.failures).toEqual([]);
    expect(fresh.calls.find((c) => c.name === 'BIND_GPASID')!.payload).toMatchObject({ hpasid: 1n, gpasid: 9n });
    expect(model.pasidMappings()).toEqual([{ gpasid: 9, hpasid: 1, users: 1 }]);
    expect(host.calls.filter((c) => c.name === 'PASID_ALLOC')).toHaveLength(4);
  });
});

