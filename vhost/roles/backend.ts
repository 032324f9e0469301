/**
 * The back-end (host side) of a main connection: the handshake state machine of vhost-user
 * (GET/SET_FEATURES, SET_OWNER, GET/SET_PROTOCOL_FEATURES, REPLY_ACK) built in, every other
 * request routed to the host service's handler table. No IOMMU logic lives here.
 */
import { fail, VsvaError } from '../../src/errors.js';
import { childLogger, type Logger } from '../../src/log.js';
import { MAX_REQUEST_PAYLOAD } from '../wire/header.js';
import { ALL_FEATURES, ALL_PROTOCOL_FEATURES, ProtocolFeature } from '../wire/features.js';
import {
  FrontendMessagesByCode, type AnySpec, type FrontendRequestName, type ReplyOf, type RequestOf,
} from '../messages/catalogue.js';
import type { BackendAttachRequest } from '../messages/vm.js';
import type { Transport } from '../transport/transport.js';
import { Connection, type CloseListener } from './connection.js';
import { Dispatcher } from './dispatcher.js';

/** A host-service handler: gets the decoded, validated request; returns the reply or a Promise. */
export type Handler<K extends FrontendRequestName, C> = (req: RequestOf<K>, ctx: C) => ReplyOf<K> | Promise<ReplyOf<K>>;

/**
 * Handlers by message name. The handshake messages (GET/SET_FEATURES, SET_OWNER,
 * GET/SET_PROTOCOL_FEATURES) and BACKEND_ATTACH are answered by the dispatcher itself, so a
 * handler for them is never called; any other message without a handler is ENOTTY.
 */
export type HandlerTable<C> = { [K in FrontendRequestName]?: Handler<K, C> };

export interface BackendDispatcherOptions<C> {
  handlers?: HandlerTable<C>;
  context?: C;
  /** Device feature bits offered by GET_FEATURES (default: VHOST_USER_F_PROTOCOL_FEATURES). */
  features?: bigint;
  /** Protocol feature bits offered by GET_PROTOCOL_FEATURES (default: all of ALL_PROTOCOL_FEATURES). */
  protocolFeatures?: bigint;
  /** Called for BACKEND_ATTACH as the first message on a connection; throws to refuse it. */
  onBackendAttach?: (req: BackendAttachRequest, dispatcher: BackendDispatcher<C>) => void;
  /** Called once, before the first request that is not BACKEND_ATTACH is dispatched. */
  onFirstRequest?: (dispatcher: BackendDispatcher<C>) => void;
  logger?: Logger;
  /** Largest request payload accepted (default MAX_REQUEST_PAYLOAD). */
  maxPayload?: number;
}

export class BackendDispatcher<C = undefined> {
  readonly conn: Connection;
  readonly dispatcher: Dispatcher;
  readonly offeredFeatures: bigint;
  readonly offeredProtocolFeatures: bigint;
  /** Negotiated state (vhost-user): accepted device features, protocol features, owner. */
  ackedFeatures = 0n;
  ackedProtocolFeatures = 0n;
  owner = false;
  private handlers: HandlerTable<C>;
  private context: C;
  private firstSeen = false;
  private readonly log: Logger;

  constructor(
    transportOrConnection: Transport | Connection,
    private readonly opts: BackendDispatcherOptions<C> = {},
  ) {
    this.log = opts.logger ?? childLogger('vhost-backend');
    this.conn = transportOrConnection instanceof Connection
      ? transportOrConnection
      : new Connection(transportOrConnection, opts.maxPayload ?? MAX_REQUEST_PAYLOAD, this.log);
    this.offeredFeatures = opts.features ?? ALL_FEATURES;
    this.offeredProtocolFeatures = opts.protocolFeatures ?? ALL_PROTOCOL_FEATURES;
    this.handlers = opts.handlers ?? {};
    this.context = opts.context as C;
    this.dispatcher = new Dispatcher(this.conn, {
      byCode: FrontendMessagesByCode,
      negotiated: () => this.ackedProtocolFeatures,
      acks: (spec, payload) => {
        if ((this.ackedProtocolFeatures & ProtocolFeature.REPLY_ACK) !== 0n) return true;
        // SET_PROTOCOL_FEATURES that asks for REPLY_ACK is acked (success or failure).
        return spec.name === 'SET_PROTOCOL_FEATURES' && payload.length === 8 && (payload.readBigUInt64LE(0) & ProtocolFeature.REPLY_ACK) !== 0n;
      },
      invoke: (spec, req) => this.invoke(spec, req),
    }, this.log);
    this.conn.sink = this.dispatcher.onFrame;
  }

  /** Install the host service's handlers and the context they receive. */
  setHandlers(handlers: HandlerTable<C>, context: C): void {
    this.handlers = handlers;
    this.context = context;
  }

  get replyAck(): boolean {
    return (this.ackedProtocolFeatures & ProtocolFeature.REPLY_ACK) !== 0n;
  }

  /** Whether every bit of `feature` was negotiated. */
  has(feature: bigint): boolean {
    return (this.ackedProtocolFeatures & feature) === feature;
  }

  onClose(fn: CloseListener): void {
    this.conn.onClose(fn);
  }

  close(): void {
    this.conn.close();
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  private invoke(spec: AnySpec, req: unknown): unknown {
    const name = spec.name as FrontendRequestName;
    if (name === 'BACKEND_ATTACH') {
      if (this.firstSeen || this.dispatcher.received !== 1) fail('EINVAL', 'BACKEND_ATTACH must be the first message on a connection');
      this.firstSeen = true;
      if (!this.opts.onBackendAttach) fail('ENOTTY', 'this back-end has no backend channel');
      this.opts.onBackendAttach(req as BackendAttachRequest, this);
      return undefined;
    }
    if (!this.firstSeen) {
      this.firstSeen = true;
      this.opts.onFirstRequest?.(this);
    }
    switch (name) {
      case 'GET_FEATURES':
        return this.offeredFeatures;
      case 'SET_FEATURES':
        return this.setFeatures(req as bigint);
      case 'SET_OWNER':
        if (this.owner) fail('EBUSY', 'SET_OWNER: this connection already has an owner');
        this.owner = true;
        return undefined;
      case 'GET_PROTOCOL_FEATURES':
        return this.offeredProtocolFeatures;
      case 'SET_PROTOCOL_FEATURES':
        return this.setProtocolFeatures(req as bigint);
      default: {
        const handler = this.handlers[name] as ((r: unknown, c: C) => unknown) | undefined;
        if (!handler) throw new VsvaError('ENOTTY', `${name}: this back-end does not handle it`);
        return handler(req, this.context);
      }
    }
  }

  private setFeatures(v: bigint): void {
    const unknown = v & ~this.offeredFeatures;
    if (unknown !== 0n) fail('EOPNOTSUPP', `SET_FEATURES: bits 0x${unknown.toString(16)} were not offered`);
    this.ackedFeatures = v;
  }

  private setProtocolFeatures(v: bigint): void {
    const unknown = v & ~this.offeredProtocolFeatures;
    if (unknown !== 0n) fail('EOPNOTSUPP', `SET_PROTOCOL_FEATURES: bits 0x${unknown.toString(16)} were not offered`);
    const P = ProtocolFeature;
    if ((v & P.VSVA) !== 0n && (v & (P.REPLY_ACK | P.BACKEND_REQ)) !== (P.REPLY_ACK | P.BACKEND_REQ)) {
      fail('EINVAL', 'SET_PROTOCOL_FEATURES: VSVA requires REPLY_ACK and BACKEND_REQ');
    }
    if ((v & (P.VSVA_DEVICE_DMA | P.VSVA_STATE)) !== 0n && (v & P.VSVA) === 0n) {
      fail('EINVAL', 'SET_PROTOCOL_FEATURES: VSVA_DEVICE_DMA and VSVA_STATE require VSVA');
    }
    this.ackedProtocolFeatures = v;
  }
}
