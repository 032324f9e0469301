import { describe, it, expect, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FrontendClient, type BackendEvent } from '../../../vhost/index.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'vsva-vhost-'));
const sock = join(dir, 'host.sock');
let child: ChildProcess | undefined;

function startChild(): Promise<void> {
  child = spawn(process.execPath, ['--import', 'tsx', join(here, 'echo-backend.ts'), sock], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child!.once('exit', (code) => reject(new Error(`back-end exited early (${code})`)));
    child!.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
  });
}

afterAll(() => {
  child?.stdin?.end();
  child?.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe('protocol over a real Unix socket between two processes', () => {
  it('completes the handshake, pipelines 10,000 requests and receives every reply in order', async () => {
    await startChild();
    const fe = await FrontendClient.connect({ path: sock, timeoutMs: 20_000 });
    const hs = await fe.handshake();
    expect(hs.protocolFeatures).toBe(fe.protocolFeatures);
    const vm = await fe.setupVm({ name: 'it-vm', pasid_quota: 0, flags: 1, session_token: new Uint8Array(16) });
    expect(vm.session_token).toEqual(new Uint8Array(16).fill(0x5a));
    await fe.call('SET_MEM_TABLE', {
      regions: [{ guest_phys_addr: 0n, memory_size: 1n << 20n, userspace_addr: 0n, mmap_offset: 0n, path: join(dir, 'ram') }],
    });

    const N = 10_000;
    const ps: Promise<{ pasid: number } | { unmapped: bigint }>[] = [];
    for (let i = 0; i < N; i++) {
      ps.push(i % 2 === 0 ? fe.call('PASID_ALLOC', { min: i, max: 0xfffff }) : fe.call('DMA_UNMAP', { domain: 0, iova: 0n, size: BigInt(i) }));
    }
    const replies = await Promise.all(ps);
    replies.forEach((r, i) => {
      if (i % 2 === 0) expect(r).toEqual({ pasid: i });
      else expect(r).toEqual({ unmapped: BigInt(i) });
    });

    // Both directions: the back-end answers a PAGE_RESPONSE after a FAULT round trip on the
    // backend channel.
    const got: BackendEvent[] = [];
    fe.onBackendMessage((ev) => void got.push(ev));
    await fe.call('PAGE_RESPONSE', { rid: 0x18, flags: 1, pasid: 33, grpid: 0x20, code: 0 });
    expect(got).toEqual([{ name: 'FAULT', msg: { rid: 0x18, flags: 1, pasid: 33, reason: 0x20, addr: 0x1000n } }]);
    fe.close();
  });
});
