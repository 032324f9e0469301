/**
 * The soak's protocol fuzz client: the command lists of the frame fuzzer
 * (test/property/fuzz/host-frames.ts — well-formed requests of every message with arbitrary
 * fields biased to live ids, raw frames with arbitrary payloads, byte noise), sent to the real
 * host over its socket, batch after batch. Each batch: a VM of its own (handshake, VM_SETUP, a
 * pf and an ADI with PASID, ATS and PRI; no guest RAM) takes the requests, a second connection
 * the raw frames and noise; both close at the end of the batch.
 *
 * A host bug is an EIO or EPROTO answer or a malformed raw reply (badCode of the fuzz suite);
 * connection losses (the soak restarts the host) and request timeouts are counted apart.
 */
import fc from 'fast-check';
import { FrontendClient, FrontendMessages, DEFAULT_PROTOCOL_FEATURES, DeviceCap, DeviceKind, connectUnix, encodePayload, writeHeader } from '../../vhost/index.js';
import { hostFrameCommands } from '../../test/property/fuzz/host-frames.js';
import { badCode } from '../../test/property/fuzz/world.js';
import { RawPeer } from '../../test/unit/vhost/raw-peer.js';

const CALL_TIMEOUT_MS = 5000;

export interface FuzzCounters {
  batches: number;
  commands: number;
  hostBugs: number;
  timeouts: number;
  connectionLosses: number;
}

function frame(code: number, flags: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  writeHeader(b, 0, code, flags, payload.length);
  b.set(payload, 12);
  return b;
}

export class FuzzClient {
  readonly counters: FuzzCounters = { batches: 0, commands: 0, hostBugs: 0, timeouts: 0, connectionLosses: 0 };
  readonly samples: string[] = [];
  private loop: Promise<void> | null = null;
  private stopping = false;
  private paused = false;
  private busy = false;
  private seq = 0;

  constructor(private readonly socket: string) {}

  start(): void {
    this.loop = this.run();
  }

  async pause(): Promise<void> {
    this.paused = true;
    for (let i = 0; i < 3000 && this.busy; i++) await sleep(10);
  }

  resume(): void {
    this.paused = false;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.paused = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      if (this.paused) {
        await sleep(20);
        continue;
      }
      this.busy = true;
      try {
        await this.batch();
        this.counters.batches++;
      } catch (e) {
        // The batch's VM could not be set up: the host is restarting (or refused: a limit).
        const code = (e as { code?: string }).code;
        if (code === 'EIO' || code === 'EPROTO') this.bug(`setup: ${String(e)}`);
        else this.counters.connectionLosses++;
        await sleep(100);
      } finally {
        this.busy = false;
      }
      await sleep(5);
    }
  }

  private bug(what: string): void {
    this.counters.hostBugs++;
    if (this.samples.length < 20) this.samples.push(what);
  }

  private async batch(): Promise<void> {
    const n = this.seq++;
    const [cmds] = fc.sample(hostFrameCommands, { numRuns: 1, seed: (Math.random() * 2 ** 31) | 0 });
    const fe = await FrontendClient.connect({ path: this.socket, timeoutMs: CALL_TIMEOUT_MS });
    let raw: RawPeer | null = null;
    try {
      await fe.handshake();
      await fe.setupVm({ name: `soak-fz-${process.pid}-${n}`, pasid_quota: 8, flags: 1, session_token: new Uint8Array(16) });
      const caps = DeviceCap.PASID | DeviceCap.ATS | DeviceCap.PRI;
      await fe.call('DEVICE_ADD', { rid: 0x18, kind: DeviceKind.PF, pasid_width: 20, caps });
      await fe.call('DEVICE_ADD', { rid: 0x20, kind: DeviceKind.ADI, pasid_width: 20, caps });
      raw = new RawPeer(await connectUnix(this.socket));
      const feats = Buffer.alloc(8);
      feats.writeBigUInt64LE(DEFAULT_PROTOCOL_FEATURES);
      raw.transport.write(frame(16, 9, feats));
      raw.transport.write(frame(FrontendMessages.VM_SETUP.code, 9, encodePayload(FrontendMessages.VM_SETUP.request, { name: `soak-fzraw-${process.pid}-${n}`, pasid_quota: 4, flags: 1, session_token: new Uint8Array(16) })));
      for (const c of cmds ?? []) {
        this.counters.commands++;
        if (c.kind === 'call') {
          try {
            await (fe.call as (n: string, p: unknown, o?: unknown) => Promise<unknown>)(c.name, c.payload, { timeoutMs: CALL_TIMEOUT_MS });
          } catch (e) {
            const code = (e as { code?: string }).code;
            if (code === 'ETIMEDOUT') this.counters.timeouts++;
            else if (badCode(e) !== null && !(fe.closed && code !== 'EIO')) this.bug(`${c.name}: ${badCode(e)}`);
          }
          if (fe.closed) break;
        } else if (c.kind === 'raw') raw.transport.write(frame(c.code, c.flags, c.payload));
        else raw.transport.write(Buffer.from(c.bytes));
      }
      await raw.settle();
      for (const m of raw.received) if (m.flags !== 5) this.bug(`raw reply with flags 0x${m.flags.toString(16)}`);
      for (const m of raw.received) if (m.payload.length >= 8 && m.payload.readBigInt64LE(0) === -5n) this.bug(`raw request 0x${m.request.toString(16)} answered EIO`);
    } finally {
      fe.close();
      raw?.transport.close();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
