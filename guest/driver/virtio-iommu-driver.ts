/**
 * A Linux-like virtio-iommu driver (drivers/iommu/virtio-iommu.c in spirit) built only on the
 * GuestHandle's register and memory accesses (readl/writel/readq/writeq/memread/memwrite), so
 * it exercises the device model exactly as a guest kernel does (docs/design.md §3.3):
 *
 * - probe: reset, check magic / version / device ID, ACKNOWLEDGE + DRIVER, negotiate features
 *   (DeviceFeaturesSel / DriverFeaturesSel), FEATURES_OK (read back), read the config space,
 *   write `bypass`, set up requestq and eventq in guest RAM, DRIVER_OK, post event buffers;
 * - requests ATTACH / DETACH / MAP / UNMAP / PROBE and the PASID extension's ATTACH_TABLE /
 *   DETACH_TABLE / INVALIDATE / PAGE_RESP, one at a time: write the request, publish the
 *   chain, notify, wait for the used entry, read the tail;
 * - the eventq: fault and page-request reports, handed to a callback, buffers re-posted.
 *
 * Requests return the device's status (ReqStatus); a request the device returned unwritten
 * (used length 0) or a device that needs a reset is an EIO error.
 */
import { fail } from '../../src/errors.js';
import {
  ATTACH_F_BYPASS, AttachReq, AttachTableReq, DetachReq, DetachTableReq, EVENTQ, IommuConfig, InvalidateReq, MapReq, PAGE_RESP_F_PASID_VALID,
  PGTF_VTD, PROBE_PROPERTY_HEADER_SIZE, PROBE_T_MASK, PageRequestEvent, PageRespReq, ProbeReq, ProbeType, REQUESTQ, REQ_READABLE_SIZE,
  REQ_TAIL_SIZE, ReqStatus, ReqType, UnmapReq, VIRTIO_ID_IOMMU, VirtioIommuFeature,
} from '../virtio/iommu-spec.js';
import {
  VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION, VirtioMmio, VirtioStatus, VirtioTransportFeature,
} from '../virtio/mmio-regs.js';
import { decodeEvent, type EventReport } from '../virtio/events.js';
import { LeWriter, ReqReader } from '../virtio/state.js';
import { PAGE_SIZE, type GuestMemory, type GuestRegisters } from './guest-memory.js';
import type { PageAllocator } from './page-allocator.js';

const VIRTQ_DESC_F_NEXT = 1;
const VIRTQ_DESC_F_WRITE = 2;
const VIRTQ_DESC_F_INDIRECT = 4;

export type VirtioIommuGuest = GuestMemory & GuestRegisters;

/** Every feature this driver knows how to use. */
export const DRIVER_FEATURES =
  (1n << VirtioTransportFeature.VERSION_1) |
  (1n << VirtioTransportFeature.INDIRECT_DESC) |
  (1n << VirtioIommuFeature.INPUT_RANGE) |
  (1n << VirtioIommuFeature.DOMAIN_RANGE) |
  (1n << VirtioIommuFeature.MAP_UNMAP) |
  (1n << VirtioIommuFeature.PROBE) |
  (1n << VirtioIommuFeature.BYPASS_CONFIG) |
  (1n << VirtioIommuFeature.ATTACH_TABLE);

export interface VirtioIommuDriverOptions {
  /** Pages for the queues and request buffers. */
  alloc: PageAllocator;
  /** Features the driver may accept (intersected with the offer); default DRIVER_FEATURES. */
  features?: bigint;
  /** Config `bypass` to write when BYPASS_CONFIG is negotiated (Linux: iommu.passthrough); default false. */
  bypass?: boolean;
  /** Queue size for both queues (≤ QueueNumMax, power of two); default 64. */
  queueSize?: number;
  /** Event buffers posted on the eventq; default 16. */
  eventBuffers?: number;
  /** Submit requests through an indirect descriptor table (needs INDIRECT_DESC); default false. */
  indirect?: boolean;
  /** Called for every event report read from the eventq. */
  onEvent?: (ev: EventReport) => void | Promise<void>;
  /** How long a request may wait for its used entry (ms); default 5000. */
  timeoutMs?: number;
}

export interface VirtioIommuConfig {
  pageSizeMask: bigint;
  inputRange: { start: bigint; end: bigint };
  domainRange: { start: number; end: number };
  probeSize: number;
  bypass: number;
}

export interface ProbeProperty {
  type: number;
  length: number;
  body: Uint8Array;
  /** RESV_MEM decoded. */
  resvMem?: { subtype: number; start: bigint; end: bigint };
  /** PASID_SIZE decoded. */
  pasidBits?: number;
  /** PAGE_TABLE_FMT decoded. */
  pageTable?: { format: number; cap: bigint; ecap: bigint };
}

export interface SubmitResult {
  usedLen: number;
  /** The writable part as the device left it. */
  out: Uint8Array;
  /** Tail status, or null for used length 0. */
  status: number | null;
}

export interface AttachTableArgs {
  domain: number;
  endpoint: number;
  pasid: number;
  /** Root of the guest first-level table (GPA). */
  pgd: bigint;
  /** 48 or 57. */
  addrWidth: number;
  /** VT-d bind flags (SRE, EAFE, PCD, PWT, EMTE, CD, WPE); default 0. */
  flFlags?: bigint;
  /** Enable page requests for the endpoint (ATTACH_TABLE_F_PRI). */
  pri?: boolean;
  /** Raw flags (overrides `pri`), for tests of the device's checks. */
  flags?: number;
  /** Page-table format; default PGTF_VTD. */
  format?: number;
}

export interface InvalidateArgs {
  /** InvalGran value. */
  granularity: number;
  /** InvalType bits. */
  type: number;
  /** InvalFlag bits; default PASID when granularity is not DOMAIN. */
  flags?: number;
  domain: number;
  pasid?: number;
  virtStart?: bigint;
  nrPages?: bigint;
  /** log2 of the page size; default 12. */
  granule?: number;
}

interface Queue {
  size: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  availIdx: number;
  lastUsed: number;
}

export class VirtioIommuDriver {
  features = 0n;
  config!: VirtioIommuConfig;
  private requestq!: Queue;
  private eventq!: Queue;
  private reqBuf = 0n;
  private respBuf = 0n;
  private indirectTable = 0n;
  private eventBufs = 0n;
  private readonly pages: bigint[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private readonly queueSize: number;
  private readonly eventBuffers: number;
  readonly events: EventReport[] = [];

  private constructor(
    readonly guest: VirtioIommuGuest,
    private readonly opts: VirtioIommuDriverOptions,
  ) {
    this.queueSize = opts.queueSize ?? 64;
    this.eventBuffers = opts.eventBuffers ?? 16;
  }

  /** Find and bring up the device (virtio 1.x §3.1.1 driver initialization). */
  static async probe(guest: VirtioIommuGuest, opts: VirtioIommuDriverOptions): Promise<VirtioIommuDriver> {
    const d = new VirtioIommuDriver(guest, opts);
    await d.init();
    return d;
  }

  has(bit: bigint): boolean {
    return ((this.features >> bit) & 1n) === 1n;
  }

  private async init(): Promise<void> {
    const g = this.guest;
    if ((await g.readl(VirtioMmio.MAGIC_VALUE)) !== VIRTIO_MMIO_MAGIC) fail('ENODEV', 'no virtio-mmio magic value');
    const version = await g.readl(VirtioMmio.VERSION);
    if (version !== VIRTIO_MMIO_VERSION) fail('ENODEV', `virtio-mmio version ${version}, expected 2`);
    const id = await g.readl(VirtioMmio.DEVICE_ID);
    if (id !== VIRTIO_ID_IOMMU) fail('ENODEV', `virtio device ID ${id} is not virtio-iommu (23)`);
    await g.writel(VirtioMmio.STATUS, 0);
    await this.setStatus(VirtioStatus.ACKNOWLEDGE);
    await this.setStatus(VirtioStatus.DRIVER);

    let offered = 0n;
    for (const sel of [0, 1]) {
      await g.writel(VirtioMmio.DEVICE_FEATURES_SEL, sel);
      offered |= BigInt(await g.readl(VirtioMmio.DEVICE_FEATURES)) << BigInt(32 * sel);
    }
    let want = offered & (this.opts.features ?? DRIVER_FEATURES);
    if (((want >> VirtioIommuFeature.MAP_UNMAP) & 1n) === 0n) await this.failDevice('device does not offer MAP_UNMAP');
    if (((want >> VirtioTransportFeature.VERSION_1) & 1n) === 0n) await this.failDevice('device does not offer VERSION_1');
    for (const sel of [0, 1]) {
      await g.writel(VirtioMmio.DRIVER_FEATURES_SEL, sel);
      await g.writel(VirtioMmio.DRIVER_FEATURES, Number((want >> BigInt(32 * sel)) & 0xffff_ffffn));
    }
    await this.setStatus(VirtioStatus.FEATURES_OK);
    if (!((await g.readl(VirtioMmio.STATUS)) & VirtioStatus.FEATURES_OK)) await this.failDevice('device did not accept the features');
    this.features = want;

    this.config = await this.readConfig();
    if (this.has(VirtioIommuFeature.BYPASS_CONFIG)) {
      await g.writel(VirtioMmio.CONFIG + IommuConfig.BYPASS, this.opts.bypass ? 1 : 0);
      this.config.bypass = this.opts.bypass ? 1 : 0;
    }

    const alloc = this.opts.alloc;
    const take = async (n = 1): Promise<bigint> => {
      const p = await alloc.alloc(n);
      this.pages.push(p);
      return p;
    };
    this.requestq = await this.setupQueue(REQUESTQ, take);
    this.eventq = await this.setupQueue(EVENTQ, take);
    this.reqBuf = await take();
    this.respBuf = await take();
    this.indirectTable = await take();
    this.eventBufs = await take();
    await this.setStatus(VirtioStatus.DRIVER_OK);

    // Post every event buffer (64 bytes apart, each large enough for a page-request report).
    const n = Math.min(this.eventBuffers, this.queueSize, PAGE_SIZE / 64);
    for (let i = 0; i < n; i++) await this.writeDesc(this.eventq.desc, i, this.eventBufs + BigInt(64 * i), PageRequestEvent.SIZE, VIRTQ_DESC_F_WRITE, 0);
    for (let i = 0; i < n; i++) await this.publish(this.eventq, i);
    await g.writel(VirtioMmio.QUEUE_NOTIFY, EVENTQ);
  }

  private async failDevice(why: string): Promise<never> {
    await this.guest.writel(VirtioMmio.STATUS, (await this.guest.readl(VirtioMmio.STATUS)) | VirtioStatus.FAILED);
    fail('ENODEV', `virtio-iommu: ${why}`);
  }

  private async setStatus(bit: number): Promise<void> {
    const s = await this.guest.readl(VirtioMmio.STATUS);
    await this.guest.writel(VirtioMmio.STATUS, s | bit);
  }

  /** Device status register. */
  status(): Promise<number> {
    return this.guest.readl(VirtioMmio.STATUS);
  }

  async readConfig(): Promise<VirtioIommuConfig> {
    const g = this.guest;
    const C = VirtioMmio.CONFIG;
    for (;;) {
      const gen = await g.readl(VirtioMmio.CONFIG_GENERATION);
      const cfg: VirtioIommuConfig = {
        pageSizeMask: await g.readq(C + IommuConfig.PAGE_SIZE_MASK),
        inputRange: { start: 0n, end: (1n << 64n) - 1n },
        domainRange: { start: 0, end: 0xffff_ffff },
        probeSize: await g.readl(C + IommuConfig.PROBE_SIZE),
        bypass: (await g.readl(C + IommuConfig.BYPASS)) & 0xff,
      };
      if (this.has(VirtioIommuFeature.INPUT_RANGE)) {
        cfg.inputRange = { start: await g.readq(C + IommuConfig.INPUT_RANGE_START), end: await g.readq(C + IommuConfig.INPUT_RANGE_END) };
      }
      if (this.has(VirtioIommuFeature.DOMAIN_RANGE)) {
        cfg.domainRange = { start: await g.readl(C + IommuConfig.DOMAIN_RANGE_START), end: await g.readl(C + IommuConfig.DOMAIN_RANGE_END) };
      }
      if ((await g.readl(VirtioMmio.CONFIG_GENERATION)) === gen) return cfg;
    }
  }

  private async setupQueue(index: number, take: (n?: number) => Promise<bigint>): Promise<Queue> {
    const g = this.guest;
    await g.writel(VirtioMmio.QUEUE_SEL, index);
    if ((await g.readl(VirtioMmio.QUEUE_READY)) !== 0) fail('EBUSY', `queue ${index} is already live`);
    const max = await g.readl(VirtioMmio.QUEUE_NUM_MAX);
    if (max === 0) fail('ENODEV', `queue ${index} does not exist`);
    const size = Math.min(this.queueSize, max);
    // Descriptor table on its own page(s); available ring and used ring on their own pages.
    const q: Queue = {
      size,
      desc: await take(Math.ceil((16 * size) / PAGE_SIZE)),
      avail: await take(),
      used: await take(Math.ceil((6 + 8 * size) / PAGE_SIZE)),
      availIdx: 0,
      lastUsed: 0,
    };
    await g.writel(VirtioMmio.QUEUE_NUM, size);
    await g.writel(VirtioMmio.QUEUE_DESC_LOW, Number(q.desc & 0xffff_ffffn));
    await g.writel(VirtioMmio.QUEUE_DESC_HIGH, Number(q.desc >> 32n));
    await g.writel(VirtioMmio.QUEUE_DRIVER_LOW, Number(q.avail & 0xffff_ffffn));
    await g.writel(VirtioMmio.QUEUE_DRIVER_HIGH, Number(q.avail >> 32n));
    await g.writel(VirtioMmio.QUEUE_DEVICE_LOW, Number(q.used & 0xffff_ffffn));
    await g.writel(VirtioMmio.QUEUE_DEVICE_HIGH, Number(q.used >> 32n));
    await g.writel(VirtioMmio.QUEUE_READY, 1);
    return q;
  }

  /** Where the queues live (tests that write raw descriptors use these). */
  queueLayout(index: number): { size: number; desc: bigint; avail: bigint; used: bigint } {
    const q = index === REQUESTQ ? this.requestq : this.eventq;
    return { size: q.size, desc: q.desc, avail: q.avail, used: q.used };
  }

  private async writeDesc(table: bigint, i: number, addr: bigint, len: number, flags: number, next: number): Promise<void> {
    const w = new LeWriter(16).u64(0, addr).u32(8, len).u16(12, flags).u16(14, next);
    await this.guest.memwrite(table + BigInt(16 * i), w.bytes);
  }

  private async u16(gpa: bigint): Promise<number> {
    const b = await this.guest.memread(gpa, 2);
    return b[0]! | (b[1]! << 8);
  }

  /** Put `head` in the available ring and publish the new index. */
  private async publish(q: Queue, head: number): Promise<void> {
    const slot = q.availIdx % q.size;
    await this.guest.memwrite(q.avail + 4n + BigInt(2 * slot), new LeWriter(2).u16(0, head).bytes);
    q.availIdx = (q.availIdx + 1) & 0xffff;
    await this.guest.memwrite(q.avail + 2n, new LeWriter(2).u16(0, q.availIdx).bytes);
  }

  /** The used entries the device added since the last look. */
  private async reap(q: Queue): Promise<{ id: number; len: number }[]> {
    const idx = await this.u16(q.used + 2n);
    const out: { id: number; len: number }[] = [];
    while (q.lastUsed !== idx) {
      const slot = q.lastUsed % q.size;
      const e = new ReqReader(await this.guest.memread(q.used + 4n + BigInt(8 * slot), 8));
      out.push({ id: e.u32(0), len: e.u32(4) });
      q.lastUsed = (q.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Acknowledge whatever interrupts are pending (the driver polls instead of taking them). */
  private async ackInterrupts(): Promise<number> {
    const s = await this.guest.readl(VirtioMmio.INTERRUPT_STATUS);
    if (s) await this.guest.writel(VirtioMmio.INTERRUPT_ACK, s);
    return s;
  }

  /**
   * Submit one request: `req` is the device-readable part, `writable` the size of the
   * device-writable part (properties + tail for PROBE, the tail otherwise).
   */
  submit(req: Uint8Array, writable: number = REQ_TAIL_SIZE): Promise<SubmitResult> {
    const run = this.chain.then(() => this.submitNow(req, writable));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async submitNow(req: Uint8Array, writable: number): Promise<SubmitResult> {
    if (req.length > PAGE_SIZE || writable > PAGE_SIZE) fail('EINVAL', 'request larger than a page');
    const g = this.guest;
    const q = this.requestq;
    await g.memwrite(this.reqBuf, req);
    await g.memwrite(this.respBuf, new Uint8Array(writable));
    if (this.opts.indirect && this.has(VirtioTransportFeature.INDIRECT_DESC)) {
      await this.writeDesc(this.indirectTable, 0, this.reqBuf, req.length, VIRTQ_DESC_F_NEXT, 1);
      await this.writeDesc(this.indirectTable, 1, this.respBuf, writable, VIRTQ_DESC_F_WRITE, 0);
      await this.writeDesc(q.desc, 0, this.indirectTable, 32, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      await this.writeDesc(q.desc, 0, this.reqBuf, req.length, VIRTQ_DESC_F_NEXT, 1);
      await this.writeDesc(q.desc, 1, this.respBuf, writable, VIRTQ_DESC_F_WRITE, 0);
    }
    await this.publish(q, 0);
    await g.writel(VirtioMmio.QUEUE_NOTIFY, REQUESTQ);
    const deadline = Date.now() + (this.opts.timeoutMs ?? 5000);
    for (;;) {
      const used = await this.reap(q);
      if (used.length > 0) {
        await this.ackInterrupts();
        const { len } = used[used.length - 1]!;
        const out = await g.memread(this.respBuf, writable);
        const status = len >= REQ_TAIL_SIZE ? out[writable - REQ_TAIL_SIZE]! : null;
        return { usedLen: len, out, status };
      }
      if ((await this.status()) & VirtioStatus.DEVICE_NEEDS_RESET) fail('EIO', 'virtio-iommu needs a reset');
      if (Date.now() > deadline) fail('ETIMEDOUT', 'virtio-iommu request was not completed');
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  private async request(req: Uint8Array, writable = REQ_TAIL_SIZE): Promise<number> {
    const r = await this.submit(req, writable);
    if (r.status === null) fail('EIO', `virtio-iommu returned request type ${req[0]} unwritten`);
    return r.status;
  }

  private build(type: number): LeWriter {
    return new LeWriter(REQ_READABLE_SIZE[type]!).u8(0, type);
  }

  attach(domain: number, endpoint: number, opts: { bypass?: boolean; flags?: number } = {}): Promise<number> {
    const flags = opts.flags ?? (opts.bypass ? ATTACH_F_BYPASS : 0);
    return this.request(this.build(ReqType.ATTACH).u32(AttachReq.DOMAIN, domain).u32(AttachReq.ENDPOINT, endpoint).u32(AttachReq.FLAGS, flags).bytes);
  }

  detach(domain: number, endpoint: number): Promise<number> {
    return this.request(this.build(ReqType.DETACH).u32(DetachReq.DOMAIN, domain).u32(DetachReq.ENDPOINT, endpoint).bytes);
  }

  /** MAP [virtStart, virtEnd] (inclusive) → physStart with MapFlag bits. */
  map(domain: number, virtStart: bigint, virtEnd: bigint, physStart: bigint, flags: number): Promise<number> {
    return this.request(this.build(ReqType.MAP).u32(MapReq.DOMAIN, domain).u64(MapReq.VIRT_START, virtStart).u64(MapReq.VIRT_END, virtEnd)
      .u64(MapReq.PHYS_START, physStart).u32(MapReq.FLAGS, flags).bytes);
  }

  unmap(domain: number, virtStart: bigint, virtEnd: bigint): Promise<number> {
    return this.request(this.build(ReqType.UNMAP).u32(UnmapReq.DOMAIN, domain).u64(UnmapReq.VIRT_START, virtStart).u64(UnmapReq.VIRT_END, virtEnd).bytes);
  }

  /** PROBE an endpoint: status and the properties (parsed as Linux's viommu_probe_endpoint). */
  async probeEndpoint(endpoint: number): Promise<{ status: number; properties: ProbeProperty[] }> {
    const size = this.config.probeSize;
    const r = await this.submit(this.build(ReqType.PROBE).u32(ProbeReq.ENDPOINT, endpoint).bytes, size + REQ_TAIL_SIZE);
    if (r.status === null) fail('EIO', 'virtio-iommu returned PROBE unwritten');
    const properties: ProbeProperty[] = [];
    if (r.status !== ReqStatus.OK) return { status: r.status, properties };
    const v = new ReqReader(r.out);
    let off = 0;
    while (off + PROBE_PROPERTY_HEADER_SIZE <= size) {
      const head = v.u16(off);
      const type = head & PROBE_T_MASK;
      const length = v.u16(off + 2);
      if (type === ProbeType.NONE) break;
      if (off + PROBE_PROPERTY_HEADER_SIZE + length > size) break;
      const body = r.out.slice(off + 4, off + 4 + length);
      // Properties with reserved type bits are ignored; unknown types are skipped.
      if ((head & ~PROBE_T_MASK) === 0) {
        const p: ProbeProperty = { type, length, body };
        const b = new ReqReader(body);
        if (type === ProbeType.RESV_MEM && length >= 20) p.resvMem = { subtype: b.u8(0), start: b.u64(4), end: b.u64(12) };
        if (type === ProbeType.PASID_SIZE && length >= 1) p.pasidBits = b.u8(0);
        if (type === ProbeType.PAGE_TABLE_FMT && length >= 20) p.pageTable = { format: b.u16(0), cap: b.u64(4), ecap: b.u64(12) };
        properties.push(p);
      }
      off += PROBE_PROPERTY_HEADER_SIZE + length;
    }
    return { status: r.status, properties };
  }

  attachTable(a: AttachTableArgs): Promise<number> {
    const flags = a.flags ?? (a.pri ? 1 : 0);
    return this.request(this.build(ReqType.ATTACH_TABLE)
      .u32(AttachTableReq.DOMAIN, a.domain).u32(AttachTableReq.ENDPOINT, a.endpoint).u32(AttachTableReq.FLAGS, flags)
      .u16(AttachTableReq.FORMAT, a.format ?? PGTF_VTD).u32(AttachTableReq.PASID, a.pasid).u64(AttachTableReq.PGD, a.pgd)
      .u64(AttachTableReq.FL_FLAGS, a.flFlags ?? 0n).u32(AttachTableReq.ADDR_WIDTH, a.addrWidth).bytes);
  }

  detachTable(domain: number, endpoint: number, pasid: number): Promise<number> {
    return this.request(this.build(ReqType.DETACH_TABLE).u32(DetachTableReq.DOMAIN, domain).u32(DetachTableReq.ENDPOINT, endpoint).u32(DetachTableReq.PASID, pasid).bytes);
  }

  invalidate(a: InvalidateArgs): Promise<number> {
    const flags = a.flags ?? (a.granularity === 1 ? 0 : 1);
    return this.request(this.build(ReqType.INVALIDATE)
      .u16(InvalidateReq.INV_GRAN, a.granularity).u16(InvalidateReq.INV_TYPE, a.type).u16(InvalidateReq.FLAGS, flags)
      .u32(InvalidateReq.DOMAIN, a.domain).u32(InvalidateReq.PASID, a.pasid ?? 0)
      .u64(InvalidateReq.VIRT_START, a.virtStart ?? 0n).u64(InvalidateReq.NR_PAGES, a.nrPages ?? 0n).u8(InvalidateReq.GRANULE, a.granule ?? 12).bytes);
  }

  /** Answer a page-request group (PageRespCode). */
  pageResponse(a: { endpoint: number; pasid?: number; grpid: number; code: number }): Promise<number> {
    return this.request(this.build(ReqType.PAGE_RESP)
      .u32(PageRespReq.ENDPOINT, a.endpoint).u32(PageRespReq.FLAGS, a.pasid === undefined ? 0 : PAGE_RESP_F_PASID_VALID)
      .u32(PageRespReq.PASID, a.pasid ?? 0).u32(PageRespReq.GRPID, a.grpid).u16(PageRespReq.CODE, a.code).bytes);
  }

  /**
   * Service the eventq once: read every used buffer, decode it, hand it to onEvent, re-post
   * the buffer. Returns the reports read (ignored ones — reserved bits set — are skipped).
   */
  async pollEvents(): Promise<EventReport[]> {
    const used = await this.reap(this.eventq);
    if (used.length === 0) return [];
    await this.ackInterrupts();
    const out: EventReport[] = [];
    for (const u of used) {
      const bytes = await this.guest.memread(this.eventBufs + BigInt(64 * u.id), PageRequestEvent.SIZE);
      const ev = u.len > 0 ? decodeEvent(bytes.subarray(0, u.len)) : null;
      await this.publish(this.eventq, u.id);
      if (!ev) continue;
      out.push(ev);
      this.events.push(ev);
      await this.opts.onEvent?.(ev);
    }
    await this.guest.writel(VirtioMmio.QUEUE_NOTIFY, EVENTQ);
    return out;
  }

  /** Poll the eventq until a report matching `pred` arrives (ETIMEDOUT after timeoutMs). */
  async waitForEvent(pred: (ev: EventReport) => boolean = () => true, timeoutMs = 5000): Promise<EventReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const ev of await this.pollEvents()) if (pred(ev)) return ev;
      if (Date.now() > deadline) fail('ETIMEDOUT', 'no matching virtio-iommu event arrived');
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Reset the device (Status 0) and give the driver's pages back. */
  async remove(): Promise<void> {
    await this.guest.writel(VirtioMmio.STATUS, 0);
    for (const p of this.pages.splice(0)) this.opts.alloc.free(p);
  }
}
