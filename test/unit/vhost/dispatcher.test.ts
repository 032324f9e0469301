import { describe, it, expect } from 'vitest';
import {
  BackendDispatcher, createMemoryPair, FrontendMessages, ProtocolFeature, MAX_REQUEST_PAYLOAD, REPLY_FLAGS,
  VHOST_USER_F_PROTOCOL_FEATURES, type HandlerTable,
} from '../../../vhost/index.js';
import { MAX_HELD_REPLIES } from '../../../vhost/roles/dispatcher.js';
import { VsvaError, Errno } from '../../../src/errors.js';
import { RawPeer, status } from './raw-peer.js';
import { waitFor } from '../../support/wait.js';

const ALL = ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA | ProtocolFeature.VSVA_DEVICE_DMA | ProtocolFeature.VSVA_STATE | ProtocolFeature.VSVA_IOMMUFD;
const V = 0x1;
const NEED = 0x9;

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

function pasidRange(min: number, max: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(min, 0);
  b.writeUInt32LE(max, 4);
  return b;
}

function setup(handlers: HandlerTable<undefined> = {}) {
  const [a, b] = createMemoryPair('test');
  const be = new BackendDispatcher(b, { handlers });
  const peer = new RawPeer(a);
  return { be, peer };
}

/** Negotiate everything with REPLY_ACK (1 ack expected). */
async function negotiate(peer: RawPeer): Promise<void> {
  peer.send(16, NEED, u64(ALL));
  await peer.waitFor(peer.received.length + 1);
}

describe('back-end dispatcher: handshake', () => {
  it('answers GET_FEATURES and GET_PROTOCOL_FEATURES, acks SET_PROTOCOL_FEATURES asking for REPLY_ACK', async () => {
    const { be, peer } = setup();
    peer.send(1, V);
    peer.send(15, V);
    peer.send(16, NEED, u64(ALL));
    peer.send(3, NEED);
    peer.send(2, NEED, u64(VHOST_USER_F_PROTOCOL_FEATURES));
    const r = await peer.waitFor(5);
    expect(r.map((m) => [m.request, m.flags, m.payload.length])).toEqual([[1, 5, 8], [15, 5, 8], [16, 5, 8], [3, 5, 8], [2, 5, 8]]);
    expect(r[0]!.payload.readBigUInt64LE(0)).toBe(VHOST_USER_F_PROTOCOL_FEATURES);
    expect(r[1]!.payload.readBigUInt64LE(0)).toBe(ALL);
    expect(r.slice(2).map(status)).toEqual([0, 0, 0]);
    expect(be.ackedProtocolFeatures).toBe(ALL);
    expect(be.owner).toBe(true);
  });

  it('without REPLY_ACK, SET_* are not answered even with NEED_REPLY', async () => {
    const { be, peer } = setup();
    peer.send(16, NEED, u64(ProtocolFeature.BACKEND_REQ));
    peer.send(3, NEED);
    peer.send(1, V);
    const r = await peer.waitFor(1);
    await peer.settle();
    expect(r.map((m) => m.request)).toEqual([1]);
    expect(be.owner).toBe(true);
  });

  it('refuses protocol features that were not offered or break the VSVA rule, state unchanged', async () => {
    const { be, peer } = setup();
    peer.send(16, NEED, u64(ProtocolFeature.REPLY_ACK | (1n << 60n)));
    peer.send(16, NEED, u64(ProtocolFeature.REPLY_ACK | ProtocolFeature.VSVA));
    const r = await peer.waitFor(2);
    expect(r.map(status)).toEqual([-Errno.EOPNOTSUPP, -Errno.EINVAL]);
    expect(be.ackedProtocolFeatures).toBe(0n);
  });

  it('SET_OWNER twice is EBUSY; SET_FEATURES with bits not offered is EOPNOTSUPP', async () => {
    const { be, peer } = setup();
    await negotiate(peer);
    peer.send(3, NEED);
    peer.send(3, NEED);
    peer.send(2, NEED, u64(1n << 33n));
    const r = await peer.waitFor(4);
    expect(r.slice(1).map(status)).toEqual([0, -Errno.EBUSY, -Errno.EOPNOTSUPP]);
    expect(be.ackedFeatures).toBe(0n);
  });
});

describe('back-end dispatcher: per-request errors keep the connection usable', () => {
  it('unknown code → ENOTTY with NEED_REPLY, silently dropped without it', async () => {
    const { be, peer } = setup();
    peer.send(0x777, NEED, Buffer.alloc(5));
    peer.send(0x778, V, Buffer.alloc(5));
    peer.send(1, V);
    const r = await peer.waitFor(2);
    expect(r[0]!.request).toBe(0x777);
    expect(status(r[0]!)).toBe(-Errno.ENOTTY);
    expect(r[1]!.request).toBe(1);
    expect(be.closed).toBe(false);
  });

  it('vSVA message before negotiation → EOPNOTSUPP; wrong size → EINVAL; reserved → EOPNOTSUPP; no handler → ENOTTY', async () => {
    let calls = 0;
    const { be, peer } = setup({ PASID_ALLOC: (r) => (calls++, { pasid: r.min }) });
    peer.send(0x109, NEED, pasidRange(1, 10));
    await peer.waitFor(1);
    await negotiate(peer);
    peer.send(0x109, NEED, pasidRange(1, 10).subarray(0, 7));
    const dmaUnmap = Buffer.alloc(24);
    dmaUnmap.writeUInt32LE(1, 4); // reserved
    dmaUnmap.writeBigUInt64LE(4096n, 16);
    peer.send(0x108, NEED, dmaUnmap);
    peer.send(0x108, NEED, Buffer.alloc(24));
    peer.send(0x109, NEED, pasidRange(3, 10));
    const r = await peer.waitFor(6);
    expect(status(r[0]!)).toBe(-Errno.EOPNOTSUPP);
    expect(r.slice(2).map((m) => [m.request, status(m)])).toEqual([
      [0x109, -Errno.EINVAL], [0x108, -Errno.EOPNOTSUPP], [0x108, -Errno.EINVAL], [0x109, 0],
    ]);
    expect(r[5]!.payload.readUInt32LE(8)).toBe(3);
    expect(calls).toBe(1); // no handler ran for a rejected request
    expect(be.closed).toBe(false);
  });

  it('handler VsvaError → its errno; unexpected exception → EIO; unencodable reply → EIO', async () => {
    const { be, peer } = setup({
      PASID_ALLOC: (r) => {
        if (r.min === 1) throw new VsvaError('ENOSPC', 'quota');
        if (r.min === 2) throw new TypeError('bug');
        if (r.min === 3) return Promise.reject(new VsvaError('EPERM', 'async'));
        return { pasid: 0x10_0000 }; // does not fit 20 bits
      },
    });
    await negotiate(peer);
    for (const m of [1, 2, 3, 4]) peer.send(0x109, NEED, pasidRange(m, 10));
    const r = await peer.waitFor(5);
    expect(r.slice(1).map(status)).toEqual([-Errno.ENOSPC, -Errno.EIO, -Errno.EPERM, -Errno.EIO]);
    expect(r.slice(1).every((m) => m.payload.length === 8 && m.flags === REPLY_FLAGS)).toBe(true);
    expect(be.closed).toBe(false);
  });
});

describe('back-end dispatcher: replies in request order while handlers are pending', () => {
  it('keeps dispatching later requests while an earlier one awaits a later PAGE_RESPONSE', async () => {
    let release!: () => void;
    const order: string[] = [];
    const { peer } = setup({
      DEVICE_DMA: async () => {
        order.push('dma start');
        await new Promise<void>((r) => (release = r));
        order.push('dma done');
        return { status: 0, reason: 0, flags: 0, pasid: 0, fault_addr: 0n };
      },
      PASID_ALLOC: (r) => (order.push(`alloc ${r.min}`), { pasid: r.min }),
      PAGE_RESPONSE: () => {
        order.push('page response');
        release();
      },
    });
    await negotiate(peer);
    const dma = Buffer.alloc(32);
    dma.writeUInt32LE(8, 12); // READ 8 bytes
    peer.send(0x10f, NEED, dma);
    peer.send(0x109, NEED, pasidRange(7, 9));
    const pr = Buffer.alloc(24);
    peer.send(0x10e, NEED, pr);
    peer.send(0x109, NEED, pasidRange(8, 9));
    const r = await peer.waitFor(5);
    expect(order).toEqual(['dma start', 'alloc 7', 'page response', 'alloc 8', 'dma done']);
    expect(r.slice(1).map((m) => m.request)).toEqual([0x10f, 0x109, 0x10e, 0x109]);
    expect(r.slice(1).map(status)).toEqual([0, 0, 0, 0]);
  });
});

describe('back-end dispatcher: back-pressure while replies are held back', () => {
  it('stops reading past MAX_HELD_REPLIES owed replies and resumes, in order, once the pending one completes', async () => {
    let release!: () => void;
    const { be, peer } = setup({
      DEVICE_DMA: async () => {
        await new Promise<void>((r) => (release = r));
        return { status: 0, reason: 0, flags: 0, pasid: 0, fault_addr: 0n };
      },
      PASID_ALLOC: (r) => ({ pasid: r.min }),
    });
    await negotiate(peer);
    const dma = Buffer.alloc(32);
    dma.writeUInt32LE(8, 12); // READ 8 bytes
    peer.send(0x10f, NEED, dma);
    const extra = MAX_HELD_REPLIES * 2;
    for (let i = 1; i <= extra; i++) peer.send(0x109, NEED, pasidRange(i, i));
    // Reading stops once the owed replies pass the cap: not all requests were taken in.
    await waitFor(() => be.dispatcher.paused, { what: 'dispatcher paused' });
    expect(be.dispatcher.received).toBeLessThan(1 + 1 + extra);
    expect(be.dispatcher.pendingReplies).toBeLessThanOrEqual(MAX_HELD_REPLIES + 1);
    release();
    const r = await peer.waitFor(1 + 1 + extra);
    expect(be.dispatcher.paused).toBe(false);
    expect(r[1]!.request).toBe(0x10f);
    expect(r.slice(2).map((m) => m.payload.readUInt32LE(8))).toEqual(Array.from({ length: extra }, (_, i) => i + 1));
  });
});

describe('back-end dispatcher: fatal errors close the connection without a reply', () => {
  const cases: [string, (peer: RawPeer, code: number) => void, string][] = [
    ['bad version', (p, c) => p.send(c, 0x2), 'EPROTO'],
    ['version 0', (p, c) => p.send(c, 0x0), 'EPROTO'],
    ['reserved flag bit', (p, c) => p.send(c, 0x11), 'EPROTO'],
    ['REPLY set on a request', (p, c) => p.send(c, 0x5), 'EPROTO'],
    ['size over the limit', (p, c) => p.send(c, 0x1, new Uint8Array(0), MAX_REQUEST_PAYLOAD + 1), 'E2BIG'],
  ];
  for (const [what, send, code] of cases) {
    it(`${what} → ${code} for every request code`, async () => {
      for (const spec of Object.values(FrontendMessages)) {
        const { be, peer } = setup();
        peer.send(1, V);
        send(peer, spec.code);
        peer.send(15, V);
        await peer.waitFor(3);
        await peer.settle();
        expect(peer.closed).toBe(true);
        expect(peer.received.map((m) => m.request)).toEqual([1]); // the earlier request was answered
        expect(be.conn.reason?.code).toBe(code);
      }
    });
  }
});
