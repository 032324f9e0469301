/**
 * Behaviour docs/protocol.md states for a peer written from it alone (§4 renegotiation and
 * SET_MEM_TABLE before VM_SETUP, §6 field-by-field check order, §10.2 name errors, §10.11 FAULT
 * addr, §12 domain 0 empty, DMA_UNMAP of an unknown domain). In-process host, in-memory
 * connections.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HostServer } from '../../../host/server/index.js';
import { FrontendClient, ProtocolFeature, DEFAULT_PROTOCOL_FEATURES } from '../../../vhost/index.js';
import { VM_SETUP } from '../../../vhost/messages/vm.js';
import { DMA_MAP } from '../../../vhost/messages/dma.js';
import { VsvaError } from '../../../src/errors.js';
import { TestGuest, errnoOf } from './client.js';

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

function host(): HostServer {
  const h = new HostServer({ graceMs: 0 });
  open.push(h);
  return h;
}

function decodeErrno(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof VsvaError) return e.code;
    throw e;
  }
  return 'ok';
}

/** A VM_SETUP payload with `name` bytes written raw at offset 0. */
function vmSetupPayload(name: number[], reservedAt88 = 0): Buffer {
  const b = Buffer.alloc(96);
  Buffer.from(name).copy(b, 0);
  b.writeUInt32LE(1, 68); // VT-d
  b[88] = reservedAt88;
  return b;
}

describe('docs/protocol.md, as the code does it', () => {
  it('§10.2: name errors — no NUL EINVAL, text after the NUL EOPNOTSUPP, bad UTF-8 EINVAL, empty EINVAL', () => {
    expect(decodeErrno(() => VM_SETUP.request.decode(vmSetupPayload([0x76, 0x6d])))).toBe('ok');
    expect(decodeErrno(() => VM_SETUP.request.decode(vmSetupPayload(Array(64).fill(0x61))))).toBe('EINVAL');
    expect(decodeErrno(() => VM_SETUP.request.decode(vmSetupPayload([0x76, 0, 0x78])))).toBe('EOPNOTSUPP');
    expect(decodeErrno(() => VM_SETUP.request.decode(vmSetupPayload([0xc3, 0x28])))).toBe('EINVAL');
    expect(decodeErrno(() => VM_SETUP.request.decode(vmSetupPayload([])))).toBe('EINVAL');
  });

  it('§6: fields are checked one at a time in offset order (the first bad field decides)', () => {
    // A name without NUL (offset 0, EINVAL) and a non-zero reserved field (offset 88, EOPNOTSUPP): EINVAL.
    expect(decodeErrno(() => VM_SETUP.request.decode(vmSetupPayload(Array(64).fill(0x61), 1)))).toBe('EINVAL');
    // DMA_MAP: an unknown flag bit (offset 4, EOPNOTSUPP) wins over a wrapping range (a rule, EOVERFLOW).
    const b = Buffer.alloc(32);
    b.writeUInt32LE(0x10 | 1, 4);
    b.writeBigUInt64LE(0xffff_ffff_ffff_f000n, 8);
    b.writeBigUInt64LE(0x2000n, 24);
    expect(decodeErrno(() => DMA_MAP.request.decode(b))).toBe('EOPNOTSUPP');
    b.writeUInt32LE(1, 4);
    expect(decodeErrno(() => DMA_MAP.request.decode(b))).toBe('EOVERFLOW');
    b.writeBigUInt64LE(0n, 24); // size 0 is checked before the wrap
    expect(decodeErrno(() => DMA_MAP.request.decode(b))).toBe('EINVAL');
  });

  it('§4: SET_MEM_TABLE before VM_SETUP is EPERM; features may be renegotiated after VM_SETUP', async () => {
    const h = host();
    const fe = await FrontendClient.connect({ connect: h.connector() });
    open.push(fe);
    await fe.handshake();
    expect(await errnoOf(fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: 4096n, userspace_addr: 0n, mmap_offset: 0n, path: 'inproc:x' }] }))).toBe('EPERM');
    await fe.setupVm({ name: 'reneg', pasid_quota: 4, flags: 1, session_token: new Uint8Array(16) });
    expect((await fe.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
    await fe.call('SET_PROTOCOL_FEATURES', ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ);
    expect(await errnoOf(fe.call('PASID_ALLOC', { min: 1, max: 0xfffff }))).toBe('EOPNOTSUPP');
    await fe.call('SET_PROTOCOL_FEATURES', DEFAULT_PROTOCOL_FEATURES);
    expect((await fe.call('PASID_ALLOC', { min: 1, max: 0xfffff })).pasid).toBeGreaterThan(0);
    expect(h.snapshot().vms.map((v) => v.name)).toEqual(['reneg']); // the VM stayed
  });

  it('§12: domain 0 starts empty (DMA faults until the peer maps its RAM); DMA_UNMAP of an unknown domain is ENOENT', async () => {
    const h = host();
    const g = await TestGuest.start({ name: 'empty', connect: h.connector(), backing: 'inproc', quota: 4, devices: [{ rid: 0x18, caps: 0 }], mapRam: false });
    open.push(g);
    const before = await g.read(0x18, 0x2345n, 16);
    expect(before.status).toBe(1); // FAULT
    expect(before.reason).toBe(0x79);
    expect(before.fault_addr).toBe(0x2345n); // §10.11: exact, not page-granular
    await g.fe.call('DMA_MAP', { domain: 0, flags: 3, iova: 0n, gpa: 0n, size: 0x10000n });
    expect((await g.read(0x18, 0x2345n, 16)).status).toBe(0);
    expect(await errnoOf(g.fe.call('DMA_UNMAP', { domain: 7, iova: 0n, size: 0x1000n }))).toBe('ENOENT');
  });
});
