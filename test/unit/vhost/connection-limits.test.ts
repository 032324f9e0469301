/**
 * Connection limits (vhost/roles/connection-limits.ts): option checking, admission per uid and
 * in total with their errnos, and the sweep's idle, set-up and half-frame timeouts on a clock the
 * test drives.
 */
import { describe, it, expect } from 'vitest';
import {
  ConnectionAdmission, ConnectionSweep, DEFAULT_CONNECTION_LIMITS, connectionCapWithinFileLimit, resolveConnectionLimits, type SweptConnection,
} from '../../../vhost/roles/connection-limits.js';
import { childLogger } from '../../../src/log.js';
import type { GuardedTransport } from '../../../vhost/transport/guarded.js';

const peer = (uid: number) => ({ uid, pid: null, verified: true });

describe('resolveConnectionLimits', () => {
  it('fills in the defaults and refuses values out of range (EINVAL)', () => {
    expect(resolveConnectionLimits()).toEqual(DEFAULT_CONNECTION_LIMITS);
    expect(resolveConnectionLimits({ maxConnections: 5 }).maxConnections).toBe(5);
    expect(() => resolveConnectionLimits({ maxConnections: 0 })).toThrow(/EINVAL/);
    expect(() => resolveConnectionLimits({ idleTimeoutMs: -1 })).toThrow(/EINVAL/);
    expect(() => resolveConnectionLimits({ maxIncomingBytes: 10 ** 9 })).toThrow(/EINVAL/);
    expect(() => resolveConnectionLimits({ maxOutgoingBytes: 1.5 })).toThrow(/EINVAL/);
  });
});

describe('connectionCapWithinFileLimit', () => {
  it('keeps the connection cap under the open-file limit', () => {
    expect(connectionCapWithinFileLimit(2112, 20_000)).toBe(2112);
    expect(connectionCapWithinFileLimit(2112, 1024)).toBe(640);
    expect(connectionCapWithinFileLimit(2112, 50)).toBe(16);
    expect(connectionCapWithinFileLimit(2112, null)).toBe(2112);
  });
});

describe('ConnectionAdmission', () => {
  it('EUSERS past the per-uid cap, EMFILE past the total; released slots are reusable', () => {
    const a = new ConnectionAdmission(resolveConnectionLimits({ maxConnections: 3, maxConnectionsPerUid: 2 }));
    expect(a.admit(peer(1))).toBeNull();
    expect(a.admit(peer(1))).toBeNull();
    expect(a.admit(peer(1))).toBe('EUSERS');
    expect(a.admit(peer(2))).toBeNull();
    expect(a.admit(peer(3))).toBe('EMFILE');
    expect([a.open, a.openFor(1), a.openFor(2)]).toEqual([3, 2, 1]);
    a.release(peer(1));
    expect(a.admit(peer(3))).toBeNull();
    expect(a.openFor(1)).toBe(1);
  });
});

function watched(opts: { slot?: boolean; partial?: number; frames?: number; acceptedAt?: number }): SweptConnection & { aborted: string | null; state: typeof opts } {
  const state = { ...opts };
  const guard = { label: 'test', lastDataAt: opts.acceptedAt ?? 0, acceptedAt: opts.acceptedAt ?? 0 } as unknown as GuardedTransport;
  const c = {
    guard,
    state,
    aborted: null as string | null,
    holdsSlot: () => state.slot ?? false,
    partialBytes: () => state.partial ?? 0,
    framesReceived: () => state.frames ?? 0,
    abort: (why: string) => {
      c.aborted = why;
    },
  };
  return c;
}

describe('ConnectionSweep', () => {
  const log = childLogger('test-sweep');
  const limits = resolveConnectionLimits({ idleTimeoutMs: 1000, setupTimeoutMs: 5000, halfFrameTimeoutMs: 2000 });

  it('closes a silent connection without a VM at the idle timeout; not one that holds a VM', () => {
    const sweep = new ConnectionSweep(limits, log);
    const idle = watched({});
    const vm = watched({ slot: true });
    sweep.watch(idle);
    sweep.watch(vm);
    sweep.sweep(999);
    expect(idle.aborted).toBeNull();
    sweep.sweep(1000);
    expect(idle.aborted).toMatch(/silent/);
    sweep.sweep(100_000);
    expect(vm.aborted).toBeNull();
    sweep.stop();
  });

  it('closes a connection still without a VM at the set-up timeout even when it talks', () => {
    const sweep = new ConnectionSweep(limits, log);
    const chatty = watched({});
    sweep.watch(chatty);
    for (let t = 500; t < 5000; t += 500) {
      chatty.guard.lastDataAt = t;
      sweep.sweep(t);
    }
    expect(chatty.aborted).toBeNull();
    chatty.guard.lastDataAt = 5000;
    sweep.sweep(5000);
    expect(chatty.aborted).toMatch(/no VM/);
    sweep.stop();
  });

  it('closes a frame unfinished for the half-frame timeout; a finished frame restarts the clock', () => {
    const sweep = new ConnectionSweep(limits, log);
    const c = watched({ slot: true, partial: 100 });
    sweep.watch(c);
    sweep.sweep(0);
    sweep.sweep(1500);
    c.state.frames = 1; // a frame completed, another begun
    sweep.sweep(1900);
    sweep.sweep(3800);
    expect(c.aborted).toBeNull();
    sweep.sweep(3900);
    expect(c.aborted).toMatch(/unfinished/);
    sweep.stop();
  });
});
