/**
 * Fuzzer: the virtio-iommu (docs/reliability.md §5). A fuzzed virtio VM with the Linux-like
 * driver probed gets a random mix of well-formed requests with random ids (ATTACH, DETACH, MAP,
 * UNMAP, ATTACH_TABLE, DETACH_TABLE), raw requests of random bytes and buffer sizes, DMA, and
 * at the end random bytes over its virtqueues and random register writes (which may break the
 * device into NEEDS_RESET — allowed). Invariants: a register write never rejects, every guest
 * domain's host domain holds exactly its R/W mappings, every bound guest PASID is the SPID of
 * its host PASID, and the world's invariants hold (world.ts).
 */
import fc from 'fast-check';
import { formatBdf } from '../../../src/pci.js';
import { IommufdUapi } from '../../../guest/uapi/index.js';
import type { IommufdObjectsSnapshot } from '../../../src/api/types.js';
import { GuestVm } from '../../../guest/vm.js';
import { createVirtioIommuModel, type VirtioIommuModel, MapFlag, VirtioMmio } from '../../../guest/virtio/index.js';
import { VirtioIommuDriver } from '../../../guest/driver/virtio-iommu-driver.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { vmIn } from '../../integration/reliability/helpers.js';
import { badCode, type FuzzWorld, fuzzVm } from './world.js';

const MEM = 4 << 20;
const EPS = [0x18, 0x20, 0x99];

type Cmd =
  | { kind: 'attach'; domain: number; ep: number; bypass: boolean }
  | { kind: 'detach'; domain: number; ep: number }
  | { kind: 'map'; domain: number; page: number; pages: number; phys: number; flags: number }
  | { kind: 'unmap'; domain: number; page: number; pages: number }
  | { kind: 'table'; domain: number; ep: number; pasid: number; pgd: number; pri: boolean }
  | { kind: 'untable'; domain: number; ep: number; pasid: number }
  | { kind: 'raw'; bytes: Uint8Array; writable: number }
  | { kind: 'dma'; ep: number; pasid: number | undefined; page: number };

type Tail = { kind: 'ring'; off: number; bytes: Uint8Array } | { kind: 'reg'; off: number; value: number };

const dom = fc.integer({ min: 0, max: 4 });
const ep = fc.constantFrom(...EPS);
const page = fc.integer({ min: 0, max: 16 });

export const virtioCommands = fc.record({
  body: fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('attach' as const), domain: dom, ep, bypass: fc.boolean() }),
      fc.record({ kind: fc.constant('detach' as const), domain: dom, ep }),
      fc.record({ kind: fc.constant('map' as const), domain: dom, page, pages: fc.integer({ min: 1, max: 4 }), phys: fc.integer({ min: 0, max: 1100 }), flags: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('unmap' as const), domain: dom, page, pages: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ kind: fc.constant('table' as const), domain: dom, ep, pasid: fc.integer({ min: 0, max: 6 }), pgd: fc.integer({ min: 0, max: 1100 }), pri: fc.boolean() }),
      fc.record({ kind: fc.constant('untable' as const), domain: dom, ep, pasid: fc.integer({ min: 0, max: 6 }) }),
      fc.record({ kind: fc.constant('raw' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 80 }).map((b) => ((b[0] = (b[0]! % 12) + 1), b)), writable: fc.integer({ min: 0, max: 600 }) }),
      fc.record({ kind: fc.constant('dma' as const), ep, pasid: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }), page }),
    ),
    { maxLength: 25 },
  ),
  tail: fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('ring' as const), off: fc.integer({ min: 0, max: 0x8000 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }),
      fc.record({ kind: fc.constant('reg' as const), off: fc.integer({ min: 0, max: 0x3f }).map((x) => x * 4), value: fc.integer({ min: 0, max: 0xffff_ffff }) }),
    ),
    { maxLength: 8 },
  ),
});

let seq = 0;

export async function runVirtio(world: FuzzWorld, cmds: { body: Cmd[]; tail: Tail[] }, uapi: 'vfio-sva' | 'iommufd' = 'vfio-sva'): Promise<string[]> {
  const vm = await GuestVm.start(
    { connect: world.host.connector(), name: `fzvio${seq++}`, viommu: 'virtio', memory: MEM, ramBacking: 'inproc', pasidQuota: 8, devices: [{ bdf: '00:03.0' }, { bdf: '00:04.0' }], uapi },
    (ctx) => createVirtioIommuModel(ctx),
  );
  const model = vm.viommu as VirtioIommuModel;
  return fuzzVm(world, vm, async (errs) => {
    const alloc = new PageAllocator(vm, { base: BigInt(MEM / 2), size: MEM / 2 });
    const drv = await VirtioIommuDriver.probe(vm, { alloc, timeoutMs: 300 });
    const ringBase = Number(drv.queueLayout(0).desc);
    for (const c of cmds.body) {
      try {
        switch (c.kind) {
          case 'attach': await drv.attach(c.domain, c.ep, { bypass: c.bypass }); break;
          case 'detach': await drv.detach(c.domain, c.ep); break;
          case 'map': await drv.map(c.domain, BigInt(c.page) << 12n, (BigInt(c.page + c.pages) << 12n) - 1n, BigInt(c.phys) << 12n, c.flags & (MapFlag.READ | MapFlag.WRITE | 4)); break;
          case 'unmap': await drv.unmap(c.domain, BigInt(c.page) << 12n, (BigInt(c.page + c.pages) << 12n) - 1n); break;
          case 'table': await drv.attachTable({ domain: c.domain, endpoint: c.ep, pasid: c.pasid, pgd: BigInt(c.pgd) << 12n, addrWidth: 48, pri: c.pri }); break;
          case 'untable': await drv.detachTable(c.domain, c.ep, c.pasid); break;
          case 'raw': await drv.submit(c.bytes, c.writable); break;
          case 'dma':
            try {
              await vm.dma(c.ep === 0x20 ? '00:04.0' : '00:03.0', { ...(c.pasid !== undefined ? { pasid: c.pasid } : {}), addr: BigInt(c.page) << 12n, length: 8 });
            } catch (e) {
              const bad = badCode(e);
              if (bad) errs.push(`dma: ${bad}`);
            }
            break;
        }
      } catch (e) {
        // The driver's own errors (EIO for a request returned unwritten, ETIMEDOUT after a broken
        // ring) are the guest's; a rejected register access would be the model's.
        if (String(e).includes('register')) errs.push(`${c.kind}: ${String(e)}`);
      }
    }
    errs.push(...hostMatchesModel(world, vm, model));
    for (const t of cmds.tail) {
      try {
        if (t.kind === 'ring') await vm.memwrite(BigInt(ringBase + t.off), t.bytes);
        else await vm.writel(t.off, t.value);
        await vm.writel(VirtioMmio.QUEUE_NOTIFY, 0);
      } catch (e) {
        errs.push(`${t.kind} write rejected: ${String(e)}`);
      }
    }
    errs.push(...hostMatchesModel(world, vm, model));
  });
}

/**
 * Host domains hold exactly the model's R/W mappings; bound guest PASIDs are their host PASIDs'
 * SPIDs (VFIO SVA). On iommufd: each domain's IOAS holds them, and each bound guest PASID's host
 * PASID is a live row with a nested HWPT attached at it on every endpoint bound.
 */
function hostMatchesModel(world: FuzzWorld, vm: GuestVm, model: VirtioIommuModel): string[] {
  const errs: string[] = [];
  const me = vmIn(world.host.snapshot(), vm.name) as unknown as { domains: { id: number; mappings: number }[]; pasids: { hpasid: number; gpasid: number | null }[]; iommufd?: IommufdObjectsSnapshot } | undefined;
  if (!me) return [`${vm.name} missing from the snapshot`];
  if (me.iommufd !== undefined && vm.uapi instanceof IommufdUapi) {
    const fd = me.iommufd;
    for (const d of model.device.domains.values()) {
      if (d.bypass) continue;
      const ioas = fd.ioas.find((x) => x.id === (vm.uapi as IommufdUapi).objects.domains.get(d.hostId));
      const want = [...d.mappings].filter((m) => m.flags & (MapFlag.READ | MapFlag.WRITE)).length;
      if (!ioas) errs.push(`guest domain ${d.id}: its IOAS is missing`);
      else if (ioas.areas !== want) errs.push(`guest domain ${d.id}: IOAS has ${ioas.areas} areas, model ${want}`);
    }
    for (const p of model.device.pasid.pasidMap()) {
      if (!me.pasids.some((x) => x.hpasid === p.hpasid)) errs.push(`guest PASID ${p.gpasid} → host ${p.hpasid}: no such host PASID`);
      for (const ep of p.endpoints) {
        const dev = fd.devices.find((x) => x.bdf === formatBdf(ep));
        const a = dev?.pasids.find((x) => x.pasid === p.hpasid);
        if (!a || fd.hwpts.find((h) => h.id === a.hwpt)?.kind !== 'nested') errs.push(`guest PASID ${p.gpasid} on ${formatBdf(ep)}: no nested HWPT at host PASID ${p.hpasid}`);
      }
    }
    return errs;
  }
  for (const d of model.device.domains.values()) {
    if (d.bypass) continue;
    const host = me.domains.find((x) => x.id === d.hostId);
    const want = [...d.mappings].filter((m) => m.flags & (MapFlag.READ | MapFlag.WRITE)).length;
    if (!host) errs.push(`guest domain ${d.id}: host domain ${d.hostId} missing`);
    else if (host.mappings !== want) errs.push(`guest domain ${d.id}: host has ${host.mappings} mappings, model ${want}`);
  }
  for (const p of model.device.pasid.pasidMap()) {
    const h = me.pasids.find((x) => x.hpasid === p.hpasid);
    if (!h || h.gpasid !== p.gpasid) errs.push(`guest PASID ${p.gpasid} → host ${p.hpasid}: host shows ${JSON.stringify(h ?? null)}`);
  }
  return errs;
}
