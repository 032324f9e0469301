/**
 * The back-end server: accepts connections (on a Unix socket path, or in-memory ones handed to
 * `accept`), tells main connections from backend channels by their first message, and gives
 * the host service one Session per main connection (docs/protocol.md §9).
 *
 * - A connection whose first request is BACKEND_ATTACH is a backend channel: its token must be
 *   one a VM_SETUP on a still-open main connection returned; on success the connection carries
 *   back-end → front-end requests of that session from then on (Session.send). Otherwise the
 *   error is replied and the connection stays a (useless) main-less channel until the peer
 *   closes it.
 * - Any other first request makes it a main connection: a Session is created, the host
 *   service's `handlers(session)` table is installed, and 'session' listeners run.
 * - The server learns a session's token from the VM_SETUP reply the host service returns
 *   (the handler is wrapped); a resumed session (same token) takes the token over.
 * - Connections accepted on the Unix socket are admitted, watched and bounded by the
 *   connection limits (connection-limits.ts, vhost/transport/guarded.ts); in-memory ones (the
 *   host's own process) are not.
 */
import { VsvaError, fail } from '../../src/errors.js';
import { childLogger, type Logger } from '../../src/log.js';
import { MAX_REQUEST_PAYLOAD } from '../wire/header.js';
import { ProtocolFeature } from '../wire/features.js';
import { BackendMessages, type BackendMessageOf, type BackendRequestName } from '../messages/catalogue.js';
import type { VmSetupReply } from '../messages/vm.js';
import { createMemoryPair } from '../transport/memory.js';
import type { Transport } from '../transport/transport.js';
import { listenUnix, ownIdentity, type PeerIdentity, type UnixListener } from '../transport/unix.js';
import { GuardedTransport } from '../transport/guarded.js';
import {
  ConnectionAdmission, ConnectionSweep, refuseConnection, resolveConnectionLimits, type ConnectionLimits,
} from './connection-limits.js';
import { BackendDispatcher, type HandlerTable } from './backend.js';
import { Connection } from './connection.js';
import { Requester, type CallOptions } from './requester.js';

export interface SendOptions extends CallOptions {
  /** Ask for an ack (needs REPLY_ACK): the promise settles with the front-end's answer. */
  needReply?: boolean;
}

/** One main connection (one guest) as the host service sees it. */
export class Session {
  /** The token VM_SETUP returned (null until a VM_SETUP succeeded). */
  token: Uint8Array | null = null;
  /** The connection presented the host's monitor token: it holds its slot without a VM. */
  monitor = false;
  private backend: Requester | null = null;
  private closeListeners: ((reason: VsvaError | null) => void)[] = [];
  private attachListeners: (() => void)[] = [];

  constructor(
    readonly id: number,
    readonly dispatcher: BackendDispatcher<Session>,
    /** Who connected (SO_PEERCRED; this process for in-memory connections). */
    readonly peer: PeerIdentity = ownIdentity(),
  ) {
    dispatcher.onClose((reason) => {
      this.backend?.conn.close();
      this.backend = null;
      const listeners = this.closeListeners;
      this.closeListeners = [];
      for (const fn of listeners) fn(reason);
    });
  }

  get closed(): boolean {
    return this.dispatcher.closed;
  }

  get backendAttached(): boolean {
    return this.backend !== null && !this.backend.conn.closed;
  }

  /** The main connection closed (reason null: cleanly). Runs at once if already closed. */
  onClose(fn: (reason: VsvaError | null) => void): void {
    if (this.closed) queueMicrotask(() => fn(this.dispatcher.conn.reason));
    else this.closeListeners.push(fn);
  }

  /** The front-end attached its backend channel. */
  onBackendAttached(fn: () => void): void {
    this.attachListeners.push(fn);
  }

  /**
   * Send a back-end → front-end request on the backend channel. Rejects with ENOTCONN when no
   * backend channel is attached, EOPNOTSUPP when needReply is asked without REPLY_ACK.
   */
  send<K extends BackendRequestName>(name: K, msg: BackendMessageOf<K>, opts: SendOptions = {}): Promise<void> {
    const backend = this.backend;
    if (!backend || backend.conn.closed) return Promise.reject(new VsvaError('ENOTCONN', `${name}: no backend channel attached`));
    const needReply = opts.needReply ?? false;
    if (needReply && !this.dispatcher.replyAck) return Promise.reject(new VsvaError('EOPNOTSUPP', `${name}: NEED_REPLY needs REPLY_ACK`));
    return backend.send(BackendMessages[name], msg, needReply, needReply, opts) as Promise<void>;
  }

  /** Close the main connection (and the backend channel). */
  close(): void {
    this.dispatcher.close();
  }

  /** @internal */
  attachBackend(conn: Connection, timeoutMs: number): void {
    this.backend?.conn.close();
    const requester = new Requester(conn, timeoutMs);
    conn.sink = requester.onFrame;
    this.backend = requester;
    conn.onClose(() => {
      if (this.backend === requester) this.backend = null;
    });
    queueMicrotask(() => {
      for (const fn of this.attachListeners) fn();
    });
  }
}

export interface BackendServerOptions {
  /** The host service's handler table for a new session. */
  handlers: (session: Session) => HandlerTable<Session>;
  features?: bigint;
  protocolFeatures?: bigint;
  /** Timeout of backend-channel requests sent with needReply (ms). */
  timeoutMs?: number;
  logger?: Logger;
  /** Limits on Unix-socket connections (defaults: DEFAULT_CONNECTION_LIMITS). */
  limits?: Partial<ConnectionLimits>;
}

export interface ServerListenOptions {
  /** Group of the socket file (mode 0660); default: mode 0600. */
  gid?: number;
}

function tokenKey(t: Uint8Array): string {
  return Buffer.from(t.buffer, t.byteOffset, t.byteLength).toString('hex');
}

export class BackendServer {
  private readonly log: Logger;
  private nextId = 1;
  private readonly byToken = new Map<string, Session>();
  private readonly live = new Set<Session>();
  private readonly connections = new Set<Connection>();
  private sessionListeners: ((s: Session) => void)[] = [];
  private listener: UnixListener | null = null;
  readonly limits: ConnectionLimits;
  private readonly admission: ConnectionAdmission;
  private readonly sweep: ConnectionSweep;

  constructor(private readonly opts: BackendServerOptions) {
    this.log = opts.logger ?? childLogger('vhost-server');
    this.limits = resolveConnectionLimits(opts.limits);
    this.admission = new ConnectionAdmission(this.limits);
    this.sweep = new ConnectionSweep(this.limits, this.log);
  }

  /** Unix-socket connections open now: in all, and from `uid`. */
  openConnections(uid?: number): number {
    return uid === undefined ? this.admission.open : this.admission.openFor(uid);
  }

  /** Sessions whose main connection is open. */
  get sessions(): ReadonlySet<Session> {
    return this.live;
  }

  onSession(fn: (s: Session) => void): void {
    this.sessionListeners.push(fn);
  }

  /**
   * Listen on a Unix socket path (vhost/transport/socket-file.ts: EADDRINUSE when a live
   * listener has it; mode 0600, or 0660 with `gid`).
   */
  async listen(path: string, opts: ServerListenOptions = {}): Promise<void> {
    if (this.listener) fail('EBUSY', `already listening on ${this.listener.path}`);
    this.listener = await listenUnix(path, (t, peer) => this.acceptLimited(t, peer), opts.gid === undefined ? {} : { gid: opts.gid });
  }

  /** Serve one connection without limits (in-memory connections of this process). */
  accept(transport: Transport): void {
    this.serve(transport, ownIdentity(), MAX_REQUEST_PAYLOAD);
  }

  /** Serve one Unix-socket connection under the connection limits (or refuse it). */
  private acceptLimited(transport: Transport, peer: PeerIdentity): void {
    const refusal = this.admission.admit(peer);
    if (refusal !== null) {
      const why = refusal === 'EMFILE'
        ? `${this.admission.open} connections open (the limit, maxConnections)`
        : `uid ${peer.uid} has ${this.admission.openFor(peer.uid)} connections open (the limit, maxConnectionsPerUid)`;
      refuseConnection(transport, refusal, why, this.log);
      return;
    }
    let held: Connection | null = null;
    const guard = new GuardedTransport(transport, this.limits.maxOutgoingBytes, {
      overflow: (pending) => this.log.warn({ peer: transport.label, code: 'ENOBUFS', pending }, 'closing connection: its peer does not read its replies'),
      hold: (on) => held?.holdFrames(on),
    });
    const { conn, session } = this.serve(guard, peer, this.limits.maxIncomingBytes);
    held = conn;
    const watched = {
      guard,
      holdsSlot: () => {
        const s = session();
        return s === 'backend' || (s !== null && (s.token !== null || s.monitor));
      },
      // Frames held while the peer leaves its replies unread are not half frames.
      partialBytes: () => (conn.framer.holding ? 0 : conn.framer.pendingBytes),
      framesReceived: () => conn.framesReceived,
      abort: () => guard.abort(),
    };
    this.sweep.watch(watched);
    conn.onClose(() => {
      this.sweep.unwatch(watched);
      this.admission.release(peer);
    });
  }

  /** A connection, its dispatcher, and (once known) its session or 'backend' for a backend channel. */
  private serve(transport: Transport, peer: PeerIdentity, maxPayload: number): { conn: Connection; session: () => Session | 'backend' | null } {
    const conn = new Connection(transport, maxPayload, this.log);
    let role: Session | 'backend' | null = null;
    this.connections.add(conn);
    conn.onClose(() => this.connections.delete(conn));
    new BackendDispatcher<Session>(conn, {
      features: this.opts.features,
      protocolFeatures: this.opts.protocolFeatures,
      logger: this.log,
      onFirstRequest: (d) => {
        role = this.startSession(d, peer);
      },
      onBackendAttach: (req, d) => {
        const session = this.byToken.get(tokenKey(req.session_token));
        if (!session || session.closed) fail('ENOENT', 'BACKEND_ATTACH: no open session has this token');
        if (!session.dispatcher.has(ProtocolFeature.BACKEND_REQ)) fail('EOPNOTSUPP', 'BACKEND_ATTACH: BACKEND_REQ was not negotiated on the main connection');
        // Frames after this one are replies to back-end requests. The ack to BACKEND_ATTACH is
        // written right after this returns (it is the first request, so nothing is queued
        // ahead of it); attach listeners run in a microtask, after it.
        session.attachBackend(d.conn, this.opts.timeoutMs ?? 10_000);
        role = 'backend';
      },
    });
    return { conn, session: () => role };
  }

  /**
   * A connector for in-process mode: each call makes an in-memory pair, serves one end and
   * returns the other (what FrontendClient.connect takes as `connect`).
   */
  memoryConnector(): () => Promise<Transport> {
    return async () => {
      const [client, server] = createMemoryPair('in-process');
      this.accept(server);
      return client;
    };
  }

  /** Stop listening and close every connection. */
  async close(): Promise<void> {
    const l = this.listener;
    this.listener = null;
    this.sweep.stop();
    for (const c of [...this.connections]) c.close();
    if (l) await l.close();
  }

  private startSession(d: BackendDispatcher<Session>, peer: PeerIdentity): Session {
    const session = new Session(this.nextId++, d, peer);
    const table = { ...this.opts.handlers(session) };
    const setup = table.VM_SETUP;
    if (setup) {
      const register = (r: VmSetupReply): VmSetupReply => {
        session.token = Uint8Array.from(r.session_token);
        this.byToken.set(tokenKey(r.session_token), session);
        return r;
      };
      table.VM_SETUP = (req, s) => {
        const r = setup(req, s);
        return r instanceof Promise ? r.then(register) : register(r);
      };
    }
    d.setHandlers(table, session);
    this.live.add(session);
    session.onClose(() => {
      this.live.delete(session);
      if (session.token) {
        const key = tokenKey(session.token);
        if (this.byToken.get(key) === session) this.byToken.delete(key);
      }
    });
    for (const fn of this.sessionListeners) {
      try {
        fn(session);
      } catch (e) {
        this.log.error({ err: e }, 'session listener threw');
      }
    }
    return session;
  }
}
