/**
 * The uAPI experiment (src/app/experiment/uapi/) without processes: the wire tap's header
 * scanner and frame classes (on synthetic frames and on a real front-end ↔ host conversation
 * over the in-memory transport), the runner's A/B alternation, failure handling and per-op
 * figures against a fake environment, and well-formed output files (CSV, SVG as XML, Markdown).
 */
import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  runUapiExperiment, WireCounter, HeaderScanner, diffCounts, summarize, UAPI_OPS, UAPI_OP_COLUMNS, UAPI_MESSAGE_COLUMNS, UAPI_SAMPLE_COLUMNS,
  UAPI_SUMMARY_SECTIONS, type Uapi, type UapiEnv, type UapiOp, type UapiVm, type WireCounts,
} from '../../../../../src/app/experiment/uapi/index.js';
import { runUapiExperimentOn } from '../../../../../src/app/experiment/uapi/runner.js';
import { requireUapi } from '../../../../../src/app/experiment/uapi/env.js';
import { writeHeader, VHOST_USER_HDR_SIZE, VHOST_USER_REPLY_MASK } from '../../../../../vhost/wire/header.js';
import { FrontendClient, DEFAULT_PROTOCOL_FEATURES, FrontendMessages, BackendMessages, type Transport, type TransportSink } from '../../../../../vhost/index.js';
import { HostServer } from '../../../../../host/server/index.js';
import { expectCsvTables, parseXml } from './xml-check.js';
import { isVsvaError } from '../../../../../src/errors.js';

/** The errno-style code of the VsvaError `p` must reject with. */
async function expectedErrnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isVsvaError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a rejection');
}

function frame(code: number, flags: number, payload = 0): Uint8Array {
  const b = new Uint8Array(VHOST_USER_HDR_SIZE + payload).fill(0xee, VHOST_USER_HDR_SIZE);
  writeHeader(b, 0, code, flags, payload);
  return b;
}

/** A transport that records writes and lets the test deliver bytes. */
class FakeTransport implements Transport {
  sink: TransportSink | null = null;
  writes: { data: Uint8Array; fds?: readonly number[] }[] = [];
  closed = false;
  readonly label = 'fake';
  readonly carriesFds = true;
  reading = true;
  start(sink: TransportSink): void {
    this.sink = sink;
  }
  write(data: Uint8Array, fds?: readonly number[]): void {
    this.writes.push(fds ? { data, fds } : { data });
  }
  setReading(on: boolean): void {
    this.reading = on;
  }
  close(): void {
    this.closed = true;
  }
}

describe('wire tap', () => {
  it('reads headers across any chunking and skips payloads', () => {
    const seen: [number, number][] = [];
    const scan = new HeaderScanner((code, flags) => seen.push([code, flags]));
    const bytes = Buffer.concat([frame(0x10, 1, 5), frame(0x11, 1 | VHOST_USER_REPLY_MASK, 0), frame(0x205, 1, 40)]);
    for (const size of [1, 3, 7, 12, 13, bytes.length]) {
      seen.length = 0;
      for (let i = 0; i < bytes.length; i += size) scan.push(bytes.subarray(i, i + size));
      expect(seen, `chunks of ${size}`).toEqual([[0x10, 1], [0x11, 5], [0x205, 1]]);
    }
  });

  it('classifies frames by direction and REPLY flag, names them, and passes everything through', () => {
    const counter = new WireCounter();
    const inner = new FakeTransport();
    const t = counter.tap(inner);
    const got: Uint8Array[] = [];
    t.start({ data: (c) => got.push(c), close: () => {} });
    const ALLOC = FrontendMessages.PASID_ALLOC.code;
    const PRQ = BackendMessages.PAGE_REQUEST.code;
    const alloc = frame(ALLOC, 1 | 8, 8); // with NEED_REPLY
    t.write(alloc, [7]);
    inner.sink!.data(Buffer.from(frame(ALLOC, 1 | VHOST_USER_REPLY_MASK, 4)));
    inner.sink!.data(Buffer.from(frame(PRQ, 1 | 8, 16))); // on the backend channel
    t.write(frame(PRQ, 1 | VHOST_USER_REPLY_MASK, 8)); // its ack
    inner.sink!.data(Buffer.from(frame(0x7777, 1, 0))); // unknown code
    expect(inner.writes[0]).toEqual({ data: alloc, fds: [7] });
    expect(got).toHaveLength(3);
    expect(t.carriesFds).toBe(true);
    t.setReading(false);
    expect(inner.reading).toBe(false);
    t.close();
    expect(inner.closed && t.closed).toBe(true);
    const c = counter.snapshot();
    expect(c.total).toBe(5);
    expect(c.byClass).toEqual({ request: 1, reply: 1, 'backend-request': 2, 'backend-reply': 1 });
    expect(c.byName).toEqual({ 'request PASID_ALLOC': 1, 'reply PASID_ALLOC': 1, 'backend-request PAGE_REQUEST': 1, 'backend-reply PAGE_REQUEST': 1, 'backend-request 0x7777': 1 });
    const before = counter.snapshot();
    t.write(frame(ALLOC, 1, 8));
    expect(diffCounts(counter.snapshot(), before)).toEqual({ total: 1, byClass: { request: 1, reply: 0, 'backend-request': 0, 'backend-reply': 0 }, byName: { 'request PASID_ALLOC': 1 } });
  });

  it('counts a real conversation: handshake, VM_SETUP and the backend channel', async () => {
    const host = new HostServer({ graceMs: 0 });
    const counter = new WireCounter();
    const connect = host.connector();
    const fe = await FrontendClient.connect({ connect: async () => counter.tap(await connect()) });
    try {
      await fe.handshake({ want: DEFAULT_PROTOCOL_FEATURES });
      await fe.setupVm({ name: 'tap', pasid_quota: 4, flags: 1, session_token: new Uint8Array(16) });
      const before = counter.snapshot();
      await fe.call('PASID_ALLOC', { min: 1, max: 100 });
      const d = diffCounts(counter.snapshot(), before);
      expect(d.byName).toEqual({ 'request PASID_ALLOC': 1, 'reply PASID_ALLOC': 1 });
      const all = counter.snapshot();
      expect(all.byName['request BACKEND_ATTACH']).toBe(1);
      expect(all.byName['request VM_SETUP']).toBe(1);
      expect(all.byClass.request).toBe(all.byClass.reply); // every request of this run wants a reply
    } finally {
      fe.close();
      await host.close();
    }
  });
});

/**
 * A fake VM: each operation "sends" a fixed set of frames through its counter and takes a
 * fixed time; iteration `failAt` fails at `failOp`. Records the order in which VMs ran.
 */
function fakeEnv(opts: { failAt?: number; failOp?: UapiOp; cannotStart?: Uapi; log?: string[] } = {}): UapiEnv {
  const frames: Record<Uapi, Partial<Record<UapiOp, [cls: 'request' | 'reply' | 'backend-request' | 'backend-reply', name: string][]>>> = {
    'vfio-sva': {
      alloc: [['request', 'PASID_ALLOC'], ['reply', 'PASID_ALLOC']],
      bind: [['request', 'BIND_GPASID'], ['reply', 'BIND_GPASID']],
      invalidate: [['request', 'CACHE_INVALIDATE'], ['reply', 'CACHE_INVALIDATE']],
      fault: [['request', 'DEVICE_DMA'], ['backend-request', 'PAGE_REQUEST'], ['backend-reply', 'PAGE_REQUEST'], ['request', 'PAGE_RESPONSE'], ['reply', 'PAGE_RESPONSE'], ['reply', 'DEVICE_DMA']],
      unbind: [['request', 'UNBIND_GPASID'], ['reply', 'UNBIND_GPASID']],
    },
    iommufd: {
      alloc: [['request', 'PASID_ALLOC'], ['reply', 'PASID_ALLOC']],
      bind: [['request', 'IOMMUFD_HWPT_ALLOC'], ['reply', 'IOMMUFD_HWPT_ALLOC'], ['request', 'IOMMUFD_DEVICE_ATTACH'], ['reply', 'IOMMUFD_DEVICE_ATTACH']],
      invalidate: [['request', 'IOMMUFD_HWPT_INVALIDATE'], ['reply', 'IOMMUFD_HWPT_INVALIDATE']],
      fault: [['request', 'DEVICE_DMA'], ['backend-request', 'IOMMUFD_FAULT'], ['backend-reply', 'IOMMUFD_FAULT'], ['request', 'IOMMUFD_FAULT_RESPOND'], ['reply', 'DEVICE_DMA'], ['reply', 'IOMMUFD_FAULT_RESPOND']],
      unbind: [['request', 'IOMMUFD_DEVICE_DETACH'], ['reply', 'IOMMUFD_DEVICE_DETACH'], ['request', 'IOMMUFD_DESTROY'], ['reply', 'IOMMUFD_DESTROY']],
    },
  };
  return {
    hostKind: 'fake',
    viommu: 'vtd',
    async startHost() {
      return { socket: '/fake', close: async () => {} };
    },
    async startVm(_h, uapi, name) {
      if (uapi === opts.cannotStart) throw new Error(`${uapi} is not available here`);
      const counter = new WireCounter();
      let it = -1;
      const vm: UapiVm = {
        uapi,
        name,
        wire: (): WireCounts => counter.snapshot(),
        async prepare(i) {
          it = i;
          opts.log?.push(`${uapi}:${i}`);
        },
        async run(op) {
          if (it === opts.failAt && op === opts.failOp) throw Object.assign(new Error('refused'), { code: 'ENOSPC' });
          for (const [cls, n] of frames[uapi][op] ?? []) counter.count(cls, n);
        },
        async settle() {},
        async finish() {},
        async close() {},
      };
      return vm;
    },
  };
}

describe('uapi experiment runner', () => {
  it('alternates the uAPIs round by round and counts each operation’s messages', async () => {
    const log: string[] = [];
    const r = await runUapiExperimentOn(fakeEnv({ log }), { iterations: 4, rounds: 2 });
    expect(log).toEqual(['vfio-sva:0', 'vfio-sva:1', 'iommufd:0', 'iommufd:1', 'iommufd:2', 'iommufd:3', 'vfio-sva:2', 'vfio-sva:3']);
    expect(r.samples).toHaveLength(2 * 4 * UAPI_OPS.length);
    const op = (u: Uapi, o: UapiOp) => r.ops.find((x) => x.uapi === u && x.op === o)!;
    expect(op('vfio-sva', 'bind')).toMatchObject({ samples: 4, failed: 0, messages_per_op: 2, messages_min: 2, messages_max: 2, requests_per_op: 1, request_names: 'BIND_GPASID×1' });
    expect(op('iommufd', 'bind')).toMatchObject({ messages_per_op: 4, requests_per_op: 2, request_names: 'IOMMUFD_DEVICE_ATTACH×1 IOMMUFD_HWPT_ALLOC×1' });
    expect(op('iommufd', 'fault')).toMatchObject({ messages_per_op: 6, backend_requests_per_op: 1, backend_replies_per_op: 1, requests_per_op: 2 });
    expect(op('vfio-sva', 'dma')).toMatchObject({ messages_per_op: 0 });
    expect(op('vfio-sva', 'bind').p50_us).toBeGreaterThanOrEqual(0);
    expect(r.messages.find((m) => m.uapi === 'iommufd' && m.op === 'fault' && m.class === 'backend-request')).toEqual({ uapi: 'iommufd', op: 'fault', class: 'backend-request', message: 'IOMMUFD_FAULT', per_op: 1 });
    expect(r.failures).toEqual([]);
  });

  it('records a failed operation, skips the rest of that iteration and goes on', async () => {
    const r = await runUapiExperimentOn(fakeEnv({ failAt: 1, failOp: 'invalidate' }), { iterations: 3, rounds: 1, uapis: ['iommufd'] });
    expect(r.failures).toEqual([{ uapi: 'iommufd', op: 'invalidate', iteration: 1, status: 'ENOSPC' }]);
    const op = (o: UapiOp) => r.ops.find((x) => x.uapi === 'iommufd' && x.op === o)!;
    expect(op('invalidate')).toMatchObject({ samples: 2, failed: 1 });
    expect(op('fault').samples).toBe(2); // iteration 1 stopped before its fault
    expect(op('bind').samples).toBe(3);
    expect(r.ops.some((x) => x.uapi === 'vfio-sva')).toBe(false);
  });

  it('reports a uAPI whose VM cannot start, and measures the other', async () => {
    const r = await runUapiExperimentOn(fakeEnv({ cannotStart: 'iommufd' }), { iterations: 2 });
    expect(r.skipped).toEqual([{ uapi: 'iommufd', reason: 'iommufd is not available here' }]);
    expect(r.ops.every((x) => x.uapi === 'vfio-sva')).toBe(true);
    expect(r.rounds).toBe(2);
  });

  it('refuses bad iteration counts, rounds and uAPIs (EINVAL)', async () => {
    expect(await expectedErrnoOf(runUapiExperimentOn(fakeEnv(), { iterations: 0 }))).toBe('EINVAL');
    expect(await expectedErrnoOf(runUapiExperimentOn(fakeEnv(), { iterations: 2, rounds: 3 }))).toBe('EINVAL');
    expect(await expectedErrnoOf(runUapiExperimentOn(fakeEnv(), { iterations: 2.5 }))).toBe('EINVAL');
    expect(await expectedErrnoOf(runUapiExperimentOn(fakeEnv(), { iterations: 2, uapis: [] }))).toBe('EINVAL');
    expect(await expectedErrnoOf(runUapiExperimentOn(fakeEnv(), { iterations: 2, uapis: ['vfio' as Uapi] }))).toBe('EINVAL');
  });

  it('shows a message count that varies as its range', () => {
    const s = (messages: number) => ({ uapi: 'iommufd' as const, op: 'invalidate' as const, iteration: 0, latency_us: 10, messages, requests: messages / 2, replies: messages / 2, backend_requests: 0, backend_replies: 0 });
    const [row] = summarize([s(2), s(4), s(2)], [], []);
    expect(row).toMatchObject({ messages_per_op: 8 / 3, messages_min: 2, messages_max: 4, p50_us: 10 });
  });
});

describe('uapi experiment environment', () => {
  it('measures a VM only on the uAPI it asked for', async () => {
    const snap = { pasidBits: 20, capacity: { total: 1, available: 1 }, vms: [{ name: 'a', connected: true, set: { quota: 1, used: 0 }, devices: [], pasids: [], uapi: 'iommufd' as const }, { name: 'old', connected: true, set: { quota: 1, used: 0 }, devices: [], pasids: [] }] };
    expect(() => requireUapi(snap, 'a', 'iommufd')).not.toThrow();
    expect(() => requireUapi(snap, 'old', 'vfio-sva')).not.toThrow(); // no `uapi`: an older host, VFIO SVA
    expect(await expectedErrnoOf(Promise.resolve().then(() => requireUapi(snap, 'a', 'vfio-sva')))).toBe('EOPNOTSUPP');
    expect(await expectedErrnoOf(Promise.resolve().then(() => requireUapi(snap, 'old', 'iommufd')))).toBe('EOPNOTSUPP');
    expect(await expectedErrnoOf(Promise.resolve().then(() => requireUapi(snap, 'nope', 'iommufd')))).toBe('ENOENT');
  });
});

describe('uapi experiment report', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it('writes CSV, SVG and Markdown that describe the run', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-uapi-'));
    dirs.push(out);
    const { results, files } = await runUapiExperiment({ out, iterations: 6, rounds: 2, env: fakeEnv({ failAt: 2, failOp: 'fault' }), progressStream: null });
    expect(files.sort()).toEqual(['results.json', 'summary.md', 'uapi-latency.svg', 'uapi-messages.csv', 'uapi-messages.svg', 'uapi-ops.csv', 'uapi-samples.csv']);
    expectCsvTables(out, [
      ['uapi-ops.csv', UAPI_OP_COLUMNS, results.ops.length],
      ['uapi-messages.csv', UAPI_MESSAGE_COLUMNS, results.messages.length],
      ['uapi-samples.csv', UAPI_SAMPLE_COLUMNS, results.samples.length],
    ]);
    expect(results.ops).toHaveLength(2 * UAPI_OPS.length);
    for (const svg of ['uapi-latency.svg', 'uapi-messages.svg']) {
      const x = parseXml(fs.readFileSync(path.join(out, svg), 'utf8'));
      expect(x.elements[0]!.name).toBe('svg');
      const text = x.texts.join(' ');
      expect(text).toContain('VFIO SVA');
      expect(text).toContain('iommufd');
      expect(text).toContain('bind');
    }
    expect(parseXml(fs.readFileSync(path.join(out, 'uapi-latency.svg'), 'utf8')).texts.join(' ')).toContain('iommufd p99');
    const md = fs.readFileSync(path.join(out, 'summary.md'), 'utf8');
    const headings = [...md.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
    expect(headings).toEqual([...UAPI_SUMMARY_SECTIONS]);
    expect(md).toContain('- bind: 2 vs 4 messages (VFIO SVA vs iommufd; guest requests BIND_GPASID×1 vs IOMMUFD_DEVICE_ATTACH×1 IOMMUFD_HWPT_ALLOC×1)');
    expect(md).toContain('- fault: 6 vs 6 messages');
    expect(md).toContain('2 operation(s) failed');
    expect(md).toMatch(/\| VFIO SVA \| fault \| 2 \| ENOSPC \|/);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')).iterations).toBe(6);
  });

  it('writes no charts and says so when nothing ran', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-uapi-'));
    dirs.push(out);
    const env = fakeEnv({ failAt: 0, failOp: 'alloc' });
    const { files } = await runUapiExperiment({ out, iterations: 1, env, progressStream: null });
    expect(files.some((f) => f.endsWith('.svg'))).toBe(false);
    expect(fs.readFileSync(path.join(out, 'summary.md'), 'utf8')).toContain('2 operation(s) failed');
  });
});
