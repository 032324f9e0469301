/**
 * Message codes of the vSVA range (docs/protocol.md §3). Front-end → back-end requests on the
 * main channel and back-end → front-end requests on the backend channel are separate
 * namespaces, as in vhost-user (QEMU docs/interop/vhost-user.rst, "Front-end message types"
 * and "Back-end message types"); both use 0x100–0x1ff, far above vhost-user's
 * own codes (1–44), so a vhost-user peer never confuses them.
 */
export const VsvaRequest = {
  VM_SETUP: 0x100,
  DEVICE_ADD: 0x101,
  DOMAIN_ALLOC: 0x102,
  DOMAIN_FREE: 0x103,
  ATTACH: 0x104,
  DETACH: 0x105,
  GET_NESTING_INFO: 0x106,
  DMA_MAP: 0x107,
  DMA_UNMAP: 0x108,
  PASID_ALLOC: 0x109,
  PASID_FREE: 0x10a,
  BIND_GPASID: 0x10b,
  UNBIND_GPASID: 0x10c,
  CACHE_INVALIDATE: 0x10d,
  PAGE_RESPONSE: 0x10e,
  DEVICE_DMA: 0x10f,
  GET_STATE: 0x110,
  DEVICE_CONFIG: 0x111,
  /** First (and only) front-end request on a backend-channel connection. */
  BACKEND_ATTACH: 0x1f0,
} as const;

export const VsvaBackendRequest = {
  FAULT: 0x100,
  PAGE_REQUEST: 0x101,
  PASID_FREED: 0x102,
} as const;

/** Size of the session token VM_SETUP returns and BACKEND_ATTACH presents. */
export const SESSION_TOKEN_SIZE = 16;
