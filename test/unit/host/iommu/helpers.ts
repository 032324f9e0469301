/**
 * Test fixtures for the host IOMMU: a host memory with one guest-RAM region, and a builder of
 * x86-64 first-level page tables inside that guest RAM (written with the src/vtd layouts).
 */
import { afterEach } from 'vitest';
import { InProcessBacking } from '../../../../src/memory/backing.js';
import { encode } from '../../../../src/vtd/layout.js';
import { FL_PTE, PAGE_SIZES, levelIndex, type PageSize } from '../../../../src/vtd/page-table.js';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { HostIommu, type HostIommuOptions } from '../../../../host/iommu/index.js';

export const GUEST_HPA = 0x4000_0000; // guest RAM lives at HPA 1 GiB
export const GUEST_SIZE = 64 * 1024 * 1024;

export interface Fixture {
  mem: HostMemory;
  ram: InProcessBacking;
  iommu: HostIommu;
  dispose(): void;
}

export function makeFixture(opts: Partial<HostIommuOptions> = {}, ramSize = GUEST_SIZE): Fixture {
  const mem = new HostMemory();
  const ram = new InProcessBacking(ramSize);
  mem.addRegion('guest-ram', GUEST_HPA, ram);
  const iommu = new HostIommu({ memory: mem, ...opts });
  return {
    mem,
    ram,
    iommu,
    dispose() {
      iommu.dispose();
      ram.close();
    },
  };
}

/**
 * The fixtures of a test file, each disposed after the test that made it: one instance at the
 * top of the file, `make()` in a test (or the world it builds), `current` for the one made last.
 */
export class FixturePerTest {
  private fx: Fixture | undefined;

  constructor() {
    afterEach(() => {
      this.fx?.dispose();
      this.fx = undefined;
    });
  }

  make(opts: Partial<HostIommuOptions> = {}, ramSize = GUEST_SIZE): Fixture {
    this.fx = makeFixture(opts, ramSize);
    return this.fx;
  }

  get current(): Fixture {
    if (this.fx === undefined) throw new Error('no fixture made in this test');
    return this.fx;
  }
}

export interface FlFlags {
  rw?: boolean;
  us?: boolean;
  xd?: boolean;
  a?: boolean;
  d?: boolean;
}

/**
 * An x86-64 first-level table in guest RAM. Table pages come from a bump allocator at
 * `tableBase` (a GPA); the root is the first page.
 */
export class FlBuilder {
  readonly root: bigint;
  private next: bigint;

  constructor(
    private readonly ram: InProcessBacking,
    readonly levels: 4 | 5,
    tableBase: bigint,
    /** Where a GPA lives in the RAM backing (the second-level mapping); identity by default. */
    private readonly toOffset: (gpa: bigint) => number = (gpa) => Number(gpa),
  ) {
    this.root = tableBase;
    this.next = tableBase + 4096n;
    this.zero(this.root);
  }

  readU64(gpa: bigint): bigint {
    return this.ram.readU64(this.toOffset(gpa));
  }
  writeU64(gpa: bigint, v: bigint): void {
    this.ram.writeU64(this.toOffset(gpa), v);
  }

  /** GPA of the entry for `gva` at `level`, or undefined when a table on the way is missing. */
  entryGpa(gva: bigint, level: number): bigint | undefined {
    let tbl = this.root;
    for (let l = this.levels; l > level; l--) {
      const e = this.readU64(tbl + BigInt(levelIndex(gva, l) * 8));
      if ((e & 1n) === 0n || (l <= 3 && (e & 0x80n) !== 0n)) return undefined;
      tbl = e & 0x000ffffffffff000n;
    }
    return tbl + BigInt(levelIndex(gva, level) * 8);
  }

  /** Map one page of `size` at `gva` → `gpa`; intermediate tables are user/RW/executable. */
  map(gva: bigint, gpa: bigint, size: PageSize = '4K', f: FlFlags = {}): void {
    const leafLevel = PAGE_SIZES[size].level;
    let tbl = this.root;
    for (let l = this.levels; l > leafLevel; l--) {
      const at = tbl + BigInt(levelIndex(gva, l) * 8);
      const e = this.readU64(at);
      if ((e & 1n) === 0n) {
        const t = this.allocTable();
        this.writeU64(at, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: t >> 12n })[0]!);
        tbl = t;
      } else {
        tbl = e & 0x000ffffffffff000n;
      }
    }
    const at = tbl + BigInt(levelIndex(gva, leafLevel) * 8);
    this.writeU64(at, this.leaf(gpa, size, f));
  }

  /** Encoded leaf entry. */
  leaf(gpa: bigint, size: PageSize, f: FlFlags = {}): bigint {
    return encode(FL_PTE, {
      P: 1,
      RW: f.rw ?? true,
      US: f.us ?? true,
      A: f.a ?? false,
      D: f.d ?? false,
      PS: size !== '4K',
      ADDR: gpa >> 12n,
      XD: f.xd ?? false,
    })[0]!;
  }

  /** Clear the leaf for `gva` at `level`. */
  unmap(gva: bigint, level = 1): void {
    const at = this.entryGpa(gva, level);
    if (at !== undefined) this.writeU64(at, 0n);
  }

  allocTable(): bigint {
    const t = this.next;
    this.next += 4096n;
    this.zero(t);
    return t;
  }

  private zero(gpa: bigint): void {
    const o = this.toOffset(gpa);
    this.ram.buffer.fill(0, o, o + 4096);
  }
}
