/**
 * Feature bits (docs/protocol.md §4).
 *
 * GET_FEATURES / SET_FEATURES carry the device feature bits; the back-end offers only
 * VHOST_USER_F_PROTOCOL_FEATURES (bit 30), as vhost-user defines it (QEMU
 * docs/interop/vhost-user.rst, "Communication").
 * GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES carry the protocol feature bits: vhost-user's
 * REPLY_ACK (3) and BACKEND_REQ (5) with their standard numbers (vhost-user.rst, "Protocol
 * features"), and the project's own bits from 48 up, far from vhost-user's allocated range
 * (0–21).
 */
export const VHOST_USER_F_PROTOCOL_FEATURES = 1n << 30n;

export const ProtocolFeature = {
  /** vhost-user REPLY_ACK: NEED_REPLY on a message asks for a u64 ack (0 or negative errno). */
  REPLY_ACK: 1n << 3n,
  /** vhost-user BACKEND_REQ: the back-end may send requests on the backend channel. */
  BACKEND_REQ: 1n << 5n,
  /** vsva: the vSVA message range 0x100–0x1ff. Requires REPLY_ACK and BACKEND_REQ. */
  VSVA: 1n << 48n,
  /** vsva: DEVICE_DMA (ask an assigned test device to perform one DMA). Requires VSVA. */
  VSVA_DEVICE_DMA: 1n << 49n,
  /** vsva: GET_STATE (the host's JSON snapshot). Requires VSVA. */
  VSVA_STATE: 1n << 50n,
  /** vsva: the iommufd message family 0x200–0x2ff and VM_SETUP's iommufd uAPI choice. Requires VSVA. */
  VSVA_IOMMUFD: 1n << 51n,
} as const;

/** Everything this implementation understands. */
export const ALL_PROTOCOL_FEATURES =
  ProtocolFeature.REPLY_ACK |
  ProtocolFeature.BACKEND_REQ |
  ProtocolFeature.VSVA |
  ProtocolFeature.VSVA_DEVICE_DMA |
  ProtocolFeature.VSVA_STATE |
  ProtocolFeature.VSVA_IOMMUFD;

/** Device feature bits the back-end offers. */
export const ALL_FEATURES = VHOST_USER_F_PROTOCOL_FEATURES;
