/**
 * One VM of the fairness benchmark (src/app/bench/fairness.ts) in a process of its own, as every
 * VM is its own process (QEMU) in a deployment: the guest-side work of the VM that unmaps 65,535
 * mappings or is released (building and sending its requests, closing its guest half, its
 * garbage collection) then runs beside the bystander VM, not in its event loop.
 *
 *   node --expose-gc --import tsx scripts/fairness-vm.ts <socket>
 *
 * Prints "ready", then reads commands, one a line on stdin, and answers each with one line on
 * stdout: `ok [value …]` or `error <message>` (logs go to stderr, src/log.ts):
 *
 *   setup <name> <pasidQuota> <ramBytes>   start the VM (virtual VT-d) against the host at <socket>
 *   domain                                 DOMAIN_ALLOC → ok <domain>
 *   single <domain> <reps>                 reps × (DMA_MAP of one 4 KiB page, timed DMA_UNMAP of it) → ok <ms> …
 *   map <domain> <n>                       n 4 KiB mappings (pipelined DMA_MAP), then this process's garbage collection → ok
 *   unmap <domain> <n>                     one DMA_UNMAP over those n mappings → ok <round trip ms> <bytes unmapped>
 *   bind <k>                               k × (VCMD ALLOC_PASID + PASID bind), then garbage collection → ok
 *   drop                                   the VM's connection closes with nothing unbound first (as when
 *                                          a VM process dies) → ok; later commands fail
 *   vcmd <n>                               n × (timed VCMD ALLOC_PASID, untimed FREE_PASID) → ok <µs> …
 *   loop start                             VCMD ALLOC_PASID / FREE_PASID pairs back to back until `loop stop`,
 *                                          each allocation timed → ok (at once; the loop runs on)
 *   loop stop                              → ok <end>:<µs> … (end: CLOCK_MONOTONIC in ms, as
 *                                          process.hrtime.bigint() / 1e6, comparable across processes)
 *
 * When stdin ends, the VM is closed (after a drop: nothing more; there is no host to tell) and
 * the process exits 0.
 */
import readline from 'node:readline';
import { startGuest, type StartedGuest } from '../src/app/harness/start-guest.js';
import { VtdBenchDriver } from '../src/app/bench/vtd-bench-driver.js';

const PAGE = 0x1000n;
/** Mapping i sits at IOVA i·8 KiB (a hole after each, so none merge), on one of 256 guest pages. */
const iovaOf = (i: number) => BigInt(i) * 2n * PAGE;
/** DMA_MAPs in flight while filling a domain. */
const MAP_WINDOW = 256;

const socket = process.argv[2];
if (!socket) throw new Error('usage: fairness-vm.ts <socket>');

let vm: StartedGuest | null = null;
let driver: VtdBenchDriver | null = null;
let dropped = false;
/** The running `loop start` loop: its samples (end ms, µs) and how to stop it. */
let loop: { samples: string[]; stop: () => Promise<void> } | null = null;

/** CLOCK_MONOTONIC in ms (the clock the bench's windows are taken with). */
const monoMs = (): number => Number(process.hrtime.bigint()) / 1e6;

async function vmDriver(): Promise<VtdBenchDriver> {
  const g = started(); // throws once dropped, driver or not
  driver ??= await VtdBenchDriver.create(g, { bufferBytes: 4096 });
  return driver;
}

/** One timed VCMD allocation (µs, and when it ended) followed by an untimed free. */
async function vcmdRoundTrip(drv: VtdBenchDriver): Promise<{ end: number; us: number }> {
  const a = monoMs();
  const pasid = await drv.allocPasid();
  const end = monoMs();
  await drv.freePasid(pasid);
  return { end, us: (end - a) * 1000 };
}

function started(): StartedGuest {
  if (dropped) throw new Error('the VM was dropped');
  if (!vm) throw new Error('no VM: send setup first');
  return vm;
}

/** A non-negative integer argument, or an error naming it. */
function count(arg: string | undefined, what: string): number {
  const n = Number(arg);
  if (arg === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`${what} must be a non-negative integer, not '${arg ?? ''}'`);
  return n;
}

function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

async function mapMany(domain: number, n: number): Promise<void> {
  const fe = started().client;
  let inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    inFlight.push(fe.call('DMA_MAP', { domain, flags: 3, iova: iovaOf(i), gpa: 0x80_0000n + BigInt(i % 256) * PAGE, size: PAGE }));
    if (inFlight.length >= MAP_WINDOW) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
}

/** Run one command; returns the values of its `ok` line. */
async function run(words: string[]): Promise<string[]> {
  const [cmd, ...args] = words;
  switch (cmd) {
    case 'setup': {
      if (vm) throw new Error('the VM is set up already');
      const [name] = args;
      if (!name) throw new Error('setup needs a VM name');
      vm = await startGuest({ socket: socket!, name, viommu: 'vtd', memory: count(args[2], 'ramBytes'), pasidQuota: count(args[1], 'pasidQuota') });
      return [];
    }
    case 'domain':
      return [String((await started().client.call('DOMAIN_ALLOC', {})).domain)];
    case 'single': {
      const fe = started().client;
      const domain = count(args[0], 'domain');
      const out: string[] = [];
      for (let i = count(args[1], 'reps'); i > 0; i--) {
        await fe.call('DMA_MAP', { domain, flags: 3, iova: 0n, gpa: 0x80_0000n, size: PAGE });
        const t = performance.now();
        await fe.call('DMA_UNMAP', { domain, iova: 0n, size: PAGE });
        out.push(String(performance.now() - t));
      }
      return out;
    }
    case 'map':
      await mapMany(count(args[0], 'domain'), count(args[1], 'n'));
      collectGarbage();
      return [];
    case 'unmap': {
      const domain = count(args[0], 'domain');
      const size = iovaOf(count(args[1], 'n'));
      const fe = started().client;
      const t = performance.now();
      const reply = await fe.call('DMA_UNMAP', { domain, iova: 0n, size });
      const ms = performance.now() - t;
      return [String(ms), String(reply.unmapped)];
    }
    case 'bind': {
      const k = count(args[0], 'k');
      const drv = await vmDriver();
      for (let i = 0; i < k; i++) await drv.bindPasid(await drv.allocPasid());
      collectGarbage();
      return [];
    }
    case 'vcmd': {
      const drv = await vmDriver();
      const out: string[] = [];
      for (let i = count(args[0], 'n'); i > 0; i--) out.push((await vcmdRoundTrip(drv)).us.toFixed(3));
      return out;
    }
    case 'loop': {
      if (args[0] === 'start') {
        if (loop) throw new Error('a loop is running already');
        const drv = await vmDriver();
        collectGarbage();
        const samples: string[] = [];
        let running = true;
        const done = (async () => {
          while (running) {
            const r = await vcmdRoundTrip(drv);
            samples.push(`${r.end.toFixed(4)}:${r.us.toFixed(3)}`);
          }
        })();
        loop = {
          samples,
          stop: async () => {
            running = false;
            await done;
          },
        };
        return [];
      }
      if (args[0] === 'stop') {
        if (!loop) throw new Error('no loop is running');
        const l = loop;
        loop = null;
        await l.stop();
        return l.samples;
      }
      throw new Error(`loop takes start or stop, not '${args[0] ?? ''}'`);
    }
    case 'drop':
      // The connection closes as it does when the VM's process dies: nothing unbound first.
      // The process itself lives on until stdin ends, so that its exit (Node's teardown, which
      // made the timed release ~15 ms longer on this machine's 2 shared cores, measured) does
      // not land in the host's release window; a dying VM's own teardown is not the host's work.
      started().link.close();
      dropped = true;
      return [];
    default:
      throw new Error(`unknown command '${cmd ?? ''}'`);
  }
}

// Commands run one at a time, in order.
let queue: Promise<void> = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const words = line.trim().split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) return;
  queue = queue.then(async () => {
    try {
      const values = await run(words);
      process.stdout.write(['ok', ...values].join(' ') + '\n');
    } catch (e) {
      process.stdout.write(`error ${(e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ')}\n`);
    }
  });
});
lines.on('close', () => {
  void queue.then(async () => {
    // After a drop, closing the guest half would try to unbind every PASID over the closed link.
    if (!dropped) await vm?.close().catch(() => {});
    process.exit(0);
  });
});
process.stdout.write('ready\n');
