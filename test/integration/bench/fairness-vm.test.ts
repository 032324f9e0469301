/**
 * The fairness benchmark's VM process (scripts/fairness-vm.ts through
 * src/app/bench/fairness-vm-process.ts): a real child process speaking the line commands to a
 * real host over its socket. Checks what the benchmark relies on — each command's answer, the
 * `error` answers of bad commands, and that `drop` ends the process with its VM left for the
 * host to release (the name is taken until then, free after). Nothing here looks at speed.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { FairnessVmProcess } from '../../../src/app/bench/fairness-vm-process.js';
import { FrontendClient, ProtocolFeature } from '../../../vhost/index.js';
import { isVsvaError } from '../../../src/errors.js';
import { waitFor, withDeadline } from '../../support/wait.js';

const RAM = 16 * 1024 * 1024;

describe('fairness bench VM process', () => {
  let host: StartedHost;
  const vms: FairnessVmProcess[] = [];
  beforeAll(async () => {
    host = await startHost({ spawn: false, graceMs: 0 });
  }, 30_000);
  afterAll(async () => {
    await Promise.all(vms.map((vm) => vm.stop()));
    await host?.close();
  });

  async function vmProcess(): Promise<FairnessVmProcess> {
    const vm = await withDeadline(FairnessVmProcess.start(host.socket), { what: 'fairness VM process ready', timeoutMs: 20_000 });
    vms.push(vm);
    return vm;
  }

  it('maps, unmaps with one DMA_UNMAP, and times the one-mapping baseline', async () => {
    const vm = await vmProcess();
    await expect(vm.command('setup fairness-unmapper 4 ' + RAM)).resolves.toEqual([]);
    const [domain] = await vm.command('domain');
    expect(Number.isInteger(Number(domain))).toBe(true);
    const single = await vm.command(`single ${domain} 3`);
    expect(single).toHaveLength(3);
    for (const ms of single) expect(Number(ms)).toBeGreaterThanOrEqual(0);
    await expect(vm.command(`map ${domain} 600`)).resolves.toEqual([]);
    const [ms, unmapped] = await vm.command(`unmap ${domain} 600`);
    expect(Number(ms)).toBeGreaterThan(0);
    expect(BigInt(unmapped!)).toBe(600n * 4096n);
    // Nothing left: unmapping again removes nothing.
    expect((await vm.command(`unmap ${domain} 600`))[1]).toBe('0');
    await vm.stop();
    await waitFor(async () => !(await host.snapshot()).vms.some((v) => v.name === 'fairness-unmapper'), { what: 'the stopped VM gone from the host', timeoutMs: 10_000 });
  }, 60_000);

  it('answers bad commands with error lines and keeps serving', async () => {
    const vm = await vmProcess();
    await expect(vm.command('domain')).rejects.toThrow(/no VM: send setup first/);
    await expect(vm.command('frobnicate')).rejects.toThrow(/unknown command 'frobnicate'/);
    await expect(vm.command('setup fairness-bad 4')).rejects.toThrow(/ramBytes must be a non-negative integer/);
    await vm.command('setup fairness-bad 4 ' + RAM);
    await expect(vm.command('setup fairness-bad 4 ' + RAM)).rejects.toThrow(/set up already/);
    await expect(vm.command('map 1 -3')).rejects.toThrow(/n must be a non-negative integer, not '-3'/);
    await expect(vm.command('domain')).resolves.toHaveLength(1);
    await vm.stop();
    await expect(vm.command('domain')).rejects.toThrow(/exited/);
  }, 60_000);

  it('times VCMD round trips on command and in a loop, each sample stamped on the monotonic clock', async () => {
    const vm = await vmProcess();
    await vm.command('setup fairness-bystander 4 ' + RAM);
    const idle = (await vm.command('vcmd 5')).map(Number);
    expect(idle).toHaveLength(5);
    for (const us of idle) expect(us).toBeGreaterThan(0);
    await expect(vm.command('loop stop')).rejects.toThrow(/no loop is running/);
    const t0 = Number(process.hrtime.bigint()) / 1e6;
    await vm.command('loop start');
    await expect(vm.command('loop start')).rejects.toThrow(/a loop is running already/);
    await waitFor(() => Number(process.hrtime.bigint()) / 1e6 - t0 > 50, { what: '50 ms of loop', timeoutMs: 1000 });
    const samples = (await vm.command('loop stop')).map((x) => x.split(':').map(Number));
    const t1 = Number(process.hrtime.bigint()) / 1e6;
    expect(samples.length).toBeGreaterThan(0);
    for (const [at, us] of samples) {
      // Same clock in both processes: every round trip ended inside [t0, t1] and lasted less than it.
      expect(at).toBeGreaterThanOrEqual(t0);
      expect(at).toBeLessThanOrEqual(t1);
      expect(us).toBeGreaterThan(0);
      expect(us! / 1000).toBeLessThanOrEqual(t1 - t0);
    }
    // Every PASID the loop allocated was freed: the quota of 4 still allows 4 allocations.
    expect(await vm.command('vcmd 4')).toHaveLength(4);
    await expect(vm.command('loop sideways')).rejects.toThrow(/loop takes start or stop/);
    await vm.stop();
  }, 60_000);

  it('drop: the connection closes with the PASIDs bound; the host releases the VM and frees its name', async () => {
    const vm = await vmProcess();
    await vm.command('setup fairness-dropped 8 ' + RAM);
    await expect(vm.command('bind 8')).resolves.toEqual([]);
    const before = await host.snapshot();
    expect(before.vms.find((v) => v.name === 'fairness-dropped')).toBeTruthy();
    await expect(vm.command('drop')).resolves.toEqual([]);
    // The process lives on (it exits when stdin ends) but has no VM any more.
    await expect(vm.command('bind 1')).rejects.toThrow(/the VM was dropped/);
    const probe = await FrontendClient.connect({ path: host.socket });
    try {
      await probe.handshake({ require: ProtocolFeature.REPLY_ACK | ProtocolFeature.VSVA });
      let setUp = false;
      await waitFor(
        async () => {
          try {
            await probe.setupVm({ name: 'fairness-dropped', pasid_quota: 1, flags: 1, session_token: new Uint8Array(16) });
            setUp = true;
          } catch (e) {
            if (!isVsvaError(e, 'EEXIST')) throw e;
          }
          return setUp;
        },
        { what: "the dropped VM's name free again", timeoutMs: 10_000 },
      );
    } finally {
      probe.close();
    }
    await vm.stop();
    await withDeadline(vm.exited, { what: 'dropped VM process exit', timeoutMs: 10_000 });
  }, 60_000);
});
