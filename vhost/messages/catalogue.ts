/**
 * The message catalogue: every request of both channels, by name and by code, with its payload
 * codecs, reply kind and feature gate (docs/protocol.md §3–5). Types of requests and replies are
 * derived from here, so `FrontendClient.call('PASID_ALLOC', …)` is typed by the message name.
 */
import type { MessageSpec } from './codec.js';
import {
  GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
} from './handshake.js';
import { VM_SETUP, BACKEND_ATTACH, GET_STATE } from './vm.js';
import { DEVICE_ADD, DOMAIN_ALLOC, DOMAIN_FREE, ATTACH, DETACH, GET_NESTING_INFO } from './device.js';
import { DEVICE_CONFIG } from './device-config.js';
import { DMA_MAP, DMA_UNMAP } from './dma.js';
import { PASID_ALLOC, PASID_FREE, BIND_GPASID, UNBIND_GPASID } from './pasid.js';
import { CACHE_INVALIDATE } from './invalidate.js';
import { PAGE_RESPONSE } from './page.js';
import { DEVICE_DMA } from './device-dma.js';
import { FAULT, PAGE_REQUEST, PASID_FREED } from './backend.js';
import { IommufdMessages, IOMMUFD_FAULT } from './iommufd.js';

/** Front-end → back-end requests (main channel; BACKEND_ATTACH opens the backend channel). */
export const FrontendMessages = {
  GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
  VM_SETUP, DEVICE_ADD, DOMAIN_ALLOC, DOMAIN_FREE, ATTACH, DETACH, GET_NESTING_INFO,
  DMA_MAP, DMA_UNMAP, PASID_ALLOC, PASID_FREE, BIND_GPASID, UNBIND_GPASID,
  CACHE_INVALIDATE, PAGE_RESPONSE, DEVICE_DMA, GET_STATE, BACKEND_ATTACH, DEVICE_CONFIG,
  ...IommufdMessages,
} as const;

/** Back-end → front-end requests (backend channel). */
export const BackendMessages = { FAULT, PAGE_REQUEST, PASID_FREED, IOMMUFD_FAULT } as const;

export type FrontendRequestName = keyof typeof FrontendMessages;
export type BackendRequestName = keyof typeof BackendMessages;

type ReqOfSpec<S> = S extends MessageSpec<infer R, unknown> ? R : never;
type RepOfSpec<S> = S extends MessageSpec<unknown, infer R> ? R : never;

/** Decoded request payload of a front-end request. */
export type RequestOf<K extends FrontendRequestName> = ReqOfSpec<(typeof FrontendMessages)[K]>;
/** Decoded reply of a front-end request (body of a successful reply). */
export type ReplyOf<K extends FrontendRequestName> = RepOfSpec<(typeof FrontendMessages)[K]>;
/** Decoded payload of a back-end request. */
export type BackendMessageOf<K extends BackendRequestName> = ReqOfSpec<(typeof BackendMessages)[K]>;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnySpec = MessageSpec<any, any>;

function byCode(table: Record<string, AnySpec>): ReadonlyMap<number, AnySpec> {
  const m = new Map<number, AnySpec>();
  for (const spec of Object.values(table)) {
    if (m.has(spec.code)) throw new Error(`duplicate message code 0x${spec.code.toString(16)}`);
    m.set(spec.code, spec);
  }
  return m;
}

export const FrontendMessagesByCode = byCode(FrontendMessages);
export const BackendMessagesByCode = byCode(BackendMessages);
