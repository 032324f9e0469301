/**
 * Guest RAM shared the vhost-user way (docs/architecture.md "Memory model", docs/protocol.md
 * SET_MEM_TABLE): a sealed memfd passed as SCM_RIGHTS, mapped MAP_SHARED by both halves.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest } from '../../../src/app/harness/start-guest.js';
import { GuestRam } from '../../../guest/memory/guest-ram.js';
import { DeviceDmaOp } from '../../../vhost/messages/device-dma.js';
import { Seal, addSeals, closeFd, loadError, mappingCount, memfdCreate, nativeAvailable, openNoFollow, socketFd } from '../../../src/native/native.js';
import { PF, announce, connectVm, errnoOf, region } from './fd-guest.js';
import { scaled, waitFor } from '../../support/wait.js';

const MiB = 1024 * 1024;

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe.skipIf(!nativeAvailable())(`shared guest RAM across two processes${nativeAvailable() ? '' : ` (skipped: ${loadError})`}`, () => {
  let host: StartedHost;
  beforeAll(async () => {
    host = await startHost({ graceMs: 0 });
  });
  afterAll(async () => {
    await host?.close();
  });

  it('each half sees the other half\'s stores at its next access, with no flush or message in between', async () => {
    const ram = GuestRam.create(4 * MiB, { backing: 'memfd' });
    const fe = await connectVm(host.socket, 'shared-a');
    try {
      await announce(fe, ram.fd!, ram.size);
      for (let i = 0; i < 20; i++) {
        const pattern = Uint8Array.from({ length: 64 }, (_, k) => (i * 7 + k) & 0xff);
        ram.write(0x3000 + i * 64, pattern); // a plain store into the guest's mapping
        const r = await fe.call('DEVICE_DMA', { rid: PF, op: DeviceDmaOp.READ, flags: 0, pasid: 0, addr: BigInt(0x3000 + i * 64), length: 64 });
        expect([...r.data!]).toEqual([...pattern]);
        const back = Uint8Array.from(pattern, (b) => b ^ 0xff);
        await fe.call('DEVICE_DMA', { rid: PF, op: DeviceDmaOp.WRITE, flags: 0, pasid: 0, addr: BigInt(0x8000 + i * 64), length: 64, data: back });
        expect([...ram.read(0x8000 + i * 64, 64)]).toEqual([...back]); // the host's store, seen by a load
      }
      const s = await host.snapshot();
      expect((s.vms.find((v) => v.name === 'shared-a') as unknown as { memory: { regions: number } }).memory.regions).toBe(1);
    } finally {
      fe.close();
      ram.close();
    }
  });

  it('startGuest maps RAM from a memfd, and dma() moves data through the staging area', async () => {
    const vm = await startGuest({ socket: host.socket, viommu: 'vtd', memory: 16 * MiB });
    try {
      expect(vm.ram.fd).toBeTypeOf('number');
      expect(vm.ram.staging?.length).toBe(MiB);
      const data = Uint8Array.from({ length: MiB }, (_, k) => (k * 13) & 0xff);
      await vm.memwrite(0x10_0000n, data);
      const r = await vm.dma('00:03.0', { addr: 0x10_0000n, length: MiB });
      expect(r.ok).toBe(true);
      expect(Buffer.from((r as { data: Uint8Array }).data).equals(Buffer.from(data))).toBe(true);
      const w = await vm.dma('00:03.0', { addr: 0x30_0000n, data: data.subarray(0, 4096) });
      expect(w).toEqual({ ok: true });
      expect(Buffer.from(await vm.memread(0x30_0000n, 4096)).equals(Buffer.from(data.subarray(0, 4096)))).toBe(true);
      const bad = await vm.dma('00:03.0', { addr: 0x4000_0000n, length: 16 });
      expect(bad.ok).toBe(false);
      const s = await host.snapshot();
      expect((s.vms.find((v) => v.name === vm.name) as unknown as { memory: { regions: number } }).memory.regions).toBe(2);
    } finally {
      await vm.close();
    }
  });
});

describe.skipIf(!nativeAvailable())(`SET_MEM_TABLE fd form: malformed tables${nativeAvailable() ? '' : ` (skipped: ${loadError})`}`, () => {
  let host: StartedHost;
  beforeAll(async () => {
    host = await startHost({ spawn: false, graceMs: 0 });
  });
  afterAll(async () => {
    await host?.close();
  });

  it('too few, too many, too small, a socket, a directory: errno, nothing mapped, no descriptor kept; the connection keeps working', async () => {
    const fe = await connectVm(host.socket, 'malformed');
    const small = memfdCreate('small', 4096);
    const good = memfdCreate('good', 2 * MiB);
    addSeals(good, Seal.SHRINK | Seal.GROW);
    const dir = openNoFollow(-1, os.tmpdir(), false);
    const sockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-sock-'));
    const srv = net.createServer().listen(path.join(sockDir, 's'));
    await new Promise((r) => srv.once('listening', r));
    const peer = net.connect(path.join(sockDir, 's'));
    await new Promise((r) => peer.once('connect', r));
    try {
      const vm = host.server!.vm('malformed')!;
      const fds0 = fdCount();
      const maps0 = mappingCount();
      const cases: [string, () => Promise<unknown>, string][] = [
        ['too few', () => fe.call('SET_MEM_TABLE', { regions: [region(0n, 0x10_0000n), region(0x10_0000n, 0x10_0000n, 0x10_0000n)], fds: [good] }), 'EINVAL'],
        ['too many', () => fe.call('SET_MEM_TABLE', { regions: [region(0n, 0x10_0000n)], fds: [good, good] }), 'EINVAL'],
        ['too small', () => fe.call('SET_MEM_TABLE', { regions: [region(0n, 0x2000n)], fds: [small] }), 'EINVAL'],
        ['offset past the end', () => fe.call('SET_MEM_TABLE', { regions: [region(0n, 0x10_0000n, 0x20_0000n)], fds: [good] }), 'EINVAL'],
        ['a socket', () => fe.call('SET_MEM_TABLE', { regions: [region(0n, 0x1000n)], fds: [socketFd(peer)] }), 'EBADF'],
        ['a directory', () => fe.call('SET_MEM_TABLE', { regions: [region(0n, 0x1000n)], fds: [dir] }), 'EBADF'],
      ];
      for (const [what, p, want] of cases) {
        expect(`${what}: ${await errnoOf(p())}`).toBe(`${what}: ${want}`);
        expect(vm.mem.list.length).toBe(0);
        expect(mappingCount()).toBe(maps0);
        expect(fdCount()).toBe(fds0);
      }
      // Same connection, a good table: mapped, one descriptor kept by the host.
      await announce(fe, good, 2 * MiB);
      expect(vm.mem.list.length).toBe(1);
      expect(vm.mem.list[0]!.backing.kind).toBe('mapped');
      expect(mappingCount()).toBe(maps0 + 1);
      expect(fdCount()).toBe(fds0 + 1);
      const r = await fe.call('DEVICE_DMA', { rid: PF, op: DeviceDmaOp.READ, flags: 0, pasid: 0, addr: 0n, length: 8 });
      expect(r.status).toBe(0);
    } finally {
      fe.close();
      peer.destroy();
      srv.close();
      fs.rmSync(sockDir, { recursive: true, force: true });
      for (const fd of [small, good, dir]) closeFd(fd);
    }
  });

  it('an unsealed memfd or a plain file is accepted and read with positioned I/O, never mapped', async () => {
    const fe = await connectVm(host.socket, 'unsealed');
    const fd = memfdCreate('unsealed', MiB);
    try {
      // memfdCreate does not seal: SEAL_SHRINK is missing, so the host must not map it.
      await announce(fe, fd, MiB);
      const vm = host.server!.vm('unsealed')!;
      expect(vm.mem.list[0]!.backing.kind).toBe('file');
    } finally {
      fe.close();
      closeFd(fd);
    }
  });

  it('a guest on positioned I/O against a mapped host: path form, 1 MiB in the frames (the host queues what the socket cannot take)', async () => {
    const vm = await startGuest({ socket: host.socket, viommu: 'vtd', memory: 4 * MiB, memoryBackend: 'pread' });
    try {
      expect(vm.ram.fd).toBeUndefined();
      expect(vm.ram.staging).toBeUndefined();
      const data = Uint8Array.from({ length: MiB }, (_, k) => (k * 31) & 0xff);
      expect(await vm.dma('00:03.0', { addr: 0x10_0000n, data })).toEqual({ ok: true });
      const r = await Promise.all([0, 1, 2].map(() => vm.dma('00:03.0', { addr: 0x10_0000n, length: MiB })));
      for (const x of r) expect(Buffer.from((x as { data: Uint8Array }).data).equals(Buffer.from(data))).toBe(true);
      expect(host.server!.vm(vm.name)!.mem.list.map((m) => m.backing.kind)).toEqual(['file']);
    } finally {
      await vm.close();
    }
  });

  it('staged DEVICE_DMA: staging_gpa outside the memory table is EFAULT, nothing done; concurrent dma() calls fall back to inline data', async () => {
    const vm = await startGuest({ socket: host.socket, viommu: 'vtd', memory: 4 * MiB });
    try {
      const out = await errnoOf(vm.link.call('DEVICE_DMA', { rid: 0x18, op: DeviceDmaOp.READ, flags: 1 << 3, pasid: 0, addr: 0x1000n, length: 16, staging_gpa: 0x7000_0000_0000n }));
      expect(out).toBe('EFAULT');
      const pattern = Uint8Array.from({ length: 8192 }, (_, k) => k & 0xff);
      await vm.memwrite(0x20_0000n, pattern);
      const rs = await Promise.all([0, 1, 2, 3].map((i) => vm.dma('00:03.0', { addr: 0x20_0000n + BigInt(i * 1024), length: 1024 })));
      rs.forEach((x, i) => expect([...(x as { data: Uint8Array }).data]).toEqual([...pattern.subarray(i * 1024, i * 1024 + 1024)]));
    } finally {
      await vm.close();
    }
  });

  it('descriptors sent with a message that takes none are closed by the host', async () => {
    const fe = await connectVm(host.socket, 'stray');
    const fd = memfdCreate('stray', 4096);
    try {
      const before = fdCount();
      // A frame that takes no descriptors (an unknown code, no NEED_REPLY: no reply) carries two;
      // the kernel delivers them, no frame claims them, the host closes them.
      const t = fe.conn.transport as unknown as { write(d: Uint8Array, fds: number[]): void };
      const frame = Buffer.alloc(12);
      frame.writeUInt32LE(0x1ee, 0);
      frame.writeUInt32LE(0x1, 4); // version 1
      t.write(frame, [fd, fd]);
      await fe.call('GET_STATE');
      await fe.call('GET_STATE');
      expect(fdCount()).toBe(before);
    } finally {
      fe.close();
      closeFd(fd);
    }
  });

  it('descriptors and mappings return to their baseline after 50 VM lifecycles', async () => {
    const lifecycle = async (i: number): Promise<void> => {
      const vm = await startGuest({ socket: host.socket, viommu: 'vtd', memory: 4 * MiB, name: `life-${i}` });
      const r = await vm.dma('00:03.0', { addr: 0x1000n, length: 4096 });
      expect(r.ok).toBe(true);
      await vm.close();
      await waitFor(() => host.server!.vm(`life-${i}`) === undefined, { what: `VM life-${i} released`, timeoutMs: scaled(5000) });
    };
    await lifecycle(-1); // warm-up: lazily opened descriptors (loggers, modules) are not leaks
    const fds0 = fdCount();
    const maps0 = mappingCount();
    for (let i = 0; i < 50; i++) await lifecycle(i);
    // Closing is asynchronous on both sides: wait (bounded) until everything is back, then check.
    const settled = (): boolean => host.server!.vms.length === 0 && mappingCount() <= maps0 && fdCount() <= fds0;
    await waitFor(settled, { what: 'descriptors and mappings back to their baseline', timeoutMs: scaled(5000) }).catch(() => {});
    expect(host.server!.vms.length).toBe(0);
    expect(mappingCount()).toBeLessThanOrEqual(maps0);
    expect(fdCount()).toBeLessThanOrEqual(fds0);
  });
});
