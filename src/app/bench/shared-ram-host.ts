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
 *   interleaved A/B with IOTLB-hit translations of the same addresses (and their rate in CPU
 *   time of the process, for the figure's notes);
 * - 1 MiB DMA copies through nested translation, interleaved A/B with Buffer.copy of the same
 *   bytes inside the mapping.
 * Prints one JSON line of per-repetition rates and exits.
 */
import { MappedBacking } from '../../memory/mapped-backing.js';
import { buildNestedFixture, coldWalks, COPY_DST_GPA, COPY_DST_GVA, COPY_SRC_GPA, COPY_SRC_GVA, mapCopyPages, mapHitPages, PASID, RID } from './nested-fixture.js';

const MiB = 1024 * 1024;

const [ramBytes, reps, warm, walks, copies] = process.argv.slice(2).map(Number) as [number, number, number, number, number];
const ram = MappedBacking.fromFd(3, ramBytes, 0, 'guest RAM (descriptor 3)');
// The first-level table is written into guest RAM (GPA 1 MiB and up), as a guest driver would.
const fx = buildNestedFixture(ram, 'guest RAM');
const { iommu } = fx;
const addrs = mapHitPages(fx);
mapCopyPages(fx);
const mask = addrs.length - 1;
const eng = iommu.engine;
let sink = 0;

/** CPU-time rate of the last `timed` call (process.cpuUsage), beside its wall-clock rate. */
let lastCpuRate = 0;

function timed(ops: number, fn: () => void): number {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  fn();
  const ns = Number(process.hrtime.bigint() - t0);
  const c = process.cpuUsage(c0);
  lastCpuRate = (ops * 1e6) / Math.max(1, c.user + c.system);
  return (ops * 1e9) / ns;
}

const coldRun = (): void => {
  sink += coldWalks(fx, addrs, walks);
};
const hitRun = (): void => {
  let acc = 0;
  for (let i = 0; i < walks; i++) acc += eng.translate(RID, PASID, addrs[i & mask]!, 0);
  sink += acc;
};
const src = { rid: RID, pasid: PASID, addr: BigInt(COPY_SRC_GVA) };
const dst = { rid: RID, pasid: PASID, addr: BigInt(COPY_DST_GVA) };
const dmaRun = (): void => {
  for (let i = 0; i < copies; i++) {
    const r = iommu.dmaCopy(src, dst, MiB);
    if (!r.ok) throw new Error(`bench DMA copy faulted: ${r.fault.text}`);
  }
};
const bufSrc = ram.buffer.subarray(COPY_SRC_GPA, COPY_SRC_GPA + MiB);
const bufRun = (): void => {
  for (let i = 0; i < copies; i++) bufSrc.copy(ram.buffer, COPY_DST_GPA, 0, MiB);
};

const out = { cold: [] as number[], coldCpu: [] as number[], hit: [] as number[], dma: [] as number[], buf: [] as number[], sink: 0 };
for (let r = 0; r < warm + reps; r++) {
  const c = timed(walks, coldRun);
  const cCpu = lastCpuRate;
  const h = timed(walks, hitRun);
  const d = timed(copies * MiB, dmaRun) / 1e6;
  const b = timed(copies * MiB, bufRun) / 1e6;
  if (r < warm) continue;
  out.cold.push(c);
  out.coldCpu.push(cCpu);
  out.hit.push(h);
  out.dma.push(d);
  out.buf.push(b);
}
out.sink = sink & 1;
process.stdout.write(`${JSON.stringify(out)}\n`);
iommu.dispose();
ram.close();
