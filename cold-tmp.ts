import { InProcessBacking } from './src/memory/backing.js';
import { encode } from './src/vtd/layout.js';
import { FL_PTE, levelIndex } from './src/vtd/page-table.js';
import { HostMemory } from './host/memory/host-memory.js';
import { HostIommu } from './host/iommu/index.js';
const mem = new HostMemory(); const ram = new InProcessBacking(16<<20); mem.addRegion('g', 0x40000000, ram);
const iommu = new HostIommu({ memory: mem }); const vm = iommu.allocDomain();
for (let g = 0; g < 16<<20; g += 4096) iommu.map(vm, g, 0x40000000 + g, 4096, { read: true, write: true });
iommu.addDevice({ rid: 1 });
let next = 0x101000;
const mapFl = (gva: number, gpa: number) => { let tbl = 0x100000; for (let l = 4; l > 1; l--) { const at = tbl + levelIndex(gva, l) * 8; const e = ram.readU64(at); if ((e & 1n) === 0n) { const t = next; next += 4096; ram.writeU64(at, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(t) >> 12n })[0]!); tbl = t; } else tbl = Number(e & 0xffffffffff000n); } ram.writeU64(tbl + levelIndex(gva, 1) * 8, encode(FL_PTE, { P: 1, RW: 1, US: 1, ADDR: BigInt(gpa) >> 12n })[0]!); };
for (let i = 0; i < 1024; i++) mapFl(0x40000000 + i * 4096, 0x800000 + i * 4096);
iommu.bindPgtablePasid(1, 7, vm, { flptr: 0x100000n });
const eng = iommu.engine; const did = vm.did;
const W = 300000;
for (let rep = 0; rep < 5; rep++) {
  let t0 = process.hrtime.bigint(); let acc = 0;
  for (let i = 0; i < W; i++) { iommu.invalidateIotlbGlobal(); acc += eng.translate(1, 7, 0x40000000 + (i & 1023) * 4096, 0); }
  const a = Number(process.hrtime.bigint() - t0) / W;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < W; i++) { iommu.invalidatePasidIotlb(did, 7); acc += eng.translate(1, 7, 0x40000000 + (i & 1023) * 4096, 0); }
  const b = Number(process.hrtime.bigint() - t0) / W;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < W; i++) { iommu.invalidateIotlbGlobal(); }
  const c = Number(process.hrtime.bigint() - t0) / W;
  console.log('global+walk', a.toFixed(0), 'ns; piotlb+walk', b.toFixed(0), 'ns; flush only', c.toFixed(0), acc > 0);
}
import { PhysPort } from './host/iommu/phys-port.js';
const port = new PhysPort(mem);
const pool0 = mem.listRegions().find(r => r.name.startsWith('iommu-pt'))!.hpa;
for (let rep = 0; rep < 3; rep++) {
  const t0 = process.hrtime.bigint(); let acc = 0;
  for (let i = 0; i < W; i++) { port.begin(); for (let k = 0; k < 24; k++) { port.load((k % 5 === 4 ? 0x40000000 : pool0) + ((i * 8 + k * 64) & 4095)); acc += port.lo; } }
  console.log('24 loads', (Number(process.hrtime.bigint() - t0) / W).toFixed(0), 'ns', acc > 0);
}
iommu.attachDevice(1, vm);
for (let rep = 0; rep < 4; rep++) {
  let t0 = process.hrtime.bigint(); let acc = 0;
  for (let i = 0; i < W; i++) { iommu.invalidateIotlbGlobal(); acc += eng.translate(1, -1, 0x800000 + (i & 1023) * 4096, 0); }
  const a = Number(process.hrtime.bigint() - t0) / W;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < W; i++) { acc += eng.translate(1, -1, 0x800000 + (i & 1023) * 4096, 0); }
  const b = Number(process.hrtime.bigint() - t0) / W;
  console.log('SL-only cold', a.toFixed(0), 'ns; hot', b.toFixed(1), acc>0);
}
