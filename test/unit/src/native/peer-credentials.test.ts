/**
 * SO_PEERCRED (unix(7)): the host learns who connected from the kernel, not from anything the
 * peer says — the uid limits and file-ownership checks rest on it.
 */
import { describe, expect, it } from 'vitest';
import { closeFd, memfdCreate, nativeAvailable, peerCredentials } from '../../../../src/native/native.js';
import { errnoCodeOf as code, socketPair } from './socket-pair.js';

describe.runIf(nativeAvailable())('peerCredentials', () => {
  it('reports this process as the peer of both ends of a socket it connected to itself', async () => {
    const pair = await socketPair();
    try {
      for (const fd of [pair.serverFd, pair.clientFd]) {
        expect(peerCredentials(fd)).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
      }
    } finally {
      await pair.close();
    }
  });

  it('refuses a descriptor that is not a socket (ENOTSOCK) and one that is closed (EBADF)', () => {
    const fd = memfdCreate('not-a-socket', 4096);
    try {
      expect(code(() => peerCredentials(fd))).toBe('ENOTSOCK');
    } finally {
      closeFd(fd);
    }
    expect(code(() => peerCredentials(fd))).toBe('EBADF');
  });
});
