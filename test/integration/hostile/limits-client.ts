/**
 * Small protocol clients for the hostile-peer tests of access and limits (get-state-scope,
 * limits, connection-floods, half-frames, socket-ownership): a connection that did the
 * handshake, optionally a VM_SETUP, the errno of a call, raw sockets and frame headers.
 */
import fs from 'node:fs';
import net from 'node:net';
import { FrontendClient } from '../../../vhost/roles/frontend.js';
import { ProtocolFeature } from '../../../vhost/wire/features.js';
import { VsvaError } from '../../../src/errors.js';

export const STATE_FEATURES = ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA | ProtocolFeature.VSVA_STATE;

/** Connect to `socket` and do the handshake (GET_STATE negotiated). */
export async function handshaken(socket: string): Promise<FrontendClient> {
  const fe = await FrontendClient.connect({ path: socket });
  await fe.handshake({ require: STATE_FEATURES });
  return fe;
}

/** A connection with a VM named `name` (quota `quota`; 0 = the host's default). */
export async function vmClient(socket: string, name: string, quota = 4): Promise<FrontendClient> {
  const fe = await handshaken(socket);
  await fe.setupVm({ name, pasid_quota: quota, flags: 1, session_token: new Uint8Array(16) });
  return fe;
}

/** The errno a promise rejects with ('ok' when it resolves). */
export async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return e instanceof VsvaError ? e.code : String(e);
  }
}

/** A raw Unix-socket connection (no protocol), connected. */
export function rawConnect(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path: socket });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves once the peer closed `s` (EOF or reset). */
export function closedByPeer(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    s.on('error', () => {});
    s.resume();
    s.once('close', () => resolve());
  });
}

/** A request header (docs/protocol.md §2): code, flags (version 1), payload size. */
export function header(code: number, size: number, flags = 0x1): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(code, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(size, 8);
  return b;
}

/** Resident set size of a process (bytes) from /proc, or null. */
export function rssOf(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}
