import { describe, it, expect, afterEach } from 'vitest';
import { existsSync } from 'node:fs';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { HostMemory } from '../../../../host/memory/host-memory.js';
import { InProcessBacking, openBacking } from '../../../../src/memory/backing.js';
import { isVsvaError } from '../../../../src/errors.js';

const opened: { close(): void }[] = [];
afterEach(() => {
  while (opened.length) opened.pop()!.close();
});

function track<T extends { close(): void }>(x: T): T {
  opened.push(x);
  return x;
}

describe('GuestRam backed by a shared file', () => {
  it('a write through one object is read back through a second opened on the same path', () => {
    const a = track(GuestRam.create(64 * 1024));
    expect(existsSync(a.path)).toBe(true);
    const b = track(GuestRam.open(a.path, a.size));
    a.writeU64(0x1000, 0x1122334455667788n);
    a.writeU32(0x2004, 0xdeadbeef);
    a.write(0x3000, Uint8Array.from([1, 2, 3, 4, 5]));
    a.writeU8(0xffff, 0x5a);
    expect(b.readU64(0x1000)).toBe(0x1122334455667788n);
    expect(b.readU32(0x2004)).toBe(0xdeadbeef);
    expect([...b.read(0x3000, 5)]).toEqual([1, 2, 3, 4, 5]);
    expect(b.readU8(0xffff)).toBe(0x5a);
    b.writeU32(0x10, 7);
    expect(a.readU32(0x10)).toBe(7);
  });

  it('the creator removes the file on close; openers do not', () => {
    const a = GuestRam.create(4096);
    const b = GuestRam.open(a.path, 4096);
    b.close();
    expect(existsSync(a.path)).toBe(true);
    a.close();
    expect(existsSync(a.path)).toBe(false);
  });

  it.each(['file', 'inproc'] as const)('%s: out-of-bounds accesses fail with EFAULT and change nothing', (backing) => {
    const ram = track(GuestRam.create(8192, { backing }));
    ram.write(8192 - 4, Uint8Array.from([9, 9, 9, 9]));
    const attempts: (() => unknown)[] = [
      () => ram.write(8192 - 2, Uint8Array.from([1, 2, 3, 4])),
      () => ram.writeU64(8192 - 4, 0xffffffffffffffffn),
      () => ram.writeU32(8190, 1),
      () => ram.writeU8(8192, 1),
      () => ram.read(-1, 2),
      () => ram.readU64(Number.MAX_SAFE_INTEGER),
      () => ram.read(0, 8193),
    ];
    for (const attempt of attempts) {
      let err: unknown;
      try {
        attempt();
      } catch (e) {
        err = e;
      }
      expect(isVsvaError(err, 'EFAULT')).toBe(true);
      expect((err as Error).message).toMatch(/outside/);
    }
    expect([...ram.read(8192 - 4, 4)]).toEqual([9, 9, 9, 9]);
  });

  it('rejects sizes that are not whole pages', () => {
    expect(() => GuestRam.create(1000)).toThrow(/multiple of 4096/);
  });
});

describe('HostMemory', () => {
  it('maps a guest RAM file as a region and sees the guest writes', () => {
    const ram = track(GuestRam.create(16384));
    const host = new HostMemory();
    const backing = track(openBacking(ram.path, ram.size));
    const region = host.addRegion('vm0', 0x4000_0000, backing);
    ram.writeU64(0x2000, 0xabcdn);
    expect(host.readU64(region.hpa + 0x2000)).toBe(0xabcdn);
    host.writeU32(region.hpa + 8, 0x1234);
    expect(ram.readU32(8)).toBe(0x1234);
  });

  it('rejects overlapping regions and accesses that straddle or miss regions', () => {
    const host = new HostMemory();
    const a = track(new InProcessBacking(8192));
    const b = track(new InProcessBacking(8192));
    host.addRegion('a', 0x10000, a);
    expect(() => host.addRegion('b', 0x11000, b)).toThrow(/overlaps/);
    host.addRegion('b', 0x12000, b);
    expect(() => host.read(0x11ffc, 8)).toThrow(/outside/);
    expect(() => host.readU32(0x20000)).toThrow(/not backed/);
    expect(host.findFree(4096, 0x10000)).toBe(0x14000);
  });
});
