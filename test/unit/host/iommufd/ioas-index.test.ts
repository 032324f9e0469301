/**
 * The IOAS's area index (host/iommufd/ioas.ts): binary-searched placement, overlap checks and
 * unmap runs agree with a scan-everything reference model on random operation sequences; the
 * per-VM area cap (MAX_IOAS_AREAS, ENOSPC, nothing changed); an IOAS_UNMAP over more than
 * IOAS_SLICE_AREAS areas runs in slices (a Promise, the mirrors agree with the list between
 * slices) and stops with ENOTCONN when the VM's context closes meanwhile.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { IOAS_SLICE_AREAS, Ioas, type IoasArea, type IoasMirror } from '../../../../host/iommufd/ioas.js';
import { isVsvaError } from '../../../../src/errors.js';

const PAGE = 0x1000n;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
const RW = { read: true, write: true };

/** A mirror that records which pages it maps (the page → hpa of a paging domain). */
class PageMirror implements IoasMirror {
  readonly pages = new Map<bigint, number>();
  unmapCalls = 0;
  map(iova: bigint, hpa: number, length: bigint): void {
    for (let o = 0n; o < length; o += PAGE) this.pages.set(iova + o, hpa + Number(o));
  }
  unmap(iova: bigint, length: bigint): void {
    this.unmapCalls++;
    for (const p of [...this.pages.keys()]) if (p >= iova && p < iova + length) this.pages.delete(p);
  }
}

/** Errno of a call, or its value. */
function outcome<T>(f: () => T): T | string {
  try {
    return f();
  } catch (e) {
    if (isVsvaError(e)) return e.code;
    throw e;
  }
}

/** The reference: a plain list scanned whole for every operation (the rules of ioas.ts's file comment). */
class ReferenceIoas {
  areas: IoasArea[] = [];
  map(fixed: bigint | null, length: bigint, hpa: number): bigint | string {
    if (length === 0n || length % PAGE !== 0n || (fixed !== null && fixed % PAGE !== 0n)) return 'EINVAL';
    const busy = [...this.areas].sort((a, b) => (a.iova < b.iova ? -1 : 1));
    let start: bigint;
    if (fixed !== null) {
      if (fixed + length - 1n >= 1n << 48n) return 'EINVAL';
      if (busy.some((a) => a.iova <= fixed + length - 1n && fixed <= a.iova + a.length - 1n)) return 'EEXIST';
      start = fixed;
    } else {
      start = 0n;
      for (const a of busy) {
        if (a.iova - start >= length) break;
        if (a.iova + a.length > start) start = a.iova + a.length;
      }
      if (start + length - 1n >= 1n << 48n) return 'ENOSPC';
    }
    this.areas.push({ iova: start, length, gpa: 0n, hpa, prot: RW });
    return start;
  }
  unmap(iova: bigint, length: bigint): bigint | string {
    const all = iova === 0n && length === U64_MAX;
    if (!all && (length === 0n || iova % PAGE !== 0n || length % PAGE !== 0n)) return 'EINVAL';
    const last = all ? U64_MAX : iova + length - 1n;
    const hit = this.areas.filter((a) => a.iova <= last && iova <= a.iova + a.length - 1n);
    if (hit.some((a) => a.iova < iova || a.iova + a.length - 1n > last)) return 'ENOENT';
    if (hit.length === 0 && !all) return 'ENOENT';
    this.areas = this.areas.filter((a) => !hit.includes(a));
    return hit.reduce((n, a) => n + a.length, 0n);
  }
}

function mapInto(ioas: Ioas, fixed: bigint | null, length: bigint, hpa: number): bigint {
  const span = ioas.placeArea(fixed, length, 'test map');
  ioas.insert([{ iova: span.start, length, gpa: 0n, hpa, prot: RW }]);
  return span.start;
}

const op = fc.oneof(
  fc.record({ kind: fc.constant('fixed' as const), page: fc.integer({ min: 0, max: 63 }), pages: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('auto' as const), page: fc.constant(0), pages: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('unmap' as const), page: fc.integer({ min: 0, max: 63 }), pages: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ kind: fc.constant('unmapAll' as const), page: fc.constant(0), pages: fc.constant(0) }),
);

describe('IOAS area index', () => {
  it('agrees with a scan-everything reference on random map / auto-map / unmap sequences (areas, results, mirror pages)', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 60 }), (ops) => {
        const ioas = new Ioas(1);
        const mirror = new PageMirror();
        ioas.mirrors.add(mirror);
        const ref = new ReferenceIoas();
        let hpa = 0x100_0000;
        for (const o of ops) {
          const iova = BigInt(o.page) * PAGE;
          const length = BigInt(o.pages) * PAGE;
          hpa += 0x10_0000;
          let got: unknown;
          let want: unknown;
          if (o.kind === 'fixed' || o.kind === 'auto') {
            const fixed = o.kind === 'fixed' ? iova : null;
            got = outcome(() => mapInto(ioas, fixed, length, hpa));
            want = ref.map(fixed, length, hpa);
          } else {
            const [i, l] = o.kind === 'unmapAll' ? [0n, U64_MAX] : [iova, length];
            got = outcome(() => ioas.unmap(i, l, 'test unmap'));
            want = ref.unmap(i, l);
          }
          expect(got).toEqual(want);
          const sorted = [...ref.areas].sort((a, b) => (a.iova < b.iova ? -1 : 1));
          expect(ioas.areas.map((a) => [a.iova, a.length, a.hpa])).toEqual(sorted.map((a) => [a.iova, a.length, a.hpa]));
          const pages = new Map<bigint, number>();
          for (const a of sorted) for (let off = 0n; off < a.length; off += PAGE) pages.set(a.iova + off, a.hpa + Number(off));
          expect(mirror.pages).toEqual(pages);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('caps the areas of a VM (ENOSPC, nothing mapped); a destroyed IOAS gives its areas back', () => {
    const budget = { areas: 0, max: 3 };
    const a = new Ioas(1, budget);
    const b = new Ioas(2, budget);
    const mirror = new PageMirror();
    b.mirrors.add(mirror);
    mapInto(a, 0x1000n, PAGE, 0x10000);
    mapInto(a, 0x3000n, PAGE, 0x20000);
    mapInto(b, 0x1000n, PAGE, 0x30000);
    expect(outcome(() => mapInto(b, 0x5000n, PAGE, 0x40000))).toBe('ENOSPC');
    expect(b.areas).toHaveLength(1);
    expect(mirror.pages.size).toBe(1);
    expect(budget.areas).toBe(3);
    a.forgetAreas();
    expect(budget.areas).toBe(1);
    expect(mapInto(b, 0x5000n, PAGE, 0x40000)).toBe(0x5000n);
    expect(b.unmap(0n, U64_MAX, 'test')).toBe(2n * PAGE);
    expect(budget.areas).toBe(0);
  });
});

describe('IOAS_UNMAP in slices', () => {
  const N = IOAS_SLICE_AREAS * 3 + 50;
  /** Area i: one page at IOVA i·8 KiB (a hole after each). */
  function filled(): { ioas: Ioas; mirror: PageMirror } {
    const ioas = new Ioas(1);
    const mirror = new PageMirror();
    ioas.mirrors.add(mirror);
    for (let i = 0; i < N; i++) mapInto(ioas, BigInt(i) * 2n * PAGE, PAGE, 0x100_0000 + i * 0x1000);
    return { ioas, mirror };
  }

  it('an unmap over more areas than a slice returns a Promise and leaves exactly the areas outside the range', async () => {
    const { ioas, mirror } = filled();
    const from = 7;
    const to = N - 9;
    const r = ioas.unmap(BigInt(from) * 2n * PAGE, BigInt(to - from) * 2n * PAGE - PAGE, 'test');
    expect(r).toBeInstanceOf(Promise);
    // The first slice ran synchronously; the list and the mirror agree already.
    expect(ioas.areas.length).toBeLessThan(N);
    expect(ioas.areas.length).toBeGreaterThan(N - (to - from));
    expect(mirror.pages.size).toBe(ioas.areas.length);
    expect(await r).toBe(BigInt(to - from) * PAGE);
    expect(ioas.areas.map((a) => Number(a.iova / (2n * PAGE)))).toEqual([...Array(N).keys()].filter((i) => i < from || i >= to));
    expect([...mirror.pages.keys()].sort((a, b) => (a < b ? -1 : 1))).toEqual(ioas.areas.map((a) => a.iova));
    // One mirror call per chunk of a slice, not one per area.
    expect(mirror.unmapCalls).toBeLessThan((to - from) / 16);
  });

  it('stops with ENOTCONN when the context closes between slices; what it removed stays removed', async () => {
    const { ioas, mirror } = filled();
    let open = true;
    const r = ioas.unmap(0n, U64_MAX, 'test', () => open);
    expect(r).toBeInstanceOf(Promise);
    open = false;
    const err = await (r as Promise<bigint>).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isVsvaError(err, 'ENOTCONN')).toBe(true);
    expect(ioas.areas.length).toBeGreaterThan(0);
    expect(ioas.areas.length).toBeLessThan(N);
    expect(mirror.pages.size).toBe(ioas.areas.length);
  });

  it('an area crossing either end is ENOENT before anything is removed, however many areas the range holds', () => {
    const ioas = new Ioas(1);
    const mirror = new PageMirror();
    ioas.mirrors.add(mirror);
    // Two-page areas at 16 KiB steps: a range starting one page into area 1 crosses it.
    for (let i = 0; i < N; i++) mapInto(ioas, BigInt(i) * 4n * PAGE, 2n * PAGE, 0x100_0000 + i * 0x2000);
    expect(outcome(() => ioas.unmap(5n * PAGE, BigInt(N - 2) * 4n * PAGE, 'test'))).toBe('ENOENT');
    expect(outcome(() => ioas.unmap(4n * PAGE, BigInt(N - 2) * 4n * PAGE - 3n * PAGE, 'test'))).toBe('ENOENT');
    expect(ioas.areas).toHaveLength(N);
    expect(mirror.pages.size).toBe(2 * N);
    expect(mirror.unmapCalls).toBe(0);
  });
});
