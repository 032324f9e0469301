/**
 * Property: the indexed translation caches (host/iommu/tlb.ts: buckets by DID and PASID, 4 KiB
 * keys indexed by 2 MiB region; host/iommu/pasid-cache-index.ts: cached PASID entries by DID and
 * PASID) hold exactly what a scan-everything reference model holds after any sequence of fills,
 * lookups and invalidations of every VT-d granularity (VT-d spec §6.5.2: IOTLB global /
 * domain-selective / page-selective with an address mask, PASID-based IOTLB all-within-PASID /
 * page-selective with and without the invalidation hint, PASID-cache global / domain / PASID,
 * device-TLB per PASID, ranged or whole, and all PASIDs). Every lookup answers the same, the
 * sets of live entries are identical, the entry counts agree, and no bucket outlives its use
 * (a store holds a bucket only while it caches something or a context uses it).
 *
 * The reference keeps a flat list and decides every invalidation by scanning all of it.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DevTlb, Iotlb, type BucketStore, type TlbBucket } from '../../../../host/iommu/tlb.js';
import { PasidCacheIndex } from '../../../../host/iommu/pasid-cache-index.js';
import { RequestContext, type ContextDevice } from '../../../../host/iommu/request-context.js';
import type { CachedPasidEntry } from '../../../../host/iommu/pasid-cache.js';
import { PSC_RW, PSC_TBL_W, PSC_US } from '../../../../host/iommu/tlb-bucket.js';
import { GEN_MASK, GEN_ONE, HOLDS_OVERFLOW } from '../../../../host/iommu/pasid-cache-slots.js';

const PAGES_PER_LEVEL = [0, 1, 512, 262144];
const LEVEL_SPAN_PAGES = [0, 1, 512, 262144, 134217728, 68719476736];

// ---- the scan-everything reference ---------------------------------------------------------------

interface RefEntry {
  tag: string;
  level: number;
  key: number;
  base: number;
  allow: number;
}

interface RefPsc {
  tag: string;
  level: number;
  key: number;
  tbl: number;
}

class RefCache {
  entries: RefEntry[] = [];
  psc: RefPsc[] = [];
  /** Contexts using each tag (a bucket must exist while > 0). */
  holders = new Map<string, number>();

  constructor(readonly capacity: number) {}

  fill(tag: string, vpn: number, level: number, base: number, allow: number): void {
    const key = Math.floor(vpn / PAGES_PER_LEVEL[level]!);
    // A full store is flushed whole before any insert (hardware may drop any entry at any time).
    if (this.entries.length >= this.capacity) this.clearWhere(() => true);
    const same = this.entries.find((e) => e.tag === tag && e.level === level && e.key === key);
    if (same !== undefined) {
      same.base = base;
      same.allow = allow;
    } else this.entries.push({ tag, level, key, base, allow });
  }

  lookup(tag: string, vpn: number): RefEntry | undefined {
    for (const level of [1, 2, 3]) {
      const key = Math.floor(vpn / PAGES_PER_LEVEL[level]!);
      const e = this.entries.find((x) => x.tag === tag && x.level === level && x.key === key);
      if (e !== undefined) return e;
    }
    return undefined;
  }

  pscFill(tag: string, level: number, vpn: number, tbl: number): void {
    const key = Math.floor(vpn / LEVEL_SPAN_PAGES[level]!);
    const e = this.psc.find((x) => x.tag === tag && x.level === level && x.key === key);
    if (e !== undefined) e.tbl = tbl;
    else this.psc.push({ tag, level, key, tbl });
  }

  clearWhere(pred: (tag: string) => boolean): void {
    this.entries = this.entries.filter((e) => !pred(e.tag));
    this.psc = this.psc.filter((e) => !pred(e.tag));
  }

  /** Entries of `tag` whose page overlaps pages [v0, v1]. */
  removeRange(tag: string, v0: number, v1: number): void {
    this.entries = this.entries.filter((e) => {
      if (e.tag !== tag) return true;
      const first = e.key * PAGES_PER_LEVEL[e.level]!;
      const last = first + PAGES_PER_LEVEL[e.level]! - 1;
      return last < v0 || first > v1;
    });
  }

  removePscRange(tag: string, v0: number, v1: number): void {
    this.psc = this.psc.filter((e) => {
      if (e.tag !== tag) return true;
      const first = e.key * LEVEL_SPAN_PAGES[e.level]!;
      const last = first + LEVEL_SPAN_PAGES[e.level]! - 1;
      return last < v0 || first > v1;
    });
  }

  tags(): Set<string> {
    const s = new Set<string>();
    for (const e of this.entries) s.add(e.tag);
    for (const e of this.psc) s.add(e.tag);
    for (const [t, n] of this.holders) if (n > 0) s.add(t);
    return s;
  }
}

// ---- operations ---------------------------------------------------------------------------------

const DIDS = [2, 3];
const PASIDS = [0, 1, 5, 6]; // odd PASIDs are first-level (nested) tags, even ones second-level
const firstLevel = (pasid: number): boolean => pasid % 2 === 1;

/**
 * Page numbers: mostly a few words of one 2 MiB region (so entries and ranges collide often),
 * then a few regions, around a 1 GiB boundary, and near the top of the 64-bit space.
 */
const vpnArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 127 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 2047 }) },
  { weight: 1, arbitrary: fc.integer({ min: 262144 - 64, max: 262144 + 64 }) },
  { weight: 1, arbitrary: fc.constantFrom(2 ** 40, 2 ** 40 + 511, 2 ** 52 - 1) },
);
/** HPA of a cached page: 4 KiB-aligned (a 4 KiB entry is stored as frame · 64 + access classes). */
const pageBaseArb = fc.nat(1 << 18).map((frame) => frame * 4096);
const tagArb = fc.record({ did: fc.constantFrom(...DIDS), pasid: fc.constantFrom(...PASIDS) });
/** An aligned block of 2^am pages holding `vpn` (an address-mask invalidation); am up to 20 also exercises the scan paths. */
const blockArb = fc.record({
  vpn: vpnArb,
  am: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 6 }) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 20 }) }),
});

type Op =
  | { op: 'hold'; did: number; pasid: number }
  | { op: 'release'; i: number }
  | { op: 'fill'; i: number; vpn: number; level: number; base: number; allow: number }
  | { op: 'psc'; i: number; vpn: number; level: number; tbl: number }
  | { op: 'lookup'; did: number; pasid: number; vpn: number }
  | { op: 'global' }
  | { op: 'domain'; did: number }
  | { op: 'pages'; did: number; vpn: number; am: number }
  | { op: 'pasid'; did: number; pasid: number }
  | { op: 'pasidPages'; did: number; pasid: number; vpn: number; am: number; ih: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: tagArb.map((t) => ({ op: 'hold' as const, ...t })) },
  { weight: 1, arbitrary: fc.nat(20).map((i) => ({ op: 'release' as const, i })) },
  {
    weight: 8,
    arbitrary: fc.record({ i: fc.nat(20), vpn: vpnArb, level: fc.constantFrom(1, 1, 1, 2, 3), base: pageBaseArb, allow: fc.integer({ min: 1, max: 63 }) }).map((r) => ({ op: 'fill' as const, ...r })),
  },
  { weight: 2, arbitrary: fc.record({ i: fc.nat(20), vpn: vpnArb, level: fc.integer({ min: 2, max: 5 }), tbl: fc.nat(1 << 30) }).map((r) => ({ op: 'psc' as const, ...r })) },
  { weight: 3, arbitrary: fc.record({ did: fc.constantFrom(...DIDS), pasid: fc.constantFrom(...PASIDS), vpn: vpnArb }).map((r) => ({ op: 'lookup' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ op: 'global' as const }) },
  { weight: 1, arbitrary: fc.constantFrom(...DIDS).map((did) => ({ op: 'domain' as const, did })) },
  { weight: 3, arbitrary: fc.record({ did: fc.constantFrom(...DIDS), b: blockArb }).map((r) => ({ op: 'pages' as const, did: r.did, ...r.b })) },
  { weight: 2, arbitrary: tagArb.map((t) => ({ op: 'pasid' as const, ...t })) },
  { weight: 3, arbitrary: fc.record({ t: tagArb, b: blockArb, ih: fc.boolean() }).map((r) => ({ op: 'pasidPages' as const, ...r.t, ...r.b, ih: r.ih })) },
);

function block(vpn: number, am: number): [number, number] {
  const v0 = Math.floor(vpn / 2 ** am) * 2 ** am;
  return [v0, v0 + 2 ** am - 1];
}

/** Every live entry of a store as comparable rows. */
function liveRows(buckets: Iterable<TlbBucket>, tagOf: (b: TlbBucket) => string): string[] {
  const rows: string[] = [];
  for (const b of buckets) for (const [key, e] of b.liveEntries()) rows.push(`${tagOf(b)}|${e.level}|${key}|${e.base}|${e.allow}`);
  return rows.sort();
}

function refRows(ref: RefCache): string[] {
  return ref.entries.map((e) => `${e.tag}|${e.level}|${e.key}|${e.base}|${e.allow}`).sort();
}

/** The store agrees with the reference: entries, counts, paging-structure entries, lookups, and which buckets exist. */
function expectSame(store: BucketStore, ref: RefCache, tagOf: (b: TlbBucket) => string, find: (tag: string) => TlbBucket | undefined): void {
  expect(liveRows(store.allBuckets(), tagOf)).toEqual(refRows(ref));
  expect(store.entries).toBe(ref.entries.length);
  const tags = [...store.allBuckets()].map(tagOf).sort();
  expect(tags).toEqual([...ref.tags()].sort());
  let psc = 0;
  for (const b of store.allBuckets()) psc += b.pscLive;
  expect(psc).toBe(ref.psc.length);
  for (const p of ref.psc) {
    const e = find(p.tag)?.pscLookup(p.level, p.key * LEVEL_SPAN_PAGES[p.level]!);
    expect(e?.tblPfn).toBe(p.tbl);
  }
}

describe('indexed IOTLB and paging-structure caches vs a scan-everything reference', () => {
  it('agree on every lookup and on the set of cached entries after random fill / invalidate sequences', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 120 }), fc.constantFrom(24, 1 << 20), (ops, capacity) => {
        const iotlb = new Iotlb(capacity);
        const ref = new RefCache(capacity);
        const tag = (did: number, pasid: number): string => `${did}/${pasid}`;
        const tagOf = (b: TlbBucket): string => tag(b.did, b.pasid);
        const held: { b: TlbBucket; tag: string; live: boolean }[] = [];
        const live = (i: number): { b: TlbBucket; tag: string; live: boolean } | undefined => {
          const h = held.length === 0 ? undefined : held[i % held.length];
          return h !== undefined && h.live ? h : undefined;
        };
        // Every tag starts in use by one context, as after binds; 'release' and 'hold' change that.
        const start: Op[] = [];
        for (const did of DIDS) for (const pasid of PASIDS) start.push({ op: 'hold', did, pasid });
        for (const o of [...start, ...ops]) {
          switch (o.op) {
            case 'hold': {
              // A context caches its PASID entry: it acquires the bucket (the engine marks first-level tags).
              const b = iotlb.bucket(o.did, o.pasid);
              if (firstLevel(o.pasid)) b.firstLevel = true;
              b.acquire();
              const t = tag(o.did, o.pasid);
              held.push({ b, tag: t, live: true });
              ref.holders.set(t, (ref.holders.get(t) ?? 0) + 1);
              break;
            }
            case 'release': {
              const h = live(o.i);
              if (h === undefined) break;
              h.live = false;
              h.b.release();
              ref.holders.set(h.tag, ref.holders.get(h.tag)! - 1);
              break;
            }
            case 'fill': {
              const h = live(o.i);
              if (h === undefined) break;
              iotlb.insert(h.b, o.vpn, o.level, o.base, o.allow);
              ref.fill(h.tag, o.vpn, o.level, o.base, o.allow);
              break;
            }
            case 'psc': {
              const h = live(o.i);
              if (h === undefined) break;
              h.b.pscInsert(o.level, o.vpn, o.tbl, 0, PSC_TBL_W | PSC_RW | PSC_US);
              ref.pscFill(h.tag, o.level, o.vpn, o.tbl);
              break;
            }
            case 'lookup': {
              const got = iotlb.find(o.did, o.pasid)?.lookup(o.vpn);
              const want = ref.lookup(tag(o.did, o.pasid), o.vpn);
              expect(got === undefined ? undefined : [got.level, got.base, got.allow]).toEqual(want === undefined ? undefined : [want.level, want.base, want.allow]);
              break;
            }
            case 'global':
              iotlb.invalidateAll();
              ref.clearWhere(() => true);
              break;
            case 'domain':
              iotlb.invalidateDomain(o.did);
              ref.clearWhere((t) => t.startsWith(`${o.did}/`));
              break;
            case 'pages': {
              const [v0, v1] = block(o.vpn, o.am);
              iotlb.invalidatePages(o.did, v0, v1);
              for (const p of PASIDS) {
                const t = tag(o.did, p);
                if (firstLevel(p)) ref.clearWhere((x) => x === t);
                else ref.removeRange(t, v0, v1);
              }
              break;
            }
            case 'pasid':
              iotlb.invalidatePasid(o.did, o.pasid);
              ref.clearWhere((t) => t === tag(o.did, o.pasid));
              break;
            case 'pasidPages': {
              const [v0, v1] = block(o.vpn, o.am);
              iotlb.invalidatePasidPages(o.did, o.pasid, v0, v1, o.ih);
              if (firstLevel(o.pasid)) {
                ref.removeRange(tag(o.did, o.pasid), v0, v1);
                if (!o.ih) ref.removePscRange(tag(o.did, o.pasid), v0, v1);
              }
              break;
            }
          }
          expectSame(iotlb, ref, tagOf, (t) => {
            const [d, p] = t.split('/').map(Number);
            return iotlb.find(d!, p!);
          });
        }
        // Every probe address answers alike at the end.
        for (const did of DIDS) {
          for (const pasid of PASIDS) {
            for (const vpn of [0, 1, 511, 512, 1023, 2047, 262143, 262144, 262600, 2 ** 40, 2 ** 52 - 1]) {
              const got = iotlb.find(did, pasid)?.lookup(vpn);
              const want = ref.lookup(tag(did, pasid), vpn);
              expect(got?.base).toBe(want?.base);
            }
          }
        }
      }),
      { numRuns: 150 },
    );
  });
});

type DevOp =
  | { op: 'fill'; pasid: number; vpn: number; level: number; base: number }
  | { op: 'lookup'; pasid: number; vpn: number }
  | { op: 'pasid'; pasid: number }
  | { op: 'range'; pasid: number; vpn: number; am: number }
  | { op: 'allPasids' }
  | { op: 'allPasidsRange'; vpn: number; am: number };

const DEV_PASIDS = [-1, 0, 4, 9];
const devOpArb: fc.Arbitrary<DevOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ pasid: fc.constantFrom(...DEV_PASIDS), vpn: vpnArb, level: fc.constantFrom(1, 1, 2, 3), base: pageBaseArb }).map((r) => ({ op: 'fill' as const, ...r })) },
  { weight: 3, arbitrary: fc.record({ pasid: fc.constantFrom(...DEV_PASIDS), vpn: vpnArb }).map((r) => ({ op: 'lookup' as const, ...r })) },
  { weight: 1, arbitrary: fc.constantFrom(...DEV_PASIDS).map((pasid) => ({ op: 'pasid' as const, pasid })) },
  { weight: 3, arbitrary: fc.record({ pasid: fc.constantFrom(...DEV_PASIDS), b: blockArb }).map((r) => ({ op: 'range' as const, pasid: r.pasid, ...r.b })) },
  { weight: 1, arbitrary: fc.constant({ op: 'allPasids' as const }) },
  { weight: 1, arbitrary: blockArb.map((b) => ({ op: 'allPasidsRange' as const, ...b })) },
);

describe('indexed device-TLB vs a scan-everything reference', () => {
  it('agrees after random fill / invalidate sequences (per PASID, ranged, all PASIDs)', () => {
    fc.assert(
      fc.property(fc.array(devOpArb, { minLength: 1, maxLength: 120 }), (ops) => {
        const tlb = new DevTlb(1 << 20);
        const ref = new RefCache(1 << 20);
        // One context per PASID holds its bucket for the whole run, as a device's contexts do.
        const buckets = new Map<number, TlbBucket>();
        for (const p of DEV_PASIDS) {
          const b = tlb.bucket(p);
          b.acquire();
          buckets.set(p, b);
          ref.holders.set(String(p), 1);
        }
        for (const o of ops) {
          switch (o.op) {
            case 'fill':
              tlb.insert(buckets.get(o.pasid)!, o.vpn, o.level, o.base, 7);
              ref.fill(String(o.pasid), o.vpn, o.level, o.base, 7);
              break;
            case 'lookup':
              expect(tlb.find(o.pasid)?.lookup(o.vpn)?.base).toBe(ref.lookup(String(o.pasid), o.vpn)?.base);
              break;
            case 'pasid':
              tlb.invalidate(o.pasid);
              ref.clearWhere((t) => t === String(o.pasid));
              break;
            case 'range': {
              const [v0, v1] = block(o.vpn, o.am);
              tlb.invalidate(o.pasid, v0, v1);
              ref.removeRange(String(o.pasid), v0, v1);
              break;
            }
            case 'allPasids':
              tlb.invalidateAll();
              ref.clearWhere(() => true);
              break;
            case 'allPasidsRange': {
              const [v0, v1] = block(o.vpn, o.am);
              for (const p of DEV_PASIDS) {
                tlb.invalidate(p, v0, v1);
                ref.removeRange(String(p), v0, v1);
              }
              break;
            }
          }
          expectSame(tlb, ref, (b) => String(b.pasid), (t) => tlb.find(Number(t)));
        }
        // Releasing every context leaves an empty store: no bucket outlives its use.
        for (const b of buckets.values()) b.release();
        tlb.invalidateAll();
        expect(tlb.bucketCount).toBe(0);
      }),
      { numRuns: 100 },
    );
  });
});

type PcOp =
  | { op: 'load'; ctx: number; did: number }
  | { op: 'crowd'; p: number; did: number }
  | { op: 'drop'; ctx: number }
  | { op: 'fill'; ctx: number; vpn: number; psc: boolean }
  | { op: 'pasid'; did: number; pasid: number }
  | { op: 'domain'; did: number }
  | { op: 'global' }
  | { op: 'iotlbPasid'; did: number; pasid: number }
  | { op: 'iotlbDomain'; did: number }
  | { op: 'iotlbPages'; did: number; v0: number; n: number }
  | { op: 'iotlbGlobal' }
  | { op: 'age'; k: number };

describe('PASID-cache index vs scanning every context', () => {
  it('drops exactly the contexts a scan would, at every granularity, and keeps buckets exactly while used', () => {
    const device = (rid: number): ContextDevice => ({ rid, pasidDirPtr: 0, devTlb: null, atsEnabled: false });
    // A context: device × PASID slot, mostly the same PASID, so that many devices share a tag.
    const ctxArb = fc.record({ dev: fc.nat(16), p: fc.oneof({ weight: 3, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.nat(3) }) }).map((r) => r.dev * 4 + r.p);
    const pcArb: fc.Arbitrary<PcOp> = fc.oneof(
      { weight: 8, arbitrary: fc.record({ ctx: ctxArb, did: fc.constantFrom(DIDS[0]!, DIDS[0]!, DIDS[1]!) }).map((r) => ({ op: 'load' as const, ...r })) },
      { weight: 1, arbitrary: fc.record({ p: fc.nat(3), did: fc.constantFrom(...DIDS) }).map((r) => ({ op: 'crowd' as const, ...r })) },
      { weight: 1, arbitrary: ctxArb.map((ctx) => ({ op: 'drop' as const, ctx })) },
      { weight: 3, arbitrary: fc.record({ ctx: ctxArb, vpn: fc.nat(63), psc: fc.boolean() }).map((r) => ({ op: 'fill' as const, ...r })) },
      { weight: 2, arbitrary: tagArb.map((t) => ({ op: 'pasid' as const, ...t })) },
      { weight: 1, arbitrary: fc.constantFrom(...DIDS).map((did) => ({ op: 'domain' as const, did })) },
      { weight: 1, arbitrary: fc.constant({ op: 'global' as const }) },
      { weight: 1, arbitrary: tagArb.map((t) => ({ op: 'iotlbPasid' as const, ...t })) },
      { weight: 1, arbitrary: fc.constantFrom(...DIDS).map((did) => ({ op: 'iotlbDomain' as const, did })) },
      { weight: 1, arbitrary: fc.constant({ op: 'iotlbGlobal' as const }) },
      { weight: 2, arbitrary: fc.record({ did: fc.constantFrom(...DIDS), v0: fc.nat(63), n: fc.integer({ min: 1, max: 64 }) }).map((r) => ({ op: 'iotlbPages' as const, ...r })) },
      { weight: 2, arbitrary: fc.nat(1).map((k) => ({ op: 'age' as const, k })) },
    );
    /** Most contexts holding one tag's entry at once, over all runs (the overflow of the holds field must be reached). */
    let holdsSeen = 0;
    fc.assert(
      // 3 devices, or 17 (more contexts on one tag than a slot's holds field counts: pasid-cache-slots.ts).
      fc.property(fc.array(pcArb, { minLength: 1, maxLength: 100, size: 'max' }), fc.constantFrom(3, 17), (ops, devices) => {
        const iotlb = new Iotlb(1 << 20);
        // devices × PASIDs 0 (RID_PASID: requests without PASID), 1, 5, 6.
        const ctxs: RequestContext[] = [];
        for (let rid = 1; rid <= devices; rid++) for (const p of [-1, 1, 5, 6]) ctxs.push(new RequestContext(device(rid), p));
        const index = new PasidCacheIndex(iotlb, () => ctxs);
        const cached = new Map<RequestContext, number>(); // reference: context → DID of its cached entry
        // Reference of what the buckets cache: 4 KiB entries by tag, and the tags with paging-structure entries.
        const entries = new Map<string, Set<number>>();
        const psc = new Set<string>();
        const tagOf = (did: number, pasid: number): string => `${did}/${pasid}`;
        for (const o of ops) {
          const load = (c: RequestContext, did: number): void => {
            if (c.pe !== null) return; // the engine loads only a context without a cached entry
            index.load(c, { did } as CachedPasidEntry, iotlb.bucket(did, c.peIndex));
            cached.set(c, did);
            holdsSeen = Math.max(holdsSeen, [...cached].filter(([x, d]) => d === did && x.peIndex === c.peIndex).length);
          };
          switch (o.op) {
            case 'load':
              load(ctxs[o.ctx % ctxs.length]!, o.did);
              break;
            case 'crowd':
              // The PASID of slot `p` in use on every device (one bind per device, then a request each).
              for (let d = 0; d < devices; d++) load(ctxs[d * 4 + o.p]!, o.did);
              break;
            case 'drop':
              index.drop(ctxs[o.ctx % ctxs.length]!);
              cached.delete(ctxs[o.ctx % ctxs.length]!);
              break;
            case 'fill': {
              // A translation through a context with a cached entry fills its bucket (the engine's fill / pscInsert).
              const c = ctxs[o.ctx % ctxs.length]!;
              if (c.pe === null) break;
              const t = tagOf(c.iotlb.did, c.iotlb.pasid);
              if (o.psc) {
                c.iotlb.pscInsert(2, o.vpn, 1, 1, PSC_TBL_W | PSC_RW | PSC_US);
                psc.add(t);
              } else {
                iotlb.insert(c.iotlb, o.vpn, 1, o.vpn * 4096, 1);
                if (!entries.has(t)) entries.set(t, new Set());
                entries.get(t)!.add(o.vpn);
              }
              break;
            }
            case 'pasid':
              index.dropPasid(o.did, o.pasid);
              for (const [c, did] of [...cached]) if (did === o.did && c.peIndex === o.pasid) cached.delete(c);
              break;
            case 'domain':
              index.dropDomain(o.did);
              for (const [c, did] of [...cached]) if (did === o.did) cached.delete(c);
              break;
            case 'global':
              index.dropAll();
              cached.clear();
              break;
            case 'iotlbPasid':
              iotlb.invalidatePasid(o.did, o.pasid);
              entries.delete(tagOf(o.did, o.pasid));
              psc.delete(tagOf(o.did, o.pasid));
              break;
            case 'iotlbDomain':
              iotlb.invalidateDomain(o.did);
              for (const t of [...entries.keys()]) if (t.startsWith(`${o.did}/`)) entries.delete(t);
              for (const t of [...psc]) if (t.startsWith(`${o.did}/`)) psc.delete(t);
              break;
            case 'iotlbGlobal':
              iotlb.invalidateAll();
              entries.clear();
              psc.clear();
              break;
            case 'iotlbPages':
              // Second-level tags: the 4 KiB entries of the range go, paging-structure entries stay.
              iotlb.invalidatePages(o.did, o.v0, o.v0 + o.n - 1);
              for (const [t, vpns] of [...entries]) {
                if (!t.startsWith(`${o.did}/`)) continue;
                for (const v of [...vpns]) if (v >= o.v0 && v < o.v0 + o.n) vpns.delete(v);
                if (vpns.size === 0) entries.delete(t);
              }
              break;
            case 'age': {
              // As if every slot had been flushed and reloaded until its generation is k steps short
              // of wrapping (generations only move forward: one already past stays): contexts whose
              // entry is valid follow, stale ones keep their old generation (which the wrap must
              // never let match again).
              for (const did of DIDS) {
                const t = iotlb.slotsOf(did);
                if (t === undefined) continue;
                const gen = (GEN_MASK - o.k * GEN_ONE) | 0;
                for (const leaf of t.leaves) {
                  if (leaf === undefined) continue;
                  const valid = ctxs.filter((c) => c.pcLeaf === leaf && c.pe !== null);
                  for (let at = 0; at < leaf.length; at++) {
                    if ((leaf[at]! & GEN_MASK) >>> 0 >= gen >>> 0) continue;
                    leaf[at] = gen | (leaf[at]! & ~GEN_MASK);
                    for (const c of valid) if (c.pcAt === at) c.peGen = gen;
                  }
                }
              }
              break;
            }
          }
          expect(ctxs.map((c) => (c.pe === null ? null : c.pe.did))).toEqual(ctxs.map((c) => cached.get(c) ?? null));
          expect(index.size).toBe(cached.size);
          expect(index.domainCount).toBe(new Set(cached.values()).size);
          // The IOTLB keeps a bucket exactly for the (DID, PASID) pairs some context still uses or that cache something.
          const used = new Set([...cached].map(([c, did]) => tagOf(did, c.peIndex)));
          for (const t of entries.keys()) used.add(t);
          for (const t of psc) used.add(t);
          // Exact holds beyond the holds field are kept only for the tags that have that many.
          for (const did of DIDS) {
            const crowded = new Set([...cached].filter(([, d]) => d === did).map(([c]) => c.peIndex));
            const over = [...crowded].filter((p) => [...cached].filter(([c, d]) => d === did && c.peIndex === p).length >= HOLDS_OVERFLOW);
            expect(iotlb.slotsOf(did)?.overflow.size ?? 0).toBe(over.length);
          }
          expect(new Set([...iotlb.allBuckets()].map((b) => tagOf(b.did, b.pasid)))).toEqual(used);
        }
        index.dropAll();
        iotlb.invalidateAll();
        expect(index.domainCount).toBe(0);
        expect(iotlb.bucketCount).toBe(0);
      }),
      { numRuns: 150 },
    );
  expect(holdsSeen).toBeGreaterThanOrEqual(HOLDS_OVERFLOW + 1);
  });
});
