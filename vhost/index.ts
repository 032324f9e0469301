/**
 * vhost/: the guest↔host wire protocol only (docs/design.md §5, docs/protocol.md) — header and framing,
 * the message catalogue with codecs and validators, transports, and the two roles.
 */
export * from './wire/header.js';
export * from './wire/errno.js';
export * from './wire/features.js';
export * from './wire/framer.js';
export { Struct, layoutTable, reserved, type FieldDef, type FieldType } from './wire/struct.js';
export * from './messages/codec.js';
export * from './messages/codes.js';
export * from './messages/handshake.js';
export * from './messages/vm.js';
export * from './messages/device.js';
export * from './messages/device-config.js';
export * from './messages/dma.js';
export * from './messages/pasid.js';
export * from './messages/invalidate.js';
export * from './messages/page.js';
export * from './messages/device-dma.js';
export * from './messages/backend.js';
export * from './messages/iommufd.js';
export * from './messages/catalogue.js';
export type { Transport, TransportSink } from './transport/transport.js';
export { UnixTransport, connectUnix, listenUnix, type UnixListener } from './transport/unix.js';
export { createMemoryPair } from './transport/memory.js';
export { Connection } from './roles/connection.js';
export { Requester, DEFAULT_TIMEOUT_MS, type CallOptions } from './roles/requester.js';
export { Dispatcher, type DispatchTarget } from './roles/dispatcher.js';
export { BackendDispatcher, type Handler, type HandlerTable, type BackendDispatcherOptions } from './roles/backend.js';
export { BackendServer, Session, type BackendServerOptions, type SendOptions } from './roles/server.js';
export {
  FrontendClient, DEFAULT_PROTOCOL_FEATURES, type BackendEvent, type BackendMessageHandler, type FrontendConnectOptions,
  type HandshakeResult, type CallArgs,
} from './roles/frontend.js';
