/**
 * The host side of the shared-RAM benchmark (shared-ram.ts), run as its own process:
 *
 *   node --import tsx src/app/bench/shared-ram-host.ts <ramBytes> <reps> <warm> <walks> <copies>
 *
 * Guest RAM arrives as descriptor 3: the guest's sealed memfd, which this process maps
 * MAP_SHARED exactly as `vsva host` maps a SET_MEM_TABLE descriptor (MappedBacking.fromFd). It
 * places it in a HostMemory region, maps it in a second-level domain, writes a 4-level
 * first-level table into guest RAM, binds it nested, and times on the translation engine:
 * - cold nested walks (IOTLB and paging-structure caches flushed before each translation),
 *   interleaved A/B with IOTLB-hit translations of the same addresses;
 * - 1 MiB DMA copies through nested translation, interleaved A/B with Buffer.copy of the same
 *   bytes inside the mapping.
 * Prints one JSON line of per-repetition rates and exits.
 */
import { MappedBacking } from '../../memory/mapped-backing.js';
import { encode } from '../../vtd/layout.js';
import { FL_PTE, levelIndex } from '../../vtd/page-table.js';
import { HostMemory } from '../../../host/memory/host-memory.js';
import { HostIommu } from '../../../host/iommu/index.js';

const GUEST_HPA = 0x4000_0000;
const RID = 0x0100;
const PASID = 7;
const MiB = 1024 * 1024;

const [ramBytes, reps, warm, walks, copies] = process.argv.slice(2).map(Number) as [number, number, number, number, number];
const ram = MappedBacking.fromFd(3, ramBytes, 0, 'guest RAM (descriptor 3)');
const mem = new HostMemory();
mem.addRegion('guest RAM', GUEST_HPA, ram);
const iommu = new HostIommu({ memory: mem });
const vm = iommu.allocDomain({ name: 'bench-vm' });
for (let gpa = 0; gpa < ramBytes; gpa += 4096) iommu.map(vm, BigInt(gpa), BigInt(GUEST_HPA + gpa), 4096n, { read: true, write: true });
iommu.addDevice({ rid: RID });

// The first-level table, written into guest RAM (GPA 1 MiB and up), as a guest driver would.
const root = 0x100000;
let next = root + 4096;
function mapFl(gva: number, gpa: number): void {
  let tbl = root;
  for (let l = 4; l > 1; l--) {
    const at = tbl + levelIndex(gva, l) * 8;
    const e = ram.readU64(at);
    if ((e & 1n) === 0n) {
      const t = next;
      next += 4096;
      ram.writeU64(at, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(t) >> 12n })[0]!);
      tbl = t;
    } else tbl = Number(e & 0x000ffffffffff000n);
  }
  ram.writeU64(tbl + levelIndex(gva, 1) * 8, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(gpa) >> 12n })[0]!);
}
iommu.bindPgtablePasid(RID, PASID, vm, { flptr: BigInt(root) });

const PAGES = 1024;
const GVA = 0x4000_0000;
for (let i = 0; i < PAGES; i++) mapFl(GVA + i * 4096, 0x800000 + i * 4096);
for (let i = 0; i < 256; i++) {
  mapFl(0x5000_0000 + i * 4096, 0xc00000 + i * 4096);
  mapFl(0x6000_0000 + i * 4096, 0xe00000 + i * 4096);
}
const addrs = new Float64Array(PAGES * 4);
for (let i = 0; i < addrs.length; i++) addrs[i] = GVA + (i % PAGES) * 4096 + ((i * 40) % 4096);
const mask = addrs.length - 1;
const eng = iommu.engine;
let sink = 0;

function timed(ops: number, fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return (ops * 1e9) / Number(process.hrtime.bigint() - t0);
}

const coldRun = (): void => {
  let acc = 0;
  for (let i = 0; i < walks; i++) {
    iommu.invalidateIotlbGlobal();
    acc += eng.translate(RID, PASID, addrs[i & mask]!, 0);
  }
  sink += acc;
};
const hitRun = (): void => {
  let acc = 0;
  for (let i = 0; i < walks; i++) acc += eng.translate(RID, PASID, addrs[i & mask]!, 0);
  sink += acc;
};
const src = { rid: RID, pasid: PASID, addr: 0x5000_0000n };
const dst = { rid: RID, pasid: PASID, addr: 0x6000_0000n };
const dmaRun = (): void => {
  for (let i = 0; i < copies; i++) {
    const r = iommu.dmaCopy(src, dst, MiB);
    if (!r.ok) throw new Error(`bench DMA copy faulted: ${r.fault.text}`);
  }
};
const bufSrc = ram.buffer.subarray(0xc00000, 0xc00000 + MiB);
const bufRun = (): void => {
  for (let i = 0; i < copies; i++) bufSrc.copy(ram.buffer, 0xe00000, 0, MiB);
};

const out = { cold: [] as number[], hit: [] as number[], dma: [] as number[], buf: [] as number[], sink: 0 };
for (let r = 0; r < warm + reps; r++) {
  const c = timed(walks, coldRun);
  const h = timed(walks, hitRun);
  const d = timed(copies * MiB, dmaRun) / 1e6;
  const b = timed(copies * MiB, bufRun) / 1e6;
  if (r < warm) continue;
  out.cold.push(c);
  out.hit.push(h);
  out.dma.push(d);
  out.buf.push(b);
}
out.sink = sink & 1;
process.stdout.write(`${JSON.stringify(out)}\n`);
iommu.dispose();
ram.close();
