/**
 * Queue runs of many PASID-based IOTLB descriptors (the batched-invalidation path of docs/design.md §9):
 * the run's CACHE_INVALIDATE messages are pipelined, the wait's status is written only after the
 * host answered all of them, a bad descriptor still stops the queue at itself with what came
 * before it delivered, and the decoded and the fast path forward the same entries. Descriptors of
 * every other page (step 2) stay one entry each; adjacent pages travel as aligned blocks
 * (psi-runs.test.ts).
 */
import { describe, it, expect } from 'vitest';
import { makeModel } from './harness.js';
import { VtdBenchDriver } from '../../../../src/app/bench/vtd-bench-driver.js';
import { DMAR, IQEI } from '../../../../src/vtd/registers.js';
import { CACHE_INVALIDATE_MAX_ENTRIES, type CacheInvalidateEntry } from '../../../../vhost/messages/invalidate.js';
import type { GuestHandle } from '../../../../src/api/types.js';

const DESC = 32;

async function rig() {
  const m = makeModel();
  const drv = await VtdBenchDriver.create(m.h as unknown as GuestHandle);
  const pasid = await drv.allocPasid();
  await drv.bindPasid(pasid);
  const statusAddr = Number((drv as unknown as { status: bigint }).status);
  const port = m.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
  const direct = port.call.bind(port);
  /** CACHE_INVALIDATE messages as the host saw them, in order. */
  const messages: CacheInvalidateEntry[][] = [];
  let outstanding = 0;
  let maxOutstanding = 0;
  let statusBeforeLastReply: number | null = null;
  port.call = async (name: string, payload?: unknown) => {
    if (name !== 'CACHE_INVALIDATE') return direct(name, payload);
    const entries = (payload as { entries: CacheInvalidateEntry[] }).entries;
    messages.push(entries);
    outstanding++;
    maxOutstanding = Math.max(maxOutstanding, outstanding);
    await new Promise((r) => setTimeout(r, 2));
    outstanding--;
    if (outstanding === 0) statusBeforeLastReply = m.ram.readU32(statusAddr);
    return { handled: entries.length, first_error: 0 };
  };
  return { ...m, drv, pasid, statusAddr, messages, stats: () => ({ maxOutstanding, statusBeforeLastReply }) };
}

describe('batched PASID-based IOTLB invalidations', () => {
  it('sends a run’s messages without waiting for each reply, and writes the wait status after the last reply', async () => {
    const r = await rig();
    const n = 2 * CACHE_INVALIDATE_MAX_ENTRIES + 300;
    const before = r.ram.readU32(r.statusAddr);
    await r.drv.piotlbBatch(r.pasid, n, 2n);
    expect(r.messages.map((m) => m.length)).toEqual([CACHE_INVALIDATE_MAX_ENTRIES, CACHE_INVALIDATE_MAX_ENTRIES, 300]);
    expect(r.stats().maxOutstanding).toBeGreaterThanOrEqual(2);
    expect(r.stats().statusBeforeLastReply).toBe(before);
    expect(r.ram.readU32(r.statusAddr)).not.toBe(before);
    const all = r.messages.flat();
    expect(all.map((e) => Number(e.addr >> 12n))).toEqual(Array.from({ length: n }, (_, i) => 2 * i));
    expect(all.every((e) => e.pasid === BigInt(r.pasid) && e.granularity === 2 && e.nb_granules === 1n)).toBe(true);
    expect(r.model.counters().invalidations).toMatchObject({ messages: 3, entries: n, refused: 0 });
  });

  it('a descriptor with a reserved bit stops the run at itself (IQE, IQH there); the ones before it reached the host; no status', async () => {
    const r = await rig();
    const n = 1500;
    const bytes = r.drv.prepareBatch(r.pasid, n, 0n, 2n);
    bytes[1200 * DESC + 8 + 1] |= 0x08; // qw1 bit 11: reserved in PIOTLB_DESC
    const start = (r.drv as unknown as { tail: number }).tail;
    const before = r.ram.readU32(r.statusAddr);
    await expect(r.drv.submitBytes(bytes)).rejects.toMatchObject({ code: 'EIO' });
    expect(Number(await r.h.readq(DMAR.IQH)) / DESC).toBe(start + 1200);
    expect(Number((await r.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.RSVD_FIELD_VIOLATION);
    expect(r.messages.flat()).toHaveLength(1200);
    expect(r.ram.readU32(r.statusAddr)).toBe(before);
  });

  it('forwards the same entries whether the descriptors take the fast path or are decoded (trace listener on)', async () => {
    const plain = await rig();
    await plain.drv.piotlbBatch(plain.pasid, 700, 2n);
    const traced = await rig();
    const names: string[] = [];
    traced.trace.on((e) => names.push(e.name));
    await traced.drv.piotlbBatch(traced.pasid, 700, 2n);
    expect(names.filter((x) => x === 'PIOTLB_DESC')).toHaveLength(700);
    expect(plain.messages.flat()).toHaveLength(700);
    expect(traced.messages.flat()).toEqual(plain.messages.flat());
  });

  it('a run of adjacent pages forwards the same blocks with a trace listener on, which still sees every descriptor', async () => {
    const plain = await rig();
    await plain.drv.piotlbBatch(plain.pasid, 700);
    const traced = await rig();
    const events: { name: string; args?: Record<string, unknown> }[] = [];
    traced.trace.on((e) => events.push(e as { name: string; args?: Record<string, unknown> }));
    const start = (traced.drv as unknown as { tail: number }).tail;
    await traced.drv.piotlbBatch(traced.pasid, 700);
    const descs = events.filter((e) => e.name === 'PIOTLB_DESC');
    expect(descs.map((e) => e.args!.index)).toEqual(Array.from({ length: 700 }, (_, i) => start + i));
    expect(descs[5]!.args!.qw1).toBe('0x0000000000005000');
    expect(traced.messages.flat()).toEqual(plain.messages.flat());
    // 700 = 512 + 128 + 32 + 16 + 8 + 4: one entry per aligned block.
    expect(plain.messages.flat().map((e) => [Number(e.addr >> 12n), Number(e.nb_granules)])).toEqual([[0, 512], [512, 128], [640, 32], [672, 16], [688, 8], [696, 4]]);
    expect(plain.model.counters().invalidations).toMatchObject({ messages: 1, entries: 6, refused: 0 });
  });

  it('a reserved bit inside a run of adjacent pages: the pages before it reach the host as blocks, the queue stops at it', async () => {
    const r = await rig();
    const bytes = r.drv.prepareBatch(r.pasid, 1500);
    bytes[1200 * DESC + 8 + 1] |= 0x08; // qw1 bit 11: reserved in PIOTLB_DESC
    const start = (r.drv as unknown as { tail: number }).tail;
    await expect(r.drv.submitBytes(bytes)).rejects.toMatchObject({ code: 'EIO' });
    expect(Number(await r.h.readq(DMAR.IQH)) / DESC).toBe(start + 1200);
    expect(Number((await r.h.readq(DMAR.IQERCD)) & 0xfn)).toBe(IQEI.RSVD_FIELD_VIOLATION);
    expect(r.messages.flat().map((e) => [Number(e.addr >> 12n), Number(e.nb_granules)])).toEqual([[0, 1024], [1024, 128], [1152, 32], [1184, 16]]);
  });

  it('an entry the host refuses is skipped and the rest of its message is sent again before the status write', async () => {
    const r = await rig();
    const port = r.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
    const inner = port.call.bind(port);
    let refused = false;
    port.call = async (name: string, payload?: unknown) => {
      const rep = await inner(name, payload);
      if (name === 'CACHE_INVALIDATE' && !refused) {
        refused = true;
        return { handled: 10, first_error: -22 };
      }
      return rep;
    };
    await r.drv.piotlbBatch(r.pasid, 50, 2n);
    expect(r.messages.map((m) => m.length)).toEqual([50, 39]);
    expect(r.messages[1]!.map((e) => Number(e.addr >> 12n))).toEqual(Array.from({ length: 39 }, (_, i) => 2 * (i + 11)));
    expect(r.model.counters().invalidations).toMatchObject({ messages: 2, entries: 10 + 1 + 39, refused: 1 });
  });
});
