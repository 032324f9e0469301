/**
 * Fuzzer: the virtual VT-d (docs/reliability.md §5). A fuzzed VT-d VM brought up by the bench
 * driver (root, context and PASID tables, a 256-bit invalidation queue, two bound PASIDs) gets a
 * random mix of: random bytes over its tables and queue (context / PASID entries, PASID
 * directory, first-level tables), descriptors of every type with random fields written into the
 * queue and IQT moved, random register writes anywhere in the window, VCMD commands, and DMA.
 * Invariants: a register write never rejects (a guest access cannot fail), DMA either completes
 * or fails with a host errno that is not a bug's, the model's shadow and the host agree on
 * every nested binding of the VM, and the world's invariants hold (world.ts).
 */
import fc from 'fast-check';
import { GuestVm } from '../../../guest/vm.js';
import { createVtdModel, type VtdModel } from '../../../guest/vtd/index.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../../src/app/bench/vtd-bench-driver.js';
import { DMAR, VCMD_REG_OFFSETS, iqRegFromIndex } from '../../../src/vtd/registers.js';
import { encodeVcmd, VCMD_CMD } from '../../../src/vtd/vcmd.js';
import { wordsToBytes } from '../../../src/vtd/layout.js';
import { formatBdf } from '../../../src/pci.js';
import { vmIn } from '../../integration/reliability/helpers.js';
import { badCode, type FuzzWorld, fuzzVm } from './world.js';

/** Where the bench driver's tables and queue live (its allocator starts at 1 MiB). */
const TABLES = 0x10_0000;
const TABLES_END = 0x10_0000 + 0x6_0000;

type Cmd =
  | { kind: 'ram'; off: number; bytes: Uint8Array }
  | { kind: 'desc'; words: bigint[] }
  | { kind: 'reg'; off: number; size: 4 | 8; value: bigint }
  | { kind: 'vcmd'; cmd: number; pasid: number }
  | { kind: 'dma'; pasid: number | undefined; addr: bigint; write: boolean };

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const smallPasid = fc.integer({ min: 0, max: 8 });

export const vtdCommands = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: fc.record({ off: fc.integer({ min: TABLES, max: TABLES_END - 64 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }).map((r) => ({ kind: 'ram' as const, ...r })) },
    {
      weight: 4,
      arbitrary: fc.tuple(fc.integer({ min: 0, max: 15 }), u64, u64, u64, u64, smallPasid, fc.boolean()).map(([type, a, b, c, d, pasid, keep]) => {
        // Low nibble = type; often keep PASID-ish fields small so they hit live state.
        let w0 = (a & ~0xfn) | BigInt(type);
        if (keep) w0 = (w0 & ~(0xfffffn << 32n)) | (BigInt(pasid) << 32n);
        return { kind: 'desc' as const, words: [w0, b, keep ? 0n : c, keep ? 0n : d] };
      }),
    },
    { weight: 2, arbitrary: fc.record({ q: fc.integer({ min: 0, max: 0x1ff }), size: fc.constantFrom(4 as const, 8 as const), value: u64 }).map(({ q, size, value }) => ({ kind: 'reg' as const, off: q * 8, size, value: size === 4 ? value & 0xffff_ffffn : value })) },
    { weight: 1, arbitrary: fc.record({ cmd: fc.integer({ min: 0, max: 3 }), pasid: smallPasid }).map((r) => ({ kind: 'vcmd' as const, ...r })) },
    { weight: 2, arbitrary: fc.record({ pasid: fc.option(smallPasid, { nil: undefined }), addr: fc.constantFrom(BENCH_BUFFER_VA, 0n, 0x1000n, 0x7fff_f000n), write: fc.boolean() }).map((r) => ({ kind: 'dma' as const, ...r })) },
  ),
  { maxLength: 25 },
);

let seq = 0;

export async function runVtd(world: FuzzWorld, cmds: Cmd[], uapi: 'vfio-sva' | 'iommufd' = 'vfio-sva'): Promise<string[]> {
  const vm = await GuestVm.start({ connect: world.host.connector(), name: `fzvtd${seq++}`, viommu: 'vtd', memory: 4 << 20, ramBacking: 'inproc', pasidQuota: 8, uapi }, (ctx) => createVtdModel(ctx));
  const model = vm.viommu as VtdModel;
  return fuzzVm(world, vm, async (errs) => {
    const drv = await VtdBenchDriver.create(vm, { bufferBytes: 4096 });
    for (let i = 0; i < 2; i++) await drv.bindPasid(await drv.allocPasid());
    const iqa = await vm.readq(DMAR.IQA);
    let tail = 0;
    for (const c of cmds) {
      try {
        switch (c.kind) {
          case 'ram':
            await vm.memwrite(BigInt(c.off), c.bytes);
            break;
          case 'desc': {
            // Into the queue the driver set up (wherever IQA points now, it is the guest's problem).
            const slot = Number(iqa & 0xffff_ffff_f000n) + tail * 32;
            await vm.memwrite(BigInt(slot), wordsToBytes(c.words));
            tail = (tail + 1) % 64;
            await vm.writeq(DMAR.IQT, iqRegFromIndex(tail, true));
            break;
          }
          case 'reg':
            if (c.size === 4) await vm.writel(c.off, Number(c.value));
            else await vm.writeq(c.off, c.value);
            break;
          case 'vcmd':
            await vm.writeq(VCMD_REG_OFFSETS['3.1'].VCMD, encodeVcmd('3.1', c.cmd, c.pasid));
            await model.vcmd?.idle();
            break;
          case 'dma':
            try {
              await vm.dma('00:03.0', { ...(c.pasid !== undefined ? { pasid: c.pasid } : {}), addr: c.addr, ...(c.write ? { data: new Uint8Array(8).fill(0xa5) } : { length: 8 }) });
            } catch (e) {
              const bad = badCode(e);
              if (bad) errs.push(`dma ${JSON.stringify({ ...c, addr: String(c.addr) })}: ${bad}`);
            }
            break;
        }
      } catch (e) {
        errs.push(`${c.kind} rejected: ${String(e)}`);
      }
    }
    await model.vcmd?.idle();
    await model.flush();
    errs.push(...shadowMatchesHost(world, vm, model));
  });
}

/** Every nested binding the model's shadow says it made is on the host, and nothing else is. */
function shadowMatchesHost(world: FuzzWorld, vm: GuestVm, model: VtdModel): string[] {
  const want = model
    .shadow()
    .filter((e) => e.pasid !== null && e.binding.kind === 'nested')
    .map((e) => `${formatBdf(e.rid)}:${e.pasid}:0x${(e.binding as { flptr: bigint }).flptr.toString(16)}`)
    .sort();
  const me = vmIn(world.host.snapshot(), vm.name);
  const fd = me?.iommufd;
  // VFIO SVA: the bindings of the VM's PASID rows; iommufd: the nested HWPTs attached at PASIDs.
  const have = (fd === undefined
    ? (me?.pasids ?? []).flatMap((p) => p.bindings.filter((b) => b.pgtt === 'nested').map((b) => `${b.bdf}:${p.hpasid}:${b.flptr}`))
    : fd.devices.flatMap((d) => d.pasids.flatMap((a) => fd.hwpts.filter((h) => h.id === a.hwpt && h.kind === 'nested').map((h) => `${d.bdf}:${a.pasid}:${h.flptr}`)))
  ).sort();
  return JSON.stringify(want) === JSON.stringify(have) ? [] : [`shadow ${JSON.stringify(want)} != host ${JSON.stringify(have)}`];
}
