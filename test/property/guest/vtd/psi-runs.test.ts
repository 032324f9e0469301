/**
 * Property: a queue run that forwards adjacent page-selective PASID-based IOTLB descriptors as
 * aligned blocks (guest/vtd/invalidation-queue.ts runs, invalidation-handler.ts piotlbPages)
 * leaves a host IOTLB in exactly the state the same descriptors leave it in one at a time (each
 * in its own queue run, so none is combined): the same live 4 KiB and large-page entries and
 * the same paging-structure-cache entries (VT-d spec §6.5.2.4 "PASID-based-IOTLB Invalidate
 * Descriptor": a page-selective invalidation removes the entries overlapping its 2^AM aligned
 * pages, and the paging-structure entries for them unless IH). Descriptors mix DIDs, PASIDs,
 * IH, address masks, all-within-PASID, gaps, repeats and runs that do not start aligned.
 *
 * The CACHE_INVALIDATE entries each model sends are applied to a host IOTLB as the VFIO
 * container does (host/vfio/cache-invalidate.ts): one aligned block → one page-selective
 * invalidation; any other range → its addressBlocks.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { makeModel } from '../../../unit/guest/vtd/harness.js';
import { VtdBenchDriver } from '../../../../src/app/bench/vtd-bench-driver.js';
import type { GuestHandle } from '../../../../src/api/types.js';
import { encodeDescriptor, InvDescType, PIOTLB_G } from '../../../../src/vtd/descriptors.js';
import { wordsToBytes } from '../../../../src/vtd/layout.js';
import { IOMMU_INV_ADDR_FLAGS, IOMMU_INV_GRANU, type CacheInvalidateEntry } from '../../../../vhost/messages/invalidate.js';
import { Iotlb } from '../../../../host/iommu/tlb.js';
import { PSC_RW, PSC_TBL_W, PSC_US } from '../../../../host/iommu/tlb-bucket.js';
import { addressBlocks } from '../../../../host/iommu/invalidation.js';
import { maskedPages } from '../../../../host/iommu/checks.js';

/** The bench driver's DID (the one its PASID entries carry). */
const DID = 1;
const HOST_DID = 7;
/** Pages the descriptors and the cached entries fall in (a few 2 MiB regions). */
const WINDOW = 2048;
const LEVEL_SPAN = [0, 1, 512, 262144];

interface Segment {
  /** Descriptors of adjacent blocks from `page`, each 2^am pages. */
  page: number;
  count: number;
  am: number;
  ih: boolean;
  did: number;
  /** 0: the bound PASID; 1: a PASID no device has bound. */
  other: boolean;
  /** G = 2 (all within PASID) instead of page-selective. */
  all: boolean;
  /** Start where the previous segment ended instead of at `page` (runs that change IH, DID, AM or PASID). */
  follow?: boolean;
}

const segment = fc.record({
  page: fc.integer({ min: 0, max: WINDOW - 1 }),
  count: fc.integer({ min: 1, max: 40 }),
  am: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 4 })),
  ih: fc.boolean(),
  did: fc.constantFrom(DID, DID, DID, DID + 1),
  other: fc.integer({ min: 0, max: 4 }).map((x) => x === 0),
  all: fc.integer({ min: 0, max: 15 }).map((x) => x === 0),
  follow: fc.boolean(),
});

function encode(pasid: number, segs: Segment[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let next = 0;
  for (const s of segs) {
    const p = s.other ? pasid + 1 : pasid;
    if (s.all) {
      out.push(wordsToBytes(encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.ALL_IN_PASID, DID: s.did, PASID: p }, 1)));
      continue;
    }
    const span = 2 ** s.am;
    const page = s.follow === true ? next : s.page;
    const base = Math.floor(page / span) * span;
    for (let i = 0; i < s.count; i++) {
      // Unaligned addresses on purpose: the descriptor's block is ADDR aligned down to 2^AM pages.
      const addr = BigInt(base + i * span + (page % span));
      out.push(wordsToBytes(encodeDescriptor(InvDescType.PIOTLB, { G: PIOTLB_G.PSI_IN_PASID, DID: s.did, PASID: p, ADDR: addr, AM: s.am, IH: s.ih ? 1 : 0 }, 1)));
    }
    next = base + s.count * span;
  }
  return out;
}

/** A model with the bench driver's bound PASID, recording every CACHE_INVALIDATE entry. */
async function rig() {
  const m = makeModel();
  const drv = await VtdBenchDriver.create(m.h as unknown as GuestHandle);
  const pasid = await drv.allocPasid();
  await drv.bindPasid(pasid);
  const entries: CacheInvalidateEntry[] = [];
  let messages = 0;
  const port = m.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
  const direct = port.call.bind(port);
  port.call = async (name: string, payload?: unknown) => {
    if (name === 'CACHE_INVALIDATE') {
      messages++;
      entries.push(...(payload as { entries: CacheInvalidateEntry[] }).entries);
    }
    return direct(name, payload);
  };
  return { drv, pasid, entries, messages: () => messages };
}

interface Fill {
  vpn: number;
  level: number;
}

/**
 * A host IOTLB holding, for one (DID, PASID), a 4 KiB entry for every page of the window but the
 * `holes`, the large-page entries `fills` and the paging-structure entries `psc`.
 */
function filledIotlb(hpasid: number, holes: number[], fills: Fill[], psc: Fill[]): Iotlb {
  const io = new Iotlb(1 << 20);
  const b = io.bucket(HOST_DID, hpasid);
  b.acquire();
  b.firstLevel = true;
  const skip = new Set(holes);
  for (let vpn = 0; vpn < WINDOW + 64; vpn++) if (!skip.has(vpn)) io.insert(b, vpn, 1, vpn * 4096, 3);
  for (const f of fills) io.insert(b, f.vpn, f.level, Math.floor(f.vpn / LEVEL_SPAN[f.level]!) * LEVEL_SPAN[f.level]! * 4096, 3);
  for (const p of psc) b.pscInsert(p.level, p.vpn, p.level + 1, 0, PSC_TBL_W | PSC_RW | PSC_US);
  return io;
}

/** An entry as host/vfio/cache-invalidate.ts applies it to the IOTLB of one domain. */
function apply(io: Iotlb, e: CacheInvalidateEntry): void {
  const pasid = Number(e.pasid);
  if (e.granularity === IOMMU_INV_GRANU.PASID) return io.invalidatePasid(HOST_DID, pasid);
  expect(e.granularity).toBe(IOMMU_INV_GRANU.ADDR);
  const leaf = (e.flags & IOMMU_INV_ADDR_FLAGS.LEAF) !== 0;
  for (const b of addressBlocks(e.addr, e.granule_size * e.nb_granules)) {
    const [v0, v1] = maskedPages(b.addr, b.am);
    io.invalidatePasidPages(HOST_DID, pasid, v0, v1, leaf);
  }
}

/** Everything the IOTLB caches for the tag, in a comparable form. */
function state(io: Iotlb, hpasid: number, psc: Fill[]) {
  const b = io.find(HOST_DID, hpasid);
  if (b === undefined) return { entries: [], psc: [], count: io.entries };
  const entries = [...b.liveEntries()].map(([k, e]) => `${e.level}:${k}:${e.base}`).sort();
  const live = psc.filter((p) => b.pscLookup(p.level, p.vpn) !== undefined).map((p) => `${p.level}:${Math.floor(p.vpn / LEVEL_SPAN[p.level]!)}`).sort();
  return { entries, psc: live, count: io.entries };
}

describe('adjacent page-selective PASID-based IOTLB descriptors forwarded as blocks', () => {
  it('leave the host IOTLB as the same descriptors one at a time do', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 0, max: WINDOW - 1 }), { maxLength: 300 }),
        fc.array(fc.record({ vpn: fc.integer({ min: 0, max: WINDOW - 1 }), level: fc.constant(2) }), { maxLength: 4 }),
        fc.array(fc.record({ vpn: fc.integer({ min: 0, max: WINDOW - 1 }), level: fc.constantFrom(2, 2, 3) }), { minLength: 1, maxLength: 12 }),
        async (segs, holes, fills, psc) => {
          const together = await rig();
          const apart = await rig();
          const descs = encode(together.pasid, segs);
          const all = new Uint8Array(descs.length * 32);
          descs.forEach((d, i) => all.set(d, i * 32));
          await together.drv.submitBytes(all);
          for (const d of descs) await apart.drv.submitBytes(d);
          expect(together.entries.length).toBeLessThanOrEqual(apart.entries.length);
          const hpasid = together.pasid;
          const a = filledIotlb(hpasid, holes, fills, psc);
          const b = filledIotlb(hpasid, holes, fills, psc);
          for (const e of together.entries) apply(a, e);
          for (const e of apart.entries) apply(b, e);
          expect(state(a, hpasid, psc)).toEqual(state(b, hpasid, psc));
        },
      ),
      { numRuns: 100 },
    );
  }, 60_000);

  it('a run of adjacent pages becomes fewer entries that cover exactly its pages', async () => {
    const r = await rig();
    // Pages 3..1002: not aligned at either end.
    const descs = encode(r.pasid, [{ page: 3, count: 1000, am: 0, ih: false, did: DID, other: false, all: false }]);
    const all = new Uint8Array(descs.length * 32);
    descs.forEach((d, i) => all.set(d, i * 32));
    await r.drv.submitBytes(all);
    const blocks = r.entries.map((e) => [Number(e.addr >> 12n), Number(e.nb_granules)] as const);
    expect(blocks).toEqual([[3, 1], [4, 4], [8, 8], [16, 16], [32, 32], [64, 64], [128, 128], [256, 256], [512, 256], [768, 128], [896, 64], [960, 32], [992, 8], [1000, 2], [1002, 1]]);
    for (const [page, n] of blocks) expect(page % n).toBe(0);
  });

  it('a run breaks where IH, DID or PASID changes, at a gap, and at a repeated page', async () => {
    const r = await rig();
    const seg = (page: number, count: number, more: Partial<Segment> = {}): Segment => ({ page, count, am: 0, ih: false, did: DID, other: false, all: false, ...more });
    const descs = encode(r.pasid, [seg(0, 2), seg(2, 2, { ih: true }), seg(4, 2, { did: DID + 1 }), seg(6, 2), seg(9, 2), seg(10, 2), seg(16, 2, { am: 1 })]);
    const all = new Uint8Array(descs.length * 32);
    descs.forEach((d, i) => all.set(d, i * 32));
    await r.drv.submitBytes(all);
    // DID + 1 is not the bound entry's DID: nothing is forwarded for it.
    expect(r.entries.map((e) => [Number(e.addr >> 12n), Number(e.nb_granules), (e.flags & IOMMU_INV_ADDR_FLAGS.LEAF) !== 0])).toEqual([
      [0, 2, false],
      [2, 2, true],
      [6, 2, false],
      [9, 1, false],
      [10, 1, false],
      [10, 2, false],
      [16, 4, false],
    ]);
  });

  it('blocks of one run never exceed 2^MAMV pages', async () => {
    const r = await rig();
    // 2^18 pages would be one block; AM 9 descriptors × 1024 = 2^19 pages from 0: two blocks of 2^18.
    const descs = encode(r.pasid, [{ page: 0, count: 1024, am: 9, ih: false, did: DID, other: false, all: false }]);
    const all = new Uint8Array(descs.length * 32);
    descs.forEach((d, i) => all.set(d, i * 32));
    await r.drv.submitBytes(all);
    expect(r.entries.map((e) => [Number(e.addr >> 12n), Number(e.nb_granules)])).toEqual([[0, 2 ** 18], [2 ** 18, 2 ** 18]]);
  });
});
