import { describe, expect, it } from 'vitest';
import { decode, encode } from '../../../../src/vtd/layout.js';
import {
  FL_PTE,
  PAGE_SIZE,
  PAGE_SIZES,
  SL_PTE,
  flPresent,
  flPteLayout,
  flReservedMask,
  isCanonical,
  leafAddrMask,
  levelIndex,
  levelShift,
  slPresent,
  slPteLayout,
  slReservedMask,
} from '../../../../src/vtd/page-table.js';

describe('page-table levels and strides', () => {
  it('gives 12 + 9·(level − 1) shifts and 9-bit indices', () => {
    expect([1, 2, 3, 4, 5].map(levelShift)).toEqual([12, 21, 30, 39, 48]);
    const addr = (3n << 48n) | (5n << 39n) | (7n << 30n) | (9n << 21n) | (11n << 12n) | 0x123n;
    expect([5, 4, 3, 2, 1].map((l) => levelIndex(addr, l))).toEqual([3, 5, 7, 9, 11]);
    expect(levelIndex(Number((5n << 39n) | (9n << 21n)), 4)).toBe(5);
    expect(levelIndex(Number((5n << 39n) | (9n << 21n)), 2)).toBe(9);
  });

  it('checks canonical addresses for 48- and 57-bit first-level tables', () => {
    expect(isCanonical(0x00007fffffffffffn, 48)).toBe(true);
    expect(isCanonical(0xffff800000000000n, 48)).toBe(true);
    expect(isCanonical(0x0000800000000000n, 48)).toBe(false);
    expect(isCanonical(0x0000800000000000n, 57)).toBe(true);
  });

  it('masks leaf addresses per page size', () => {
    expect(leafAddrMask('2M')).toBe(0x000fffffffe00000n);
    expect(leafAddrMask('1G')).toBe(0x000fffffc0000000n);
  });
});

describe('first-level PTE', () => {
  it('encodes the x86-64 bits', () => {
    const [w] = encode(FL_PTE, { P: 1, RW: 1, US: 1, A: 1, D: 1, ADDR: 0x12345n, XD: 1 });
    expect(w).toBe(0x8000000012345067n);
    expect(flPresent(w!)).toBe(true);
    expect(flPresent(0x8000000012345066n)).toBe(false);
  });

  it('has QEMU reserved masks as functions of HAW', () => {
    expect(flReservedMask(1, false, 48)).toBe(0x000f000000000000n);
    expect(flReservedMask(3, false, 48)).toBe(0x000f000000000000n);
    expect(flReservedMask(4, false, 48)).toBe(0x000f000000000080n);
    expect(flReservedMask(5, false, 48)).toBe(0x000f000000000080n);
    expect(flReservedMask(2, true, 48)).toBe(0x000f0000001fe000n);
    expect(flReservedMask(3, true, 48)).toBe(0x000f00003fffe000n);
    expect(flReservedMask(1, false, 39)).toBe(0x000fff8000000000n);
  });

  it('flags a PS bit in a PML4E and an address above HAW', () => {
    const d = decode(flPteLayout(4, false, 48), [0x0001000000001083n]);
    expect(d.reserved).toEqual([{ word: 0, bits: 0x0001000000000080n }]);
    expect(decode(flPteLayout(2, true, 48), [0x00000000002000e3n]).reserved).toEqual([]);
    expect(decode(flPteLayout(2, true, 48), [0x00000000002010e3n]).reserved).toEqual([]); // bit 12 = PAT
    expect(decode(flPteLayout(2, true, 48), [0x00000000002020e3n]).reserved).toEqual([{ word: 0, bits: 0x2000n }]);
  });
});

describe('second-level PTE', () => {
  it('is present when R or W is set', () => {
    expect(slPresent(1n)).toBe(true);
    expect(slPresent(2n)).toBe(true);
    expect(slPresent(4n)).toBe(false);
    expect(encode(SL_PTE, { R: 1, W: 1, PS: 1, ADDR: 0x40000n })).toEqual([0x40000083n]);
  });

  it('has QEMU reserved masks, with SNP freed in scalable mode', () => {
    expect(slReservedMask(1, false, 48)).toBe(0x400f000000000000n);
    expect(slReservedMask(1, false, 48, true)).toBe(0x400f000000000800n);
    expect(slReservedMask(4, false, 48)).toBe(0x400f000000000080n);
    expect(slReservedMask(4, false, 48, true)).toBe(0x400f000000000880n);
    expect(slReservedMask(2, true, 48, true)).toBe(0x400f0000001ff800n);
    expect(slReservedMask(3, true, 48, true)).toBe(0x400f00003ffff800n);
    expect(decode(slPteLayout(1, false, 48), [0x803n]).reserved).toEqual([]);
    expect(decode(slPteLayout(1, false, 48, true), [0x803n]).reserved).toEqual([{ word: 0, bits: 0x800n }]);
  });
});

describe('base page', () => {
  it('PAGE_SIZE is the 4 KiB base page as a bigint, equal to the 4K entry of PAGE_SIZES', () => {
    expect(PAGE_SIZE).toBe(4096n);
    expect(PAGE_SIZE).toBe(BigInt(PAGE_SIZES['4K'].bytes));
    expect(PAGE_SIZE).toBe(1n << BigInt(levelShift(1)));
  });
});
