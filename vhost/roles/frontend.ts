/**
 * The front-end (guest side) client: typed requests by message name, pipelined, replies matched
 * in request order, per-request timeouts, REPLY_ACK handling, and the backend channel on which
 * the back-end sends FAULT / PAGE_REQUEST / PASID_FREED (docs/protocol.md §8–9).
 *
 *   const fe = await FrontendClient.connect({ path });
 *   await fe.handshake();                       // features, protocol features, owner
 *   const vm = await fe.setupVm({ name: 'vm0', pasid_quota: 1024, flags: 1, session_token });
 *   fe.onBackendMessage((m) => { ... });        // m.name: 'FAULT' | 'PAGE_REQUEST' | 'PASID_FREED'
 *   const { pasid } = await fe.call('PASID_ALLOC', { min: 1, max: 0xfffff });
 */
import { VsvaError, fail } from '../../src/errors.js';
import { childLogger, type Logger } from '../../src/log.js';
import { MAX_REPLY_PAYLOAD, MAX_REQUEST_PAYLOAD } from '../wire/header.js';
import { ProtocolFeature, VHOST_USER_F_PROTOCOL_FEATURES } from '../wire/features.js';
import {
  BackendMessagesByCode, FrontendMessages, type AnySpec, type BackendMessageOf, type BackendRequestName,
  type FrontendRequestName, type ReplyOf, type RequestOf,
} from '../messages/catalogue.js';
import type { VmSetupReply, VmSetupRequest } from '../messages/vm.js';
import type { Transport } from '../transport/transport.js';
import { connectUnix } from '../transport/unix.js';
import { Connection, type CloseListener } from './connection.js';
import { Dispatcher } from './dispatcher.js';
import { DEFAULT_TIMEOUT_MS, Requester, type CallOptions } from './requester.js';

/** A back-end → front-end request, as delivered to onBackendMessage. */
export type BackendEvent = { [K in BackendRequestName]: { name: K; msg: BackendMessageOf<K> } }[BackendRequestName];

/** Handles a backend message; a throw or rejection becomes the ack's errno (with NEED_REPLY). */
export type BackendMessageHandler = (ev: BackendEvent) => void | Promise<void>;

export interface FrontendConnectOptions {
  /** Unix socket path of the back-end. */
  path?: string;
  /** Opens a connection to the back-end (in-process mode: BackendServer.memoryConnector()). */
  connect?: () => Promise<Transport>;
  /** Default per-request timeout in ms (default 10 s). */
  timeoutMs?: number;
  logger?: Logger;
}

export interface HandshakeResult {
  features: bigint;
  protocolFeatures: bigint;
}

/** Arguments of call(): the payload may be omitted for messages without one. */
export type CallArgs<K extends FrontendRequestName> = RequestOf<K> extends void
  ? [payload?: undefined, opts?: CallOptions]
  : [payload: RequestOf<K>, opts?: CallOptions];

/** The protocol features handshake() asks for by default. */
export const DEFAULT_PROTOCOL_FEATURES =
  ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA | ProtocolFeature.VSVA_DEVICE_DMA | ProtocolFeature.VSVA_STATE;

export class FrontendClient {
  readonly conn: Connection;
  private readonly requester: Requester;
  /** Negotiated protocol features (after SET_PROTOCOL_FEATURES succeeded). */
  protocolFeatures = 0n;
  private backendConn: Connection | null = null;
  private backendHandler: BackendMessageHandler | null = null;
  private readonly log: Logger;

  private constructor(
    transport: Transport,
    private readonly connectFn: () => Promise<Transport>,
    private readonly timeoutMs: number,
    log: Logger,
  ) {
    this.log = log;
    this.conn = new Connection(transport, MAX_REPLY_PAYLOAD, log);
    this.requester = new Requester(this.conn, timeoutMs);
    this.conn.sink = this.requester.onFrame;
    this.conn.onClose(() => this.backendConn?.close());
  }

  static async connect(opts: FrontendConnectOptions): Promise<FrontendClient> {
    const connectFn = opts.connect ?? (opts.path !== undefined ? () => connectUnix(opts.path!) : undefined);
    if (!connectFn) fail('EINVAL', 'FrontendClient.connect needs a path or a connect function');
    const transport = await connectFn();
    return new FrontendClient(transport, connectFn, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, opts.logger ?? childLogger('vhost-frontend'));
  }

  get replyAck(): boolean {
    return (this.protocolFeatures & ProtocolFeature.REPLY_ACK) !== 0n;
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  /** Requests sent whose replies have not arrived. */
  get outstanding(): number {
    return this.requester.outstanding;
  }

  /**
   * Send a request and resolve with its decoded reply (void for acks). Requests may be issued
   * without awaiting earlier ones; replies are matched in order. Messages answered only under
   * REPLY_ACK resolve once written when REPLY_ACK is not negotiated.
   */
  call<K extends FrontendRequestName>(name: K, ...args: CallArgs<K>): Promise<ReplyOf<K>>;
  call(name: FrontendRequestName, payload?: unknown, opts?: CallOptions): Promise<unknown> {
    const spec: AnySpec = FrontendMessages[name];
    if (spec.replyKind !== 'ack') return this.requester.send(spec, payload, true, true, opts);
    if (name !== 'SET_PROTOCOL_FEATURES') return this.requester.send(spec, payload, this.replyAck, this.replyAck, opts);
    const expectReply = this.replyAck || ((payload as bigint) & ProtocolFeature.REPLY_ACK) !== 0n;
    return this.requester.send(spec, payload, expectReply, expectReply, opts).then((v) => {
      this.protocolFeatures = payload as bigint;
      return v;
    });
  }

  /**
   * The vhost-user handshake, as QEMU sends it (hw/virtio/vhost-user.c `vhost_user_backend_init`,
   * hw/virtio/vhost.c `vhost_dev_init`): GET_FEATURES (bit 30 required), GET_PROTOCOL_FEATURES,
   * SET_PROTOCOL_FEATURES (wanted ∩ offered; every bit of `require` must be offered, else
   * EOPNOTSUPP), SET_OWNER, SET_FEATURES.
   */
  async handshake(opts: { want?: bigint; require?: bigint } = {}): Promise<HandshakeResult> {
    const want = opts.want ?? DEFAULT_PROTOCOL_FEATURES;
    const require = opts.require ?? (ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.VSVA);
    const features = await this.call('GET_FEATURES');
    if ((features & VHOST_USER_F_PROTOCOL_FEATURES) === 0n) fail('EPROTO', 'back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES');
    const offered = await this.call('GET_PROTOCOL_FEATURES');
    const missing = require & ~offered;
    if (missing !== 0n) fail('EOPNOTSUPP', `back-end does not offer protocol features 0x${missing.toString(16)}`);
    const protocolFeatures = want & offered;
    await this.call('SET_PROTOCOL_FEATURES', protocolFeatures);
    await this.call('SET_OWNER');
    await this.call('SET_FEATURES', VHOST_USER_F_PROTOCOL_FEATURES);
    return { features: VHOST_USER_F_PROTOCOL_FEATURES, protocolFeatures };
  }

  /** VM_SETUP, then attach the backend channel with the returned token. */
  async setupVm(req: VmSetupRequest, opts?: CallOptions): Promise<VmSetupReply> {
    const reply = await this.call('VM_SETUP', req, opts);
    await this.attachBackendChannel(reply.session_token);
    return reply;
  }

  /**
   * Open the backend channel: a second connection whose first message is BACKEND_ATTACH with
   * the session token; from then on it carries back-end requests to onBackendMessage.
   */
  async attachBackendChannel(token: Uint8Array): Promise<void> {
    if (this.conn.closed) fail('ENOTCONN', 'main connection is closed');
    const transport = await this.connectFn();
    const conn = new Connection(transport, MAX_REQUEST_PAYLOAD, this.log);
    const requester = new Requester(conn, this.timeoutMs);
    conn.sink = requester.onFrame;
    try {
      await requester.send(FrontendMessages.BACKEND_ATTACH, { session_token: token }, true, true);
    } catch (e) {
      conn.close();
      throw e;
    }
    // The channel changes direction: from now on the back-end sends requests on it.
    const dispatcher = new Dispatcher(conn, {
      byCode: BackendMessagesByCode,
      negotiated: () => this.protocolFeatures,
      acks: () => this.replyAck,
      invoke: (spec, msg) => this.deliverBackend(spec, msg),
    }, this.log);
    conn.sink = dispatcher.onFrame;
    this.backendConn?.close();
    this.backendConn = conn;
    conn.onClose((reason) => {
      if (this.backendConn === conn) this.backendConn = null;
      if (reason) this.log.warn({ code: reason.code }, `backend channel closed: ${reason.message}`);
    });
  }

  get backendAttached(): boolean {
    return this.backendConn !== null && !this.backendConn.closed;
  }

  /** Handle back-end → front-end requests (one handler; a later call replaces it). */
  onBackendMessage(handler: BackendMessageHandler): void {
    this.backendHandler = handler;
  }

  onClose(fn: CloseListener): void {
    this.conn.onClose(fn);
  }

  /** Close both channels; outstanding requests fail with ECONNRESET. */
  close(): void {
    this.backendConn?.close();
    this.conn.close();
  }

  private deliverBackend(spec: AnySpec, msg: unknown): unknown {
    const handler = this.backendHandler;
    if (!handler) throw new VsvaError('ENOTTY', `${spec.name}: no backend message handler installed`);
    return handler({ name: spec.name, msg } as BackendEvent);
  }
}
