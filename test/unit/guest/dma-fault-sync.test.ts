import { afterEach, describe, expect, it, vi } from 'vitest';
import { DmaFaultSync, FAULT_WAIT_MS } from '../../../guest/dma-fault-sync.js';
import { FaultFlag } from '../../../vhost/messages/backend.js';
import { DEVICE_DMA_RESULT_PASID_VALID, DeviceDmaStatus, type DeviceDmaReply } from '../../../vhost/messages/device-dma.js';

const RID = 0x20;
const reply = (over: Partial<DeviceDmaReply> = {}): DeviceDmaReply => ({ status: DeviceDmaStatus.FAULT, reason: 0x59, flags: DEVICE_DMA_RESULT_PASID_VALID, pasid: 7, fault_addr: 0x5000n, ...over });
const fault = (over: Partial<{ rid: number; flags: number; pasid: number; reason: number; addr: bigint }> = {}) =>
  ({ name: 'FAULT', msg: { rid: RID, flags: FaultFlag.PASID_VALID, pasid: 7, reason: 0x59, addr: 0x5000n, ...over } }) as const;

afterEach(() => {
  vi.useRealTimers();
});

describe('DmaFaultSync: a faulted DMA resolves once its FAULT was processed', () => {
  it('waits for the matching FAULT when the reply comes first', async () => {
    const s = new DmaFaultSync();
    const mark = s.mark(RID);
    let done = false;
    const p = s.settle(RID, mark, reply())!.then(() => (done = true));
    s.processed(fault({ addr: 0x6000n })); // another address: not this DMA's
    s.processed(fault({ pasid: 8 })); // another PASID
    await Promise.resolve();
    expect(done).toBe(false);
    s.processed(fault());
    await p;
    expect(s.counters).toEqual({ matched: 1, timedOut: 0 });
  });

  it('returns at once when the FAULT was processed after the mark and before the reply; a FAULT before the mark does not count', async () => {
    const s = new DmaFaultSync();
    s.processed(fault()); // an earlier DMA's
    const mark = s.mark(RID);
    s.processed(fault());
    expect(s.settle(RID, mark, reply())).toBeUndefined();
    // The FAULT is claimed: a second DMA with the same fields waits for its own.
    vi.useFakeTimers();
    const p = s.settle(RID, mark, reply());
    expect(p).toBeInstanceOf(Promise);
    s.processed(fault());
    await p;
    expect(s.counters.matched).toBe(2);
  });

  it('does not wait for reason 0 (no memory behind the address) or after a page request of the device (PRI)', () => {
    const s = new DmaFaultSync();
    const mark = s.mark(RID);
    expect(s.settle(RID, mark, reply({ reason: 0 }))).toBeUndefined();
    s.processed({ name: 'PAGE_REQUEST', msg: { rid: RID, prgi: 1, flags: 0, pasid: 7, addr: 0x5000n } } as never);
    expect(s.settle(RID, mark, reply())).toBeUndefined();
  });

  it('gives up after FAULT_WAIT_MS when the FAULT never comes (host without a backend channel)', async () => {
    vi.useFakeTimers();
    const s = new DmaFaultSync();
    let done = false;
    const p = s.settle(RID, s.mark(RID), reply({ flags: 0, pasid: 0 }))!.then(() => (done = true));
    await vi.advanceTimersByTimeAsync(FAULT_WAIT_MS - 1);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(s.counters).toEqual({ matched: 0, timedOut: 1 });
    // A late FAULT satisfies nobody and does not throw.
    s.processed(fault({ flags: 0, pasid: 0 }));
  });
});
