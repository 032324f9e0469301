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
 */
import { VsvaError, fail } from '../../src/errors.js';
import { childLogger, type Logger } from '../../src/log.js';
import { MAX_REQUEST_PAYLOAD } from '../wire/header.js';
import { ProtocolFeature } from '../wire/features.js';
import { BackendMessages, type BackendMessageOf, type BackendRequestName } from '../messages/catalogue.js';
import type { VmSetupReply } from '../messages/vm.js';
import { createMemoryPair } from '../transport/memory.js';
import type { Transport } from '../transport/transport.js';
import { listenUnix, type UnixListener } from '../transport/unix.js';
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
  private backend: Requester | null = null;
  private closeListeners: ((reason: VsvaError | null) => void)[] = [];
  private attachListeners: (() => void)[] = [];

  constructor(
    readonly id: number,
    readonly dispatcher: BackendDispatcher<Session>,
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

  constructor(private readonly opts: BackendServerOptions) {
    this.log = opts.logger ?? childLogger('vhost-server');
  }

  /** Sessions whose main connection is open. */
  get sessions(): ReadonlySet<Session> {
    return this.live;
  }

  onSession(fn: (s: Session) => void): void {
    this.sessionListeners.push(fn);
  }

  /** Listen on a Unix socket path. */
  async listen(path: string): Promise<void> {
    if (this.listener) fail('EBUSY', `already listening on ${this.listener.path}`);
    this.listener = await listenUnix(path, (t) => this.accept(t));
  }

  /** Serve one connection (Unix or in-memory). */
  accept(transport: Transport): void {
    const conn = new Connection(transport, MAX_REQUEST_PAYLOAD, this.log);
    this.connections.add(conn);
    conn.onClose(() => this.connections.delete(conn));
    new BackendDispatcher<Session>(conn, {
      features: this.opts.features,
      protocolFeatures: this.opts.protocolFeatures,
      logger: this.log,
      onFirstRequest: (d) => this.startSession(d),
      onBackendAttach: (req, d) => {
        const session = this.byToken.get(tokenKey(req.session_token));
        if (!session || session.closed) fail('ENOENT', 'BACKEND_ATTACH: no open session has this token');
        if (!session.dispatcher.has(ProtocolFeature.BACKEND_REQ)) fail('EOPNOTSUPP', 'BACKEND_ATTACH: BACKEND_REQ was not negotiated on the main connection');
        // Frames after this one are replies to back-end requests. The ack to BACKEND_ATTACH is
        // written right after this returns (it is the first request, so nothing is queued
        // ahead of it); attach listeners run in a microtask, after it.
        session.attachBackend(d.conn, this.opts.timeoutMs ?? 10_000);
      },
    });
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
    for (const c of [...this.connections]) c.close();
    if (l) await l.close();
  }

  private startSession(d: BackendDispatcher<Session>): void {
    const session = new Session(this.nextId++, d);
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
  }
}
