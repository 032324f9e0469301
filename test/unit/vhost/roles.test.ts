import { describe, it, expect } from 'vitest';
import {
  BackendServer, FrontendClient, createMemoryPair, ProtocolFeature, type HandlerTable, type Session, type BackendEvent,
  REPLY_FLAGS, writeHeader,
} from '../../../vhost/index.js';
import { Errno, VsvaError } from '../../../src/errors.js';
import { RawPeer } from './raw-peer.js';
import { scaled } from '../../support/slowdown.js';

const TOKEN = new Uint8Array(16).fill(0xab);

function handlers(extra: HandlerTable<Session> = {}): HandlerTable<Session> {
  return {
    VM_SETUP: (req) => ({ vm_id: 7, flags: req.session_token.some((b) => b) ? 1 : 0, session_token: TOKEN }),
    PASID_ALLOC: (r) => ({ pasid: r.min }),
    ...extra,
  };
}

async function start(extra: HandlerTable<Session> = {}) {
  const server = new BackendServer({ handlers: () => handlers(extra) });
  const sessions: Session[] = [];
  server.onSession((s) => sessions.push(s));
  const fe = await FrontendClient.connect({ connect: server.memoryConnector(), timeoutMs: scaled(2000) });
  await fe.handshake();
  return { server, fe, sessions };
}

const vmReq = { name: 'vm0', pasid_quota: 16, flags: 1, session_token: new Uint8Array(16) };

describe('front-end client ↔ back-end server (in-memory)', () => {
  it('handshake negotiates REPLY_ACK, BACKEND_REQ and VSVA; the session is announced', async () => {
    const { fe, sessions, server } = await start();
    expect(fe.replyAck).toBe(true);
    expect(fe.protocolFeatures & ProtocolFeature.VSVA).toBe(ProtocolFeature.VSVA);
    expect(sessions).toHaveLength(1);
    expect(sessions[0]!.dispatcher.owner).toBe(true);
    fe.close();
    await server.close();
  });

  it('pipelines requests and resolves each with its own reply, in order', async () => {
    const { fe, server } = await start({ PASID_ALLOC: async (r) => (r.min % 3 === 0 ? new Promise((res) => setTimeout(() => res({ pasid: r.min }), 2)) : { pasid: r.min }) });
    const ps = Array.from({ length: 500 }, (_, i) => fe.call('PASID_ALLOC', { min: i, max: 0xfffff }));
    expect(fe.outstanding).toBe(500);
    const replies = await Promise.all(ps);
    expect(replies.map((r) => r.pasid)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    fe.close();
    await server.close();
  });

  it('back-end errors reach the caller as VsvaError with the errno', async () => {
    const { fe, server } = await start({ PASID_FREE: () => { throw new VsvaError('ENOENT', 'none'); } });
    await expect(fe.call('PASID_FREE', { min: 1, max: 2 })).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fe.call('GET_NESTING_INFO')).rejects.toMatchObject({ code: 'ENOTTY' });
    // Local validation: the client refuses to send what the back-end would reject.
    await expect(fe.call('PASID_ALLOC', { min: 9, max: 1 })).rejects.toMatchObject({ code: 'EINVAL' });
    expect((await fe.call('PASID_ALLOC', { min: 4, max: 5 })).pasid).toBe(4);
    fe.close();
    await server.close();
  });

  it('a request without a reply in time fails with ETIMEDOUT and later replies still match', async () => {
    let release!: () => void;
    const { fe, server } = await start({
      DOMAIN_ALLOC: () => new Promise((res) => (release = () => res({ domain: 3 }))),
    });
    const slow = fe.call('DOMAIN_ALLOC', {}, { timeoutMs: 30 });
    const next = fe.call('PASID_ALLOC', { min: 2, max: 3 });
    await expect(slow).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    release();
    expect((await next).pasid).toBe(2);
    fe.close();
    await server.close();
  });

  it('backend channel: attach with the VM_SETUP token, FAULT / PAGE_REQUEST / PASID_FREED delivered and acked', async () => {
    const { fe, server, sessions } = await start();
    const reply = await fe.setupVm(vmReq);
    expect(reply).toMatchObject({ vm_id: 7, flags: 0 });
    expect(fe.backendAttached).toBe(true);
    const got: BackendEvent[] = [];
    fe.onBackendMessage((ev) => {
      got.push(ev);
      if (ev.name === 'PASID_FREED') throw new VsvaError('EBUSY', 'guest still uses it');
    });
    const s = sessions[0]!;
    await new Promise((r) => setImmediate(r));
    expect(s.backendAttached).toBe(true);
    await s.send('FAULT', { rid: 0x18, flags: 1 | 2, pasid: 5, reason: 0x20, addr: 0x1234n }, { needReply: true });
    await s.send('PAGE_REQUEST', { rid: 0x18, prgi: 3, flags: 1 | 2 | 4, pasid: 5, addr: 0x5000n });
    await expect(s.send('PASID_FREED', { pasid: 9, gpasid: 5, flags: 1, reason: 1 }, { needReply: true })).rejects.toMatchObject({ code: 'EBUSY' });
    expect(got.map((e) => e.name)).toEqual(['FAULT', 'PAGE_REQUEST', 'PASID_FREED']);
    expect(got[0]).toEqual({ name: 'FAULT', msg: { rid: 0x18, flags: 3, pasid: 5, reason: 0x20, addr: 0x1234n } });
    fe.close();
    await server.close();
  });

  it('backend channel: unknown token → ENOENT; BACKEND_ATTACH later on a main connection → EINVAL; no channel → ENOTCONN', async () => {
    const { fe, server, sessions } = await start();
    await expect(fe.attachBackendChannel(new Uint8Array(16).fill(1))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fe.call('BACKEND_ATTACH', { session_token: TOKEN })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(sessions[0]!.send('FAULT', { rid: 1, flags: 0, pasid: 0, reason: 1, addr: 0n })).rejects.toMatchObject({ code: 'ENOTCONN' });
    fe.close();
    await server.close();
  });

  it('a resumed session (same token) takes the backend channel over; the closed one is reported', async () => {
    const server = new BackendServer({ handlers: () => handlers() });
    const sessions: Session[] = [];
    server.onSession((s) => sessions.push(s));
    const fe1 = await FrontendClient.connect({ connect: server.memoryConnector() });
    await fe1.handshake();
    await fe1.setupVm(vmReq);
    const closed = new Promise<VsvaError | null>((r) => sessions[0]!.onClose(r));
    fe1.close();
    expect(await closed).toBeNull();
    const fe2 = await FrontendClient.connect({ connect: server.memoryConnector() });
    await fe2.handshake();
    const r = await fe2.setupVm({ ...vmReq, session_token: TOKEN });
    expect(r.flags).toBe(1);
    expect(server.sessions.size).toBe(1);
    fe2.close();
    await server.close();
  });

  it('closing the back-end fails outstanding requests with ECONNRESET; calls after close are ENOTCONN', async () => {
    const { fe, server } = await start({ DOMAIN_ALLOC: () => new Promise(() => {}) });
    const p = fe.call('DOMAIN_ALLOC', {});
    await new Promise((r) => setImmediate(r));
    await server.close();
    await expect(p).rejects.toMatchObject({ code: 'ECONNRESET' });
    await expect(fe.call('GET_FEATURES')).rejects.toMatchObject({ code: 'ENOTCONN' });
  });
});

describe('front-end client: a misbehaving back-end', () => {
  async function clientWithRawBackend() {
    const [a, b] = createMemoryPair('raw');
    const peer = new RawPeer(b);
    const fe = await FrontendClient.connect({ connect: async () => a, timeoutMs: scaled(1000) });
    return { fe, peer };
  }

  function reply(code: number, flags: number, payload: Buffer): Buffer {
    const buf = Buffer.alloc(12 + payload.length);
    writeHeader(buf, 0, code, flags, payload.length);
    payload.copy(buf, 12);
    return buf;
  }

  it('a reply for the wrong request closes the connection with EPROTO and fails every outstanding call', async () => {
    const { fe, peer } = await clientWithRawBackend();
    const p1 = fe.call('GET_FEATURES');
    const p2 = fe.call('GET_PROTOCOL_FEATURES');
    peer.transport.write(reply(15, REPLY_FLAGS, Buffer.alloc(8)));
    await expect(p1).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(p2).rejects.toMatchObject({ code: 'EPROTO' });
    expect(fe.closed).toBe(true);
  });

  it('reply flags other than exactly 0x5 are EPROTO (fatal); a malformed body fails only its call', async () => {
    const { fe, peer } = await clientWithRawBackend();
    const p1 = fe.call('GET_FEATURES');
    peer.transport.write(reply(1, 0xd, Buffer.alloc(8)));
    await expect(p1).rejects.toMatchObject({ code: 'EPROTO' });

    const second = await clientWithRawBackend();
    const q1 = second.fe.call('GET_FEATURES');
    const q2 = second.fe.call('GET_FEATURES');
    second.peer.transport.write(reply(1, REPLY_FLAGS, Buffer.alloc(4)));
    const ok = Buffer.alloc(8);
    ok.writeBigUInt64LE(1n << 30n);
    second.peer.transport.write(reply(1, REPLY_FLAGS, ok));
    await expect(q1).rejects.toMatchObject({ code: 'EPROTO' });
    expect(await q2).toBe(1n << 30n);
    expect(second.fe.closed).toBe(false);
    const e = Buffer.alloc(8);
    e.writeBigInt64LE(-BigInt(Errno.ENOSPC));
    const q3 = second.fe.call('GET_FEATURES');
    second.peer.transport.write(reply(1, REPLY_FLAGS, e));
    await expect(q3).rejects.toMatchObject({ code: 'ENOSPC' });
    second.fe.close();
  });
});
