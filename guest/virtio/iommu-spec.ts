/**
 * virtio-iommu as data: device ID, feature bits, config layout, request types and layouts,
 * status codes, PROBE properties and event formats (virtio 1.2 §5.13 "IOMMU Device"; Linux
 * include/uapi/linux/virtio_iommu.h), plus the project's PASID extension (docs/virtio-iommu.md §5).
 *
 * Offsets are bytes from the start of the request (the head) or the event; all fields are
 * little-endian. The PASID extension's numbering is NOT standard: the virtio specification has
 * no PASID requests yet and the drafts disagree, so the codes below are the ones this project
 * uses, taken from the Intel-oriented draft where it says something and chosen otherwise.
 */

export const VIRTIO_ID_IOMMU = 23;
export const REQUESTQ = 0;
export const EVENTQ = 1;

/** Device feature bits (§5.13.3 "Feature bits"). BYPASS (3) and MMIO (5) are known but not offered. */
export const VirtioIommuFeature = {
  INPUT_RANGE: 0n,
  DOMAIN_RANGE: 1n,
  MAP_UNMAP: 2n,
  BYPASS: 3n,
  PROBE: 4n,
  MMIO: 5n,
  BYPASS_CONFIG: 6n,
  /**
   * vsva PASID extension: ATTACH_TABLE / DETACH_TABLE / INVALIDATE / PAGE_RESP and page-request
   * events. Bit 8 as in Tina Zhang's Intel draft (D4: VIRTIO_IOMMU_F_ATTACH_TABLE = 8); the
   * other drafts' 5, 6 and 7 collide with MMIO, BYPASS_CONFIG and MQ.
   */
  ATTACH_TABLE: 8n,
} as const;

/** Config space layout (§5.13.4 "Device configuration layout"), offsets from the start of the config space (window 0x100). */
export const IommuConfig = {
  PAGE_SIZE_MASK: 0,
  INPUT_RANGE_START: 8,
  INPUT_RANGE_END: 16,
  DOMAIN_RANGE_START: 24,
  DOMAIN_RANGE_END: 28,
  PROBE_SIZE: 32,
  BYPASS: 36,
  SIZE: 40,
} as const;

/** Request types (§5.13.6 "Device operations"; 6–9 are the project's PASID extension, docs/virtio-iommu.md §5). */
export const ReqType = {
  ATTACH: 1,
  DETACH: 2,
  MAP: 3,
  UNMAP: 4,
  PROBE: 5,
  /** D1/D2 number; VT-d first-level table for one PASID of an endpoint (D4 attach_pgt_vtd). */
  ATTACH_TABLE: 6,
  /** D1/D2/D4 number; layout of D2/D4's req_invalidate. */
  INVALIDATE: 7,
  /** D3 number; layout of D3 as revised in JPB's review (no domain, no pasid_valid byte). */
  PAGE_RESP: 8,
  /** Project-defined: undo ATTACH_TABLE for one PASID. */
  DETACH_TABLE: 9,
} as const;

export const REQ_TYPE_NAMES: Record<number, string> = {
  1: 'ATTACH', 2: 'DETACH', 3: 'MAP', 4: 'UNMAP', 5: 'PROBE', 6: 'ATTACH_TABLE', 7: 'INVALIDATE', 8: 'PAGE_RESP', 9: 'DETACH_TABLE',
};

/** Status codes in the tail (§5.13.6). */
export const ReqStatus = {
  OK: 0,
  IOERR: 1,
  UNSUPP: 2,
  DEVERR: 3,
  INVAL: 4,
  RANGE: 5,
  NOENT: 6,
  FAULT: 7,
  NOMEM: 8,
} as const;

export const STATUS_NAMES: Record<number, string> = {
  0: 'OK', 1: 'IOERR', 2: 'UNSUPP', 3: 'DEVERR', 4: 'INVAL', 5: 'RANGE', 6: 'NOENT', 7: 'FAULT', 8: 'NOMEM',
};

/** Every request starts with head{u8 type; u8 reserved[3]} and ends with tail{u8 status; u8 reserved[3]}. */
export const REQ_HEAD_SIZE = 4;
export const REQ_TAIL_SIZE = 4;

/** Device-readable bytes each request needs (head included, tail excluded). */
export const REQ_READABLE_SIZE: Record<number, number> = {
  [ReqType.ATTACH]: 20,
  [ReqType.DETACH]: 20,
  [ReqType.MAP]: 36,
  [ReqType.UNMAP]: 28,
  [ReqType.PROBE]: 72,
  [ReqType.ATTACH_TABLE]: 80,
  [ReqType.INVALIDATE]: 60,
  [ReqType.PAGE_RESP]: 32,
  [ReqType.DETACH_TABLE]: 28,
};

/** struct virtio_iommu_req_attach: domain, endpoint, flags, reserved[4]. */
export const AttachReq = { DOMAIN: 4, ENDPOINT: 8, FLAGS: 12, RESERVED: 16, RESERVED_SIZE: 4 } as const;
export const ATTACH_F_BYPASS = 1 << 0;

/** struct virtio_iommu_req_detach: domain, endpoint, reserved[8] (ignored by the device). */
export const DetachReq = { DOMAIN: 4, ENDPOINT: 8, RESERVED: 12, RESERVED_SIZE: 8 } as const;

/** struct virtio_iommu_req_map. virt_end is inclusive. */
export const MapReq = { DOMAIN: 4, VIRT_START: 8, VIRT_END: 16, PHYS_START: 24, FLAGS: 32 } as const;
export const MapFlag = { READ: 1 << 0, WRITE: 1 << 1, MMIO: 1 << 2 } as const;

/** struct virtio_iommu_req_unmap. */
export const UnmapReq = { DOMAIN: 4, VIRT_START: 8, VIRT_END: 16, RESERVED: 24, RESERVED_SIZE: 4 } as const;

/** struct virtio_iommu_req_probe: endpoint, reserved[64]; then writable properties[probe_size] + tail. */
export const ProbeReq = { ENDPOINT: 4, RESERVED: 8, RESERVED_SIZE: 64 } as const;

/** PROBE property header: le16 type (bits 11:0) + reserved (15:12); le16 length excluding the header. */
export const PROBE_PROPERTY_HEADER_SIZE = 4;
export const PROBE_T_MASK = 0xfff;
export const ProbeType = {
  NONE: 0,
  RESV_MEM: 1,
  /** PASID drafts (docs/virtio-iommu.md §5); emitted only with ATTACH_TABLE. */
  PASID_SIZE: 5,
  /** PASID drafts (docs/virtio-iommu.md §5), Tina Zhang's probe_pgt_vtd body; emitted only with ATTACH_TABLE. */
  PAGE_TABLE_FMT: 6,
} as const;
/** RESV_MEM body: u8 subtype, u8 reserved[3], le64 start, le64 end (inclusive). */
export const RESV_MEM_LENGTH = 20;
export const ResvMemSubtype = { RESERVED: 0, MSI: 1 } as const;
/** PASID_SIZE body: u8 bits, u8 reserved[3]. */
export const PASID_SIZE_LENGTH = 4;
/** PAGE_TABLE_FMT (VT-d): le16 format, u8 reserved[2], le64 cap_reg, le64 ecap_reg. */
export const PAGE_TABLE_FMT_VTD_LENGTH = 20;
/** Page-table format ids of the drafts (docs/virtio-iommu.md §5): PGTF_VTD = 4 (Tina Zhang). */
export const PGTF_VTD = 4;

/** The x86 MSI doorbell window every endpoint reports as RESV_MEM/MSI (as cloud-hypervisor, crosvm). */
export const MSI_WINDOW_START = 0xfee0_0000n;
export const MSI_WINDOW_END = 0xfeef_ffffn;

/** struct virtio_iommu_fault (24 bytes, §5.13.6 fault reporting); reserved1 carries the PASID as in the drafts. */
export const FaultEvent = { REASON: 0, FLAGS: 4, ENDPOINT: 8, PASID: 12, ADDRESS: 16, SIZE: 24 } as const;
export const FaultReason = {
  UNKNOWN: 0,
  /** Access while the endpoint is not attached to a domain. */
  DOMAIN: 1,
  /** Unmapped address or wrong permissions. */
  MAPPING: 2,
  /** Project: the event is a page request (FaultEvent layout + grpid), not a fault. */
  PAGE_REQUEST: 3,
} as const;
export const FaultFlag = {
  READ: 1 << 0,
  WRITE: 1 << 1,
  /** Linux's VIRTIO_IOMMU_FAULT_F_EXEC. */
  EXEC: 1 << 2,
  ADDRESS: 1 << 8,
  /** HW draft's FAULT_F_PASID: `pasid` (reserved1) is valid. */
  PASID: 1 << 9,
  /** Project (page requests): privileged-mode access. */
  PRIV: 1 << 10,
  /** Project (page requests): last page in group; the group wants one PAGE_RESP. */
  LAST: 1 << 11,
} as const;

/** Page-request event (project, 32 bytes): the fault layout, then le32 grpid, u8 reserved[4]. */
export const PageRequestEvent = { ...FaultEvent, GRPID: 24, SIZE: 32 } as const;

/**
 * ATTACH_TABLE (type 6) with format PGTF_VTD: D4's attach_pgt_vtd {head; le32 domain;
 * le32 endpoint; le32 flags; le16 format; u8 rsvd[2]; le32 pasid; le64 pgd; le64 fl_flags;
 * le32 addr_width; u8 rsvd2[36]; tail}.
 */
export const AttachTableReq = {
  DOMAIN: 4, ENDPOINT: 8, FLAGS: 12, FORMAT: 16, RSVD: 18, RSVD_SIZE: 2, PASID: 20, PGD: 24, FL_FLAGS: 32, ADDR_WIDTH: 40,
  RSVD2: 44, RSVD2_SIZE: 36,
} as const;
/** Project flag: enable page requests (PRI) for the endpoint while this table is attached. */
export const ATTACH_TABLE_F_PRI = 1 << 0;
/** fl_flags: the VT-d gpasid bind flags SRE, EAFE, PCD, PWT, EMTE, CD, WPE (bits 0–6). */
export const ATTACH_TABLE_FL_FLAGS_MASK = 0x7fn;

/** DETACH_TABLE (type 9, project): {head; le32 domain; le32 endpoint; le32 pasid; u8 reserved[12]; tail}. */
export const DetachTableReq = { DOMAIN: 4, ENDPOINT: 8, PASID: 12, RESERVED: 16, RESERVED_SIZE: 12 } as const;

/**
 * INVALIDATE (type 7), D2/D4 req_invalidate: {head; le16 inv_gran; le16 inv_type; le16 flags;
 * u8 rsvd1[2]; le32 domain; le32 pasid; u8 rsvd2[4]; le64 archid; le64 virt_start;
 * le64 nr_pages; u8 granule; u8 rsvd3[11]; tail}.
 */
export const InvalidateReq = {
  INV_GRAN: 4, INV_TYPE: 6, FLAGS: 8, RSVD1: 10, RSVD1_SIZE: 2, DOMAIN: 12, PASID: 16, RSVD2: 20, RSVD2_SIZE: 4,
  ARCHID: 24, VIRT_START: 32, NR_PAGES: 40, GRANULE: 48, RSVD3: 49, RSVD3_SIZE: 11,
} as const;
export const InvalGran = { DOMAIN: 1 << 0, PASID: 1 << 1, VA: 1 << 2 } as const;
export const InvalType = { IOTLB: 1 << 0, DEV_IOTLB: 1 << 1, PASID: 1 << 2 } as const;
export const INVAL_TYPE_MASK = 0x7;
export const InvalFlag = { PASID: 1 << 0, ARCHID: 1 << 1, LEAF: 1 << 2 } as const;
export const INVAL_FLAG_MASK = 0x7;

/**
 * PAGE_RESP (type 8), D3 after JPB's review: {head; le32 endpoint; le32 flags; le32 pasid;
 * le32 grpid; le16 resp_code; u8 reserved[10]; tail}.
 */
export const PageRespReq = { ENDPOINT: 4, FLAGS: 8, PASID: 12, GRPID: 16, CODE: 20, RESERVED: 22, RESERVED_SIZE: 10 } as const;
export const PAGE_RESP_F_PASID_VALID = 1 << 0;
export const PageRespCode = { SUCCESS: 0, INVALID: 1, FAILURE: 2 } as const;
