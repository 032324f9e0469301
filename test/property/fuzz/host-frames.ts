/**
 * Fuzzer: protocol frames into a host (docs/reliability.md §5). A fuzzed VM ("fz", a pf and an
 * ADI) sends a random mix of well-formed requests of every message with arbitrary field values
 * (biased towards the small ids that hit live PASIDs, domains and devices), and a second
 * connection sets up its own VM and then sends raw frames (known codes with arbitrary payloads)
 * and byte noise. Per command: the host answers with an errno, never EIO (a host bug), and
 * never a malformed reply; afterwards the world's invariants hold (world.ts).
 */
import fc from 'fast-check';
import { FrontendMessages, type AnySpec } from '../../../vhost/messages/catalogue.js';
import { DEFAULT_PROTOCOL_FEATURES, writeHeader, encodePayload, type FrontendRequestName } from '../../../vhost/index.js';
import { requestArb } from '../vhost/arbitraries.js';
import { RawPeer } from '../../unit/vhost/raw-peer.js';
import { TestGuest } from '../../integration/host/client.js';
import { badCode, type FuzzWorld } from './world.js';
import { scaled } from '../../support/slowdown.js';

/** Requests the fuzzed VM sends (the handshake ones are in too: a second SET_OWNER, …). */
const NAMES = (Object.keys(FrontendMessages) as FrontendRequestName[]).filter((n) => n !== 'BACKEND_ATTACH');

type Cmd =
  | { kind: 'call'; name: FrontendRequestName; payload: unknown }
  | { kind: 'raw'; code: number; flags: number; payload: Uint8Array }
  | { kind: 'noise'; bytes: Uint8Array };

const small = fc.integer({ min: 0, max: 8 });

/** A request payload with its ids pulled towards live objects. */
function callArb(name: FrontendRequestName): fc.Arbitrary<Cmd> {
  const spec = FrontendMessages[name] as AnySpec;
  return fc.tuple(requestArb(spec), small, small, fc.constantFrom(0x18, 0x20, 0x28), fc.boolean()).map(([p, a, b, rid, bias]) => {
    let payload = p;
    if (bias && p !== null && typeof p === 'object') {
      const o = { ...(p as Record<string, unknown>) };
      if ('hpasid' in o) o.hpasid = BigInt(a);
      if ('pasid' in o && typeof o.pasid === 'number') o.pasid = a;
      if ('pasid' in o && typeof o.pasid === 'bigint') o.pasid = BigInt(a);
      if ('min' in o && 'max' in o) Object.assign(o, { min: Math.min(a, b), max: Math.max(a, b) });
      if ('domain' in o) o.domain = b;
      if ('rid' in o) o.rid = rid;
      payload = o;
    }
    return { kind: 'call' as const, name, payload };
  });
}

const rawArb: fc.Arbitrary<Cmd> = fc.record({
  code: fc.constantFrom(...Object.values(FrontendMessages).map((s) => s.code), 0x1234),
  flags: fc.constantFrom(1, 9, 9, 9, 5, 0x19),
  payload: fc.uint8Array({ maxLength: 120 }),
}).map((r) => ({ kind: 'raw' as const, ...r }));

const noiseArb: fc.Arbitrary<Cmd> = fc.uint8Array({ minLength: 1, maxLength: 48 }).map((bytes) => ({ kind: 'noise' as const, bytes }));

export const hostFrameCommands = fc.array(
  fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...NAMES).chain(callArb) },
    { weight: 2, arbitrary: rawArb },
    { weight: 1, arbitrary: noiseArb },
  ),
  { maxLength: 30 },
);

function frame(code: number, flags: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  writeHeader(b, 0, code, flags, payload.length);
  b.set(payload, 12);
  return b;
}

let seq = 0;

/** Run one command list against the world; returns the broken invariants. */
export async function runHostFrames(world: FuzzWorld, cmds: Cmd[]): Promise<string[]> {
  const errs: string[] = [];
  const n = seq++;
  const fz = await TestGuest.start({ name: `fz${n}`, connect: world.host.connector(), backing: 'inproc', quota: 8, devices: [{ rid: 0x18 }, { rid: 0x20, kind: 'adi' }] });
  fz.autoRespond = 0;
  const raw = new RawPeer(await world.host.connector()());
  const feats = Buffer.alloc(8);
  feats.writeBigUInt64LE(DEFAULT_PROTOCOL_FEATURES);
  raw.transport.write(frame(16, 9, feats));
  raw.transport.write(frame(FrontendMessages.VM_SETUP.code, 9, encodePayload(FrontendMessages.VM_SETUP.request, { name: `fzraw${n}`, pasid_quota: 4, flags: 1, session_token: new Uint8Array(16) })));
  try {
    for (const c of cmds) {
      if (c.kind === 'call') {
        try {
          await (fz.fe.call as (n: string, p: unknown, o?: unknown) => Promise<unknown>)(c.name, c.payload, { timeoutMs: scaled(3000) });
        } catch (e) {
          const bad = badCode(e);
          // A rejected local encode (EINVAL) or a connection the fuzz closed is fine; a host bug is not.
          if (bad && !(fz.fe.closed && (e as { code?: string }).code !== 'EIO')) errs.push(`${c.name} ${JSON.stringify(c.payload, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v instanceof Uint8Array ? `[${v.length}]` : v))}: ${bad}`);
        }
      } else if (c.kind === 'raw') {
        raw.transport.write(frame(c.code, c.flags, c.payload));
      } else {
        raw.transport.write(Buffer.from(c.bytes));
      }
    }
    await raw.settle();
    for (const m of raw.received) if (m.flags !== 5) errs.push(`raw reply with flags 0x${m.flags.toString(16)}`);
    for (const m of raw.received) if (m.payload.length >= 8 && m.payload.readBigInt64LE(0) === -5n) errs.push(`raw request 0x${m.request.toString(16)} answered EIO`);
  } finally {
    fz.close();
    raw.transport.close();
  }
  errs.push(...(await world.check(true)));
  return errs;
}
