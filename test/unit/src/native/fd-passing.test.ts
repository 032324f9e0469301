/**
 * The addon's socket half: sendmsg with SCM_RIGHTS and a uv_poll_t reader that receives data and
 * descriptors (unix(7), cmsg(3)), on sockets whose fds libuv also owns.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import {
  MAX_FDS, closeFd, errnoCode, fstat, isNativeError, loadError, mappingCount, memfdCreate, mmap, munmap,
  nativeAvailable, sendFds, socketFd, startReader, stopReader, type ReaderHandle,
} from '../../../../src/native/native.js';
import { errnoCodeOf as code, openFdCount, socketPair } from './socket-pair.js';
import { scaled } from '../../../support/slowdown.js';

interface Read { data: Buffer | null; fds: number[]; errno: number }

/** A reader that records every callback and lets a test wait for a condition on them. */
function record(fd: number): { handle: ReaderHandle; reads: Read[]; bytes(): Buffer; until(pred: () => boolean, ms?: number): Promise<void> } {
  const reads: Read[] = [];
  let wake = (): void => {};
  const handle = startReader(fd, (data, fds, errno) => { reads.push({ data, fds, errno }); wake(); });
  return {
    handle,
    reads,
    bytes: () => Buffer.concat(reads.flatMap(r => (r.data ? [r.data] : []))),
    until(pred, ms = scaled(5000)) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('timed out waiting for the reader')), ms);
        const check = (): void => { if (pred()) { clearTimeout(timer); wake = () => {}; resolve(); } };
        wake = check;
        check();
      });
    },
  };
}

describe.skipIf(!nativeAvailable())(`native fd passing${nativeAvailable() ? '' : ` (skipped: native addon unavailable: ${loadError})`}`, () => {
  it('data and two fds of one memfd arrive together; both name the same file, are close-on-exec, and map its bytes', async () => {
    const pair = await socketPair();
    const r = record(pair.serverFd);
    const memfd = memfdCreate('passed', 4096);
    try {
      const mine = mmap(memfd, 4096, 0, true);
      new Uint8Array(mine).set([9, 8, 7]);
      munmap(mine);
      expect(sendFds(pair.clientFd, Buffer.from('SET_MEM_TABLE'), [memfd, memfd])).toBe(13);
      expect(sendFds(pair.clientFd, Buffer.from('+tail'))).toBe(5);
      await r.until(() => r.bytes().length === 18);
      expect(r.bytes().toString()).toBe('SET_MEM_TABLE+tail');
      const fds = r.reads.flatMap(x => x.fds);
      expect(fds).toHaveLength(2);
      expect(r.reads[0]!.fds).toEqual(fds); // with the read holding the first byte of their send
      expect(new Set(fds).size).toBe(2); // two distinct descriptors...
      for (const fd of fds) {
        expect(fstat(fd).ino).toBe(fstat(memfd).ino); // ...of the same file
        const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
        expect(parseInt(flags, 8) & 0o2000000).not.toBe(0);
      }
      const view = new Uint8Array(mmap(fds[0]!, 4096, 0, false));
      expect([...view.subarray(0, 3)]).toEqual([9, 8, 7]);
      munmap(view.buffer);
      fds.forEach(closeFd);
    } finally {
      stopReader(r.handle);
      closeFd(memfd);
      await pair.close();
    }
  });

  it('delivers EOF as (null, [], 0) and stops itself; stopReader is then, and when repeated, a no-op', async () => {
    const pair = await socketPair();
    const r = record(pair.serverFd);
    sendFds(pair.clientFd, Buffer.from('last words'));
    pair.client.end();
    await r.until(() => r.reads.some(x => x.data === null));
    expect(r.bytes().toString()).toBe('last words');
    expect(r.reads.at(-1)).toEqual({ data: null, fds: [], errno: 0 });
    expect(stopReader(r.handle)).toBe(false);
    expect(stopReader(r.handle)).toBe(false);
    await pair.close();
  });

  it('stopReader stops delivery at once, also from inside the callback, and a second call returns false', async () => {
    const pair = await socketPair();
    const seen: string[] = [];
    let handle: ReaderHandle | undefined;
    let stoppedInside: boolean | undefined;
    handle = startReader(pair.serverFd, data => {
      seen.push(String(data));
      stoppedInside = stopReader(handle!);
    });
    sendFds(pair.clientFd, Buffer.from('one'));
    await new Promise(r => setTimeout(r, 50));
    sendFds(pair.clientFd, Buffer.from('two'));
    await new Promise(r => setTimeout(r, 50));
    expect(seen).toEqual(['one']);
    expect(stoppedInside).toBe(true);
    expect(stopReader(handle)).toBe(false);
    // The fd is free for a new reader (the old watcher is gone) and the unread bytes are still there.
    const r2 = record(pair.serverFd);
    await r2.until(() => r2.bytes().toString() === 'two');
    expect(stopReader(r2.handle)).toBe(true);
    await pair.close();
  });

  it('reports a reset as errno ECONNRESET and stops', async () => {
    const pair = await socketPair({ pauseClient: true });
    const r = record(pair.serverFd);
    sendFds(pair.serverFd, Buffer.from('unread by the client')); // the client closes with this queued
    pair.client.destroy();
    await r.until(() => r.reads.length > 0);
    expect(r.reads).toEqual([{ data: null, fds: [], errno: os.constants.errno.ECONNRESET }]);
    expect(errnoCode(r.reads[0]!.errno)).toBe('ECONNRESET');
    expect(stopReader(r.handle)).toBe(false);
    await pair.close();
  });

  it('startReader refuses a closed fd (EBADF), a regular file (EPERM), an fd libuv already watches (EEXIST), a non-function', async () => {
    const fd = memfdCreate('not-a-socket', 16);
    expect(code(() => startReader(fd, () => {}))).toBe('EPERM');
    closeFd(fd);
    expect(code(() => startReader(fd, () => {}))).toBe('EBADF');
    const pair = await socketPair();
    expect(code(() => startReader(pair.clientFd, () => {}))).toBe('EEXIST'); // net.Socket reads it
    const r = record(pair.serverFd);
    expect(code(() => startReader(pair.serverFd, () => {}))).toBe('EEXIST'); // one reader per fd
    expect(() => startReader(pair.serverFd, 42 as never)).toThrow(TypeError);
    expect(() => stopReader(7 as never)).toThrow(TypeError);
    expect(stopReader({} as ReaderHandle)).toBe(false);
    stopReader(r.handle);
    await pair.close();
  });

  it('sendFds errors: closed socket fd EBADF, a non-socket ENOTSOCK, a bad fd in the list EBADF, nothing sent', async () => {
    const pair = await socketPair();
    const r = record(pair.serverFd);
    const memfd = memfdCreate('payload', 16);
    const dead = memfdCreate('dead', 16);
    closeFd(dead);
    try {
      expect(code(() => sendFds(dead, Buffer.from('x'), []))).toBe('EBADF');
      expect(code(() => sendFds(memfd, Buffer.from('x'), []))).toBe('ENOTSOCK');
      expect(code(() => sendFds(pair.clientFd, Buffer.from('x'), [memfd, dead]))).toBe('EBADF');
      try {
        sendFds(pair.clientFd, Buffer.from('x'), [dead]);
      } catch (e) {
        expect(e).toMatchObject({ code: 'EBADF', syscall: 'sendmsg', bytesSent: 0 });
      }
      sendFds(pair.clientFd, Buffer.from('ok'), []);
      await r.until(() => r.bytes().length >= 2);
      expect(r.bytes().toString()).toBe('ok'); // the refused sends put nothing on the stream
    } finally {
      stopReader(r.handle);
      closeFd(memfd);
      await pair.close();
    }
  });

  it('sendFds validates: fds need a data byte, at most SCM_MAX_FD fds, Uint8Array data, integer fds', async () => {
    const pair = await socketPair();
    const memfd = memfdCreate('v', 16);
    try {
      expect(() => sendFds(pair.clientFd, new Uint8Array(0), [memfd])).toThrow(TypeError);
      expect(sendFds(pair.clientFd, new Uint8Array(0), [])).toBe(0);
      expect(() => sendFds(pair.clientFd, Buffer.from('x'), new Array<number>(MAX_FDS + 1).fill(memfd))).toThrow(TypeError);
      expect(() => sendFds(pair.clientFd, new Uint16Array(2) as unknown as Uint8Array, [])).toThrow(TypeError);
      expect(() => sendFds(pair.clientFd, Buffer.from('x'), [1.5])).toThrow(TypeError);
      expect(() => sendFds(pair.clientFd, Buffer.from('x'), [-1])).toThrow(TypeError);
      expect(() => sendFds(-1, Buffer.from('x'), [])).toThrow(TypeError);
    } finally {
      closeFd(memfd);
      await pair.close();
    }
  });

  it('sendFds on a full socket waits up to its deadline, then fails ETIMEDOUT with bytesSent', async () => {
    const pair = await socketPair(); // nobody reads the server end
    const t0 = Date.now();
    try {
      sendFds(pair.clientFd, Buffer.alloc(4 << 20), [], 100);
      expect.unreachable();
    } catch (e) {
      expect(isNativeError(e, 'ETIMEDOUT')).toBe(true);
      const sent = (e as { bytesSent: number }).bytesSent;
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(4 << 20);
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    await pair.close();
  });

  it('a read returns at most 64 KiB; larger sends arrive split and in order', async () => {
    const pair = await socketPair();
    const r = record(pair.serverFd);
    const big = Buffer.from(Array.from({ length: 120 * 1024 }, (_, i) => (i * 31) & 255));
    sendFds(pair.clientFd, big.subarray(0, 40960));
    sendFds(pair.clientFd, big.subarray(40960, 81920));
    sendFds(pair.clientFd, big.subarray(81920));
    await r.until(() => r.bytes().length === big.length);
    expect(r.bytes().equals(big)).toBe(true);
    expect(Math.max(...r.reads.map(x => x.data!.length))).toBeLessThanOrEqual(65536);
    stopReader(r.handle);
    await pair.close();
  });

  it('any chunking of sends arrives as the same byte stream (property)', async () => {
    const pair = await socketPair();
    const r = record(pair.serverFd);
    let expected = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.uint8Array({ minLength: 1, maxLength: 150_000 }),
          fc.array(fc.integer({ min: 1, max: 65536 }), { minLength: 1, maxLength: 200 }),
          async (bytes, cuts) => {
            const start = expected;
            let at = 0;
            let unread = 0;
            for (let i = 0; at < bytes.length; i++) {
              const n = Math.min(cuts[i % cuts.length]!, bytes.length - at);
              sendFds(pair.clientFd, bytes.subarray(at, at + n));
              at += n;
              unread += n;
              expected += n;
              // The reader runs on this thread: let it drain before the socket buffer fills.
              if (unread >= 65536 || i % 32 === 31) {
                const want = expected;
                await r.until(() => r.bytes().length === want);
                unread = 0;
              }
            }
            const want = expected;
            await r.until(() => r.bytes().length === want);
            expect(r.bytes().subarray(start).equals(Buffer.from(bytes))).toBe(true);
          },
        ),
        { numRuns: 40 },
      );
      expect(r.reads.every(x => x.errno === 0 && x.fds.length === 0)).toBe(true);
    } finally {
      stopReader(r.handle);
      await pair.close();
    }
  });

  it('50 connect/create/map/send/receive/close cycles leave fds and mappings at baseline', async () => {
    await (await socketPair()).close(); // warm up whatever the first connection allocates
    const fds = openFdCount();
    const maps = mappingCount();
    for (let i = 0; i < 50; i++) {
      const pair = await socketPair();
      const r = record(pair.serverFd);
      const memfd = memfdCreate(`cycle-${i}`, 8192);
      const mine = new Uint8Array(mmap(memfd, 8192, 0, true));
      mine[100] = i;
      sendFds(pair.clientFd, Buffer.from([i]), [memfd]);
      await r.until(() => r.reads.length > 0);
      const [got] = r.reads[0]!.fds;
      const theirs = new Uint8Array(mmap(got!, 4096, 0, false));
      expect(theirs[100]).toBe(i);
      munmap(theirs.buffer);
      munmap(mine.buffer);
      closeFd(got!);
      closeFd(memfd);
      if (i % 2) stopReader(r.handle);
      else pair.client.end(); // the other half of the cycles ends by EOF instead
      if (i % 2 === 0) await r.until(() => r.reads.some(x => x.data === null));
      await pair.close();
    }
    await new Promise(r => setImmediate(r));
    expect(openFdCount()).toBe(fds);
    expect(mappingCount()).toBe(maps);
  });

  it('socketFd refuses a socket without a descriptor', () => {
    expect(() => socketFd(new net.Socket())).toThrow(/ENOTCONN/);
    expect(() => socketFd({})).toThrow(/ENOTCONN/);
  });
});
