/**
 * virtio-mmio version 2 register window (virtio 1.x §4.2.2, "MMIO Device Register Layout") and
 * the generic device status / feature bits the transport deals with (§2.1, §6).
 *
 * Every control register is 32 bits wide and accessed with 32-bit loads and stores; the
 * device-specific configuration space starts at 0x100 and may be read with any width.
 */

export const VirtioMmio = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

/** "virt" in little-endian ASCII. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** The non-legacy virtio-mmio interface. */
export const VIRTIO_MMIO_VERSION = 2;
/** Vendor ID this model reports: "VSVA" in little-endian ASCII (any value is allowed). */
export const VIRTIO_MMIO_VENDOR_VSVA = 0x41565356;
/** Size of the register window including the 40-byte virtio-iommu config (rounded to a page). */
export const VIRTIO_MMIO_WINDOW_SIZE = 0x200;

/** Device status field (§2.1). */
export const VirtioStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** InterruptStatus / InterruptACK bits (§4.2.2). */
export const VirtioInterrupt = {
  /** Used Buffer Notification. */
  VRING: 1 << 0,
  /** Configuration Change Notification (also raised with DEVICE_NEEDS_RESET). */
  CONFIG: 1 << 1,
} as const;

/** Reserved (transport and ring) feature bits (§6) this model knows. */
export const VirtioTransportFeature = {
  /** VIRTIO_F_INDIRECT_DESC: descriptors may point at indirect tables. */
  INDIRECT_DESC: 28n,
  /** VIRTIO_F_EVENT_IDX (not offered). */
  EVENT_IDX: 29n,
  /** VIRTIO_F_VERSION_1: mandatory for a non-legacy device. */
  VERSION_1: 32n,
} as const;
