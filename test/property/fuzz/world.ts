/**
 * The world the fuzzers run in (docs/reliability.md §5): one in-process host and a well-behaved
 * VT-d VM ("steady") with a bound PASID whose DMA must keep returning its data whatever the
 * fuzzed VM does. `check` returns every broken invariant (empty: all hold):
 * - the steady VM's DMA returns the right bytes, and its host state is what it was;
 * - the host snapshot is consistent (snapshotInvariants: refcounts ≥ 0, bound PASIDs bound only
 *   on devices of the VM that holds them, no PASID in two VMs, set use within quota);
 * - with no fuzzed VM left, the host holds nothing but the steady VM.
 */
import { HostServer } from '../../../host/server/index.js';
import { GuestVm } from '../../../guest/vm.js';
import { createVtdModel } from '../../../guest/vtd/index.js';
import { VtdBenchDriver, BENCH_BUFFER_VA } from '../../../src/app/bench/vtd-bench-driver.js';
import { durableState, snapshotInvariants, vmIn } from '../../integration/reliability/helpers.js';
import { waitFor } from '../../support/wait.js';

export const STEADY_DATA = 'steady VM data, never touched by the fuzzer';

export interface FuzzWorld {
  host: HostServer;
  steady: GuestVm;
  steadyPasid: number;
  steadyState: unknown;
  /** Broken invariants (empty when all hold). `alone`: no other VM should be left on the host. */
  check(alone: boolean): Promise<string[]>;
  close(): Promise<void>;
}

export async function makeWorld(): Promise<FuzzWorld> {
  const host = new HostServer({ graceMs: 0, pageRequestTimeoutMs: 30 });
  const steady = await GuestVm.start({ connect: host.connector(), name: 'steady', viommu: 'vtd', memory: 4 << 20, ramBacking: 'inproc' }, (ctx) => createVtdModel(ctx));
  const drv = await VtdBenchDriver.create(steady, { bufferBytes: 4096 });
  const steadyPasid = await drv.allocPasid();
  await drv.bindPasid(steadyPasid);
  await drv.process.write(BENCH_BUFFER_VA, new TextEncoder().encode(STEADY_DATA));
  const steadyState = durableState(vmIn(host.snapshot(), 'steady'));
  const available = host.snapshot().capacity.available;
  return {
    host,
    steady,
    steadyPasid,
    steadyState,
    async check(alone: boolean): Promise<string[]> {
      const errs: string[] = [];
      const r = await steady.dma('00:03.0', { pasid: steadyPasid, addr: BENCH_BUFFER_VA, length: STEADY_DATA.length });
      if (!r.ok || new TextDecoder().decode(r.data) !== STEADY_DATA) errs.push(`steady VM DMA: ${JSON.stringify(r)}`);
      if (alone) {
        try {
          await waitFor(() => host.snapshot().vms.length === 1, { timeoutMs: 2000, what: 'fuzzed VMs released' });
        } catch (e) {
          errs.push(String(e));
        }
      }
      const s = host.snapshot();
      errs.push(...snapshotInvariants(s));
      if (JSON.stringify(durableState(vmIn(s, 'steady'))) !== JSON.stringify(steadyState)) errs.push('steady VM host state changed');
      if (alone && s.capacity.available !== available) errs.push(`capacity ${s.capacity.available} available, expected ${available}`);
      return errs;
    },
    async close(): Promise<void> {
      await steady.close();
      await host.close();
    },
  };
}

/**
 * One fuzzed VM's run: `body` drives the VM and pushes every broken invariant it sees; the VM is
 * then closed whatever happened and the world checked (nothing left behind). Every error found.
 */
export async function fuzzVm(world: FuzzWorld, vm: GuestVm, body: (errs: string[]) => Promise<void>): Promise<string[]> {
  const errs: string[] = [];
  try {
    await body(errs);
  } finally {
    await vm.close();
  }
  errs.push(...(await world.check(true)));
  return errs;
}

/** Error codes a host may legitimately answer a fuzzed request with: anything but a bug's. */
export function badCode(e: unknown): string | null {
  const code = (e as { code?: string }).code;
  if (code === undefined) return `non-errno exception: ${String(e)}`;
  return code === 'EIO' || code === 'EPROTO' || code === 'ETIMEDOUT' ? `${code}: ${(e as Error).message}` : null;
}
