/**
 * The virtio-iommu device (virtio 1.2 §5.13 "IOMMU Device"; docs/design.md §3.2) behind the virtio-mmio transport:
 * requestq requests ATTACH / DETACH / MAP / UNMAP / PROBE with the spec's normative status
 * rules, eventq fault reports, and — under VIRTIO_IOMMU_F_ATTACH_TABLE — the project's PASID
 * extension (guest/virtio/pasid-ext.ts).
 *
 * Guest domains become host domains: a domain is created by its first ATTACH (DOMAIN_ALLOC on
 * the host; a bypass domain is the VM's GPA domain 0), endpoints' RIDs are attached to it, MAP /
 * UNMAP become DMA_MAP / DMA_UNMAP on it (IOVA → guest page → host page), and it is freed when
 * its last endpoint leaves. The guest-visible mapping tree is kept here so the overlap and split
 * rules are decided before anything reaches the host; every request checks first and changes
 * state only after the host agreed.
 *
 * An unattached endpoint is in bypass (its RID on host domain 0) while config `bypass` is 1,
 * and has no host attachment at all (its DMA faults) while it is 0 (§5.13.6 "Device operations", with
 * BYPASS_CONFIG offered and BYPASS not).
 *
 * Host requests go through the VM's uAPI (guest/uapi/): on iommufd a domain is an IOAS, MAP /
 * UNMAP are IOAS_MAP / IOAS_UNMAP, bypass is the nest-parent HWPT over guest RAM, and an
 * endpoint moving between domains is re-attached in place (DEVICE_REPLACE).
 */
import { isVsvaError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { DmaMapFlag } from '../../vhost/messages/dma.js';
import { FaultFlag as HostFaultFlag } from '../../vhost/messages/backend.js';
import type { BackendEvent } from '../../vhost/roles/frontend.js';
import { emptyReplayReport, type GuestContext, type HostCalls, type HostResources, type ReplayReport } from '../viommu.js';
import type { HostUapi } from '../uapi/host-uapi.js';
import { VfioSvaUapi } from '../uapi/vfio-sva.js';
import { encodeFault, virtioFaultReason } from './events.js';
import {
  ATTACH_F_BYPASS, AttachReq, DetachReq, EVENTQ, FaultFlag, IommuConfig, MSI_WINDOW_END, MSI_WINDOW_START, MapFlag, MapReq,
  PASID_SIZE_LENGTH, PAGE_TABLE_FMT_VTD_LENGTH, PGTF_VTD, PROBE_PROPERTY_HEADER_SIZE, ProbeReq, ProbeType, REQUESTQ, REQ_READABLE_SIZE,
  REQ_TAIL_SIZE, REQ_TYPE_NAMES, RESV_MEM_LENGTH, ReqStatus, ReqType, ResvMemSubtype, STATUS_NAMES, UnmapReq, VIRTIO_ID_IOMMU,
  VirtioIommuFeature,
} from './iommu-spec.js';
import { VirtioTransportFeature } from './mmio-regs.js';
import { VirtioMmioTransport, type VirtioDevice } from './mmio-transport.js';
import { PasidExtension, type PasidExtensionHost } from './pasid-ext.js';
import { replayDomains } from './host-replay.js';
import { ReqFail, reject, statusOf } from './req-status.js';
import { LeWriter, ReqReader, newDomain, type Domain, type Endpoint } from './state.js';
import { RingError, type DescChain } from './virtqueue.js';

export interface VirtioIommuOptions {
  /** Config `bypass` after system reset (QEMU's boot-bypass); default true. */
  bypass?: boolean;
  /** QueueNumMax of both queues; default 256. */
  queueNumMax?: number;
  /** Config probe_size; default 512 (as QEMU). */
  probeSize?: number;
  /** Config domain_range (inclusive); default 1..0xffff. */
  domainRange?: { start: number; end: number };
  /** Config input_range (inclusive); default 0..2^48−1 (the host's 4-level second level). */
  inputRange?: { start: bigint; end: bigint };
  /** Offer the PASID extension (VIRTIO_IOMMU_F_ATTACH_TABLE); default true. */
  pasid?: boolean;
}

/** 4 KiB granule; 2 MiB and 1 GiB are hints (page_size_mask, §5.13.4 "Device configuration layout"). */
export const PAGE_SIZE_MASK = (1n << 12n) | (1n << 21n) | (1n << 30n);
const GRANULE = 0x1000n;
/** Events held while the driver has no eventq buffer posted. */
export const MAX_PENDING_EVENTS = 128;

interface PendingEvent {
  bytes: Uint8Array;
  /** Called when the event is dropped instead of delivered. */
  onDrop?: () => void;
}

export class VirtioIommuDevice implements VirtioDevice, PasidExtensionHost {
  readonly deviceId = VIRTIO_ID_IOMMU;
  readonly numQueues = 2;
  readonly configSize = IommuConfig.SIZE;
  readonly queueNumMax: number;
  readonly offeredFeatures: bigint;
  readonly transport: VirtioMmioTransport;
  readonly endpoints = new Map<number, Endpoint>();
  readonly domains = new Map<number, Domain>();
  readonly pasid: PasidExtension;
  readonly probeSize: number;
  readonly domainRange: { start: number; end: number };
  readonly inputRange: { start: bigint; end: bigint };
  /** Config `bypass` (sticky across device reset). */
  bypass: boolean;
  readonly client: HostCalls;
  /** The VM's host uAPI (guest/uapi/; VFIO SVA over `client` when the context has none). */
  readonly uapi: HostUapi;
  readonly log: Logger;
  private pendingEvents: PendingEvent[] = [];
  /** Events dropped (no buffer and the pending list full, or a buffer too small). */
  droppedEvents = 0;

  constructor(
    readonly ctx: GuestContext,
    opts: VirtioIommuOptions = {},
  ) {
    this.client = ctx.client;
    this.uapi = ctx.uapi ?? new VfioSvaUapi(ctx.client);
    this.log = ctx.log;
    this.queueNumMax = opts.queueNumMax ?? 256;
    this.probeSize = opts.probeSize ?? 512;
    this.domainRange = opts.domainRange ?? { start: 1, end: 0xffff };
    this.inputRange = opts.inputRange ?? { start: 0n, end: (1n << 48n) - 1n };
    this.bypass = opts.bypass ?? true;
    let f = (1n << VirtioTransportFeature.VERSION_1) | (1n << VirtioTransportFeature.INDIRECT_DESC);
    for (const b of [VirtioIommuFeature.INPUT_RANGE, VirtioIommuFeature.DOMAIN_RANGE, VirtioIommuFeature.MAP_UNMAP, VirtioIommuFeature.PROBE, VirtioIommuFeature.BYPASS_CONFIG]) f |= 1n << b;
    if (opts.pasid ?? true) f |= 1n << VirtioIommuFeature.ATTACH_TABLE;
    this.offeredFeatures = f;
    for (const dev of ctx.devices) this.endpoints.set(dev.rid, { dev, id: dev.rid, domain: null, host: null, tables: new Map() });
    this.transport = new VirtioMmioTransport(ctx.ram, ctx.log, ctx.trace, ctx.name);
    this.transport.attach(this);
    this.pasid = new PasidExtension(this);
  }

  /**
   * Put every endpoint's host attachment in its reset state. The host's attachment of a freshly
   * added device is not assumed: each RID is detached from domain 0 (an error there means it was
   * not attached) and then placed by the bypass rule.
   */
  async init(): Promise<void> {
    for (const ep of this.endpoints.values()) {
      try {
        await this.uapi.detachRid(ep.id, 0);
      } catch (e) {
        if (!isVsvaError(e)) throw e;
      }
      ep.host = null;
      await this.placeUnattached(ep);
    }
  }

  has(bit: bigint): boolean {
    return this.transport.has(bit);
  }

  // --- config space (§5.13.4) --------------------------------------------------------------------

  configRead(offset: number, size: 4 | 8): bigint {
    const c = new LeWriter(IommuConfig.SIZE)
      .u64(IommuConfig.PAGE_SIZE_MASK, PAGE_SIZE_MASK)
      .u64(IommuConfig.INPUT_RANGE_START, this.inputRange.start)
      .u64(IommuConfig.INPUT_RANGE_END, this.inputRange.end)
      .u32(IommuConfig.DOMAIN_RANGE_START, this.domainRange.start)
      .u32(IommuConfig.DOMAIN_RANGE_END, this.domainRange.end)
      .u32(IommuConfig.PROBE_SIZE, this.probeSize)
      .u8(IommuConfig.BYPASS, this.bypass ? 1 : 0).bytes;
    const r = new ReqReader(c);
    return size === 8 ? r.u64(offset) : BigInt(r.u32(offset));
  }

  /** Only `bypass` is writable, with 0 or 1, once BYPASS_CONFIG is negotiated (§5.13.4). */
  async configWrite(offset: number, size: 4 | 8, value: bigint): Promise<void> {
    const at = IommuConfig.BYPASS - offset;
    if (at < 0 || at >= size) return;
    if (!this.has(VirtioIommuFeature.BYPASS_CONFIG)) return;
    const b = Number((value >> BigInt(8 * at)) & 0xffn);
    if (b > 1) {
      this.log.warn({ value: b }, 'virtio-iommu: config bypass write of a value other than 0 or 1 ignored');
      return;
    }
    if ((b === 1) === this.bypass) return;
    this.bypass = b === 1;
    for (const ep of this.endpoints.values()) if (!ep.domain) await this.placeUnattached(ep);
  }

  // --- transport callbacks ------------------------------------------------------------------------

  async notify(index: number): Promise<void> {
    try {
      if (index === REQUESTQ) await this.serveRequests();
      else if (index === EVENTQ) this.flushEvents();
    } catch (e) {
      if (e instanceof RingError) this.transport.needsReset(e.message);
      else throw e;
    }
  }

  driverOk(): void {
    try {
      this.flushEvents();
    } catch (e) {
      if (e instanceof RingError) this.transport.needsReset(e.message);
      else throw e;
    }
  }

  /** Reset detaches everything (§5.13.6); config bypass is sticky. */
  async reset(): Promise<void> {
    this.pendingEvents = [];
    for (const ep of this.endpoints.values()) {
      await this.pasid.detachAll(ep);
      ep.domain = null;
      await this.placeUnattached(ep);
    }
    for (const d of [...this.domains.values()]) {
      d.endpoints.clear();
      await this.destroyDomain(d);
    }
    this.pasid.reset();
  }

  /** Release what the model holds on the host (best effort; the host also cleans up on disconnect). */
  async close(): Promise<void> {
    for (const ep of this.endpoints.values()) {
      try {
        await this.pasid.detachAll(ep);
      } catch (e) {
        this.log.debug({ err: e }, 'virtio-iommu close: unbind failed');
      }
    }
    for (const d of [...this.domains.values()]) {
      try {
        for (const ep of d.endpoints) await this.setHost(ep, null);
        d.endpoints.clear();
        await this.destroyDomain(d);
      } catch (e) {
        this.log.debug({ err: e }, 'virtio-iommu close: domain teardown failed');
      }
    }
  }

  // --- reconnect -----------------------------------------------------------------------------------

  /**
   * Replay on a fresh host (ViommuModel.replay; docs/reliability.md §2): domains, mappings and
   * endpoint attachments (host-replay.ts), then the PASID extension re-allocates its host
   * PASIDs and re-binds every table. Guest domain ids,
   * mappings and guest PASIDs do not change.
   */
  async replay(host: HostCalls): Promise<ReplayReport> {
    const r = emptyReplayReport();
    await replayDomains(this.uapi.via(host), this.domains.values(), this.endpoints.values(), r);
    await this.pasid.replay(host, r);
    return r;
  }

  /** Host PASIDs and domains this device holds (reconciliation after a resume). */
  hostResources(): HostResources {
    const domains = new Set<number>();
    for (const d of this.domains.values()) if (!d.bypass) domains.add(d.hostId);
    return { pasids: new Set(this.pasid.pasidMap().map((p) => p.hpasid)), domains };
  }

  // --- requestq -----------------------------------------------------------------------------------

  private async serveRequests(): Promise<void> {
    for (;;) {
      const vq = this.transport.queue(REQUESTQ);
      if (!vq) return;
      const chain = vq.pop();
      if (!chain) return;
      const used = await this.serve(chain);
      vq.push(chain.head, used);
      this.transport.raiseUsed();
    }
  }

  /** Serve one request; returns the used length (0: buffers returned unwritten). */
  private async serve(chain: DescChain): Promise<number> {
    const vq = this.transport.queue(REQUESTQ)!;
    if (chain.readableLen < 4 || chain.writableLen < REQ_TAIL_SIZE) return 0;
    const req = new ReqReader(vq.gather(chain));
    const type = req.u8(0);
    const need = REQ_READABLE_SIZE[type];
    if (need === undefined || !this.typeEnabled(type) || chain.readableLen < need) {
      this.traceRequest(type, null, 'unrecognized or unparsable: used length 0');
      return 0;
    }
    const outLen = chain.writableLen - REQ_TAIL_SIZE;
    let status: number;
    let output: Uint8Array | null = null;
    let detail = '';
    try {
      const r = await this.dispatch(type, req, outLen);
      if (r instanceof Uint8Array) output = r;
      status = ReqStatus.OK;
    } catch (e) {
      status = statusOf(e);
      detail = e instanceof Error ? e.message : String(e);
      if (!(e instanceof ReqFail) && !isVsvaError(e)) this.log.error({ err: e }, 'virtio-iommu: request failed unexpectedly');
    }
    const out = new Uint8Array(chain.writableLen);
    if (output) out.set(output.subarray(0, outLen));
    out[chain.writableLen - REQ_TAIL_SIZE] = status;
    vq.scatter(chain, 0, out);
    this.traceRequest(type, status, detail);
    return chain.writableLen;
  }

  private typeEnabled(type: number): boolean {
    switch (type) {
      case ReqType.ATTACH:
      case ReqType.DETACH:
        return true;
      case ReqType.MAP:
      case ReqType.UNMAP:
        return this.has(VirtioIommuFeature.MAP_UNMAP);
      case ReqType.PROBE:
        return this.has(VirtioIommuFeature.PROBE);
      default:
        return this.has(VirtioIommuFeature.ATTACH_TABLE);
    }
  }

  private dispatch(type: number, r: ReqReader, outLen: number): Promise<Uint8Array | void> | Uint8Array {
    switch (type) {
      case ReqType.ATTACH: return this.attach(r);
      case ReqType.DETACH: return this.detach(r);
      case ReqType.MAP: return this.map(r);
      case ReqType.UNMAP: return this.unmap(r);
      case ReqType.PROBE: return this.probe(r, outLen);
      case ReqType.ATTACH_TABLE: return this.pasid.attachTable(r);
      case ReqType.DETACH_TABLE: return this.pasid.detachTable(r);
      case ReqType.INVALIDATE: return this.pasid.invalidate(r);
      case ReqType.PAGE_RESP: return this.pasid.pageResponse(r);
      default: reject(ReqStatus.UNSUPP, `request type ${type}`);
    }
  }

  endpoint(id: number): Endpoint {
    return this.endpoints.get(id) ?? reject(ReqStatus.NOENT, `endpoint 0x${id.toString(16)} does not exist`);
  }

  checkDomainRange(id: number): void {
    if (id < this.domainRange.start || id > this.domainRange.end) reject(ReqStatus.RANGE, `domain ${id} is outside domain_range ${this.domainRange.start}..${this.domainRange.end}`);
  }

  private async attach(r: ReqReader): Promise<void> {
    const domainId = r.u32(AttachReq.DOMAIN);
    const flags = r.u32(AttachReq.FLAGS);
    if (!r.isZero(AttachReq.RESERVED, AttachReq.RESERVED_SIZE)) reject(ReqStatus.INVAL, 'ATTACH reserved bytes are not zero');
    if (flags & ~ATTACH_F_BYPASS) reject(ReqStatus.INVAL, `ATTACH flags 0x${flags.toString(16)} has unknown bits`);
    const wantBypass = (flags & ATTACH_F_BYPASS) !== 0;
    if (wantBypass && !this.has(VirtioIommuFeature.BYPASS_CONFIG)) reject(ReqStatus.INVAL, 'ATTACH_F_BYPASS without BYPASS_CONFIG negotiated');
    const ep = this.endpoint(r.u32(AttachReq.ENDPOINT));
    this.checkDomainRange(domainId);
    let d = this.domains.get(domainId);
    if (d && d.bypass !== wantBypass) reject(ReqStatus.INVAL, `domain ${domainId} is ${d.bypass ? '' : 'not '}a bypass domain`);
    if (d && ep.domain === d) return;
    let created = false;
    if (!d) {
      const hostId = wantBypass ? 0 : await this.uapi.domainAlloc();
      d = newDomain(domainId, wantBypass, hostId);
      created = true;
    }
    const old = ep.domain;
    try {
      await this.setHost(ep, d.hostId);
    } catch (e) {
      if (created && !d.bypass) await this.uapi.domainFree(d.hostId).catch(() => undefined);
      throw e;
    }
    if (created) this.domains.set(domainId, d);
    d.endpoints.add(ep);
    ep.domain = d;
    // The endpoint left its old domain: DETACH + ATTACH (§5.13.6, ATTACH request).
    if (old) await this.leaveDomain(ep, old);
  }

  private async detach(r: ReqReader): Promise<void> {
    const domainId = r.u32(DetachReq.DOMAIN);
    const ep = this.endpoint(r.u32(DetachReq.ENDPOINT));
    this.checkDomainRange(domainId);
    const d = this.domains.get(domainId);
    if (!d || ep.domain !== d) reject(ReqStatus.INVAL, `endpoint 0x${ep.id.toString(16)} is not attached to domain ${domainId}`);
    await this.placeUnattached(ep);
    ep.domain = null;
    await this.leaveDomain(ep, d);
  }

  /**
   * The endpoint is no longer in `d`: drop its PASID tables there and free `d` if it emptied.
   * The request has already succeeded for the guest; host cleanup failures are logged.
   */
  private async leaveDomain(ep: Endpoint, d: Domain): Promise<void> {
    d.endpoints.delete(ep);
    try {
      await this.pasid.detachAll(ep, d);
      if (d.endpoints.size === 0) await this.destroyDomain(d);
    } catch (e) {
      this.log.warn({ err: e, domain: d.id }, 'virtio-iommu: host cleanup after detach failed');
    }
  }

  private async destroyDomain(d: Domain): Promise<void> {
    this.domains.delete(d.id);
    d.mappings.clear();
    // DOMAIN_FREE takes the domain's host mappings with it (docs/protocol.md).
    if (!d.bypass) await this.uapi.domainFree(d.hostId);
  }

  /** Host placement of an endpoint that no domain holds: GPA domain in bypass, else nothing. */
  async placeUnattached(ep: Endpoint): Promise<void> {
    await this.setHost(ep, this.bypass ? 0 : null);
  }

  /** Move the endpoint's RID to host domain `target` (null: detached). */
  async setHost(ep: Endpoint, target: number | null): Promise<void> {
    if (ep.host === target) return;
    const prev = ep.host;
    if (prev !== null && target !== null && this.uapi.replaces) {
      // iommufd: re-attached in place; a refused replace leaves the old attachment.
      await this.uapi.attachRid(ep.id, prev, target);
      ep.host = target;
      return;
    }
    if (prev !== null) {
      await this.uapi.detachRid(ep.id, prev);
      ep.host = null;
    }
    if (target === null) return;
    try {
      await this.uapi.attachRid(ep.id, null, target);
      ep.host = target;
    } catch (e) {
      if (prev !== null) {
        await this.uapi.attachRid(ep.id, null, prev).then(() => { ep.host = prev; }, () => undefined);
      }
      throw e;
    }
  }

  private liveDomain(id: number, what: string): Domain {
    this.checkDomainRange(id);
    const d = this.domains.get(id) ?? reject(ReqStatus.NOENT, `${what}: domain ${id} does not exist`);
    if (d.bypass) reject(ReqStatus.INVAL, `${what}: domain ${id} is a bypass domain`);
    return d;
  }

  private async map(r: ReqReader): Promise<void> {
    const flags = r.u32(MapReq.FLAGS);
    const start = r.u64(MapReq.VIRT_START);
    const end = r.u64(MapReq.VIRT_END);
    const phys = r.u64(MapReq.PHYS_START);
    const known = MapFlag.READ | MapFlag.WRITE | (this.has(VirtioIommuFeature.MMIO) ? MapFlag.MMIO : 0);
    if (flags & ~known) reject(ReqStatus.INVAL, `MAP flags 0x${flags.toString(16)} has unknown bits`);
    const d = this.liveDomain(r.u32(MapReq.DOMAIN), 'MAP');
    if (end < start) reject(ReqStatus.INVAL, 'MAP virt_end is below virt_start');
    if (start % GRANULE !== 0n || phys % GRANULE !== 0n || (end + 1n) % GRANULE !== 0n) reject(ReqStatus.RANGE, 'MAP range is not aligned to the 4 KiB granule');
    if (start < this.inputRange.start || end > this.inputRange.end) reject(ReqStatus.RANGE, 'MAP range is outside input_range');
    const size = end - start + 1n;
    if (phys + size > BigInt(this.ctx.ram.size)) reject(ReqStatus.RANGE, `MAP phys 0x${phys.toString(16)}+0x${size.toString(16)} is outside guest RAM`);
    if (start <= MSI_WINDOW_END && end >= MSI_WINDOW_START) reject(ReqStatus.INVAL, 'MAP overlaps the reserved MSI window');
    const hit = d.mappings.intersecting(start, end);
    if (hit.length > 0) reject(ReqStatus.INVAL, `MAP overlaps the mapping 0x${hit[0]!.start.toString(16)}-0x${hit[0]!.end.toString(16)}`);
    const hostFlags = (flags & MapFlag.READ ? DmaMapFlag.READ : 0) | (flags & MapFlag.WRITE ? DmaMapFlag.WRITE : 0);
    // A mapping without permissions allows no access: nothing to map on the host.
    if (hostFlags !== 0) await this.uapi.dmaMap(d.hostId, start, phys, size, hostFlags);
    d.mappings.insert({ start, end, phys, flags });
  }

  private async unmap(r: ReqReader): Promise<void> {
    if (!r.isZero(UnmapReq.RESERVED, UnmapReq.RESERVED_SIZE)) reject(ReqStatus.INVAL, 'UNMAP reserved bytes are not zero');
    const d = this.liveDomain(r.u32(UnmapReq.DOMAIN), 'UNMAP');
    const start = r.u64(UnmapReq.VIRT_START);
    const end = r.u64(UnmapReq.VIRT_END);
    if (end < start) reject(ReqStatus.INVAL, 'UNMAP virt_end is below virt_start');
    const plan = d.mappings.planUnmap(start, end);
    if (plan.kind === 'split') reject(ReqStatus.RANGE, `UNMAP would split the mapping 0x${plan.mapping.start.toString(16)}-0x${plan.mapping.end.toString(16)}`);
    for (const m of plan.mappings) {
      if (m.flags & (MapFlag.READ | MapFlag.WRITE)) await this.uapi.dmaUnmap(d.hostId, m.start, m.end - m.start + 1n);
      d.mappings.remove(m);
    }
  }

  private async probe(r: ReqReader, outLen: number): Promise<Uint8Array> {
    if (outLen < this.probeSize) reject(ReqStatus.INVAL, `PROBE buffer has ${outLen} bytes for properties, probe_size is ${this.probeSize}`);
    const ep = this.endpoint(r.u32(ProbeReq.ENDPOINT));
    const props: Uint8Array[] = [];
    props.push(new LeWriter(PROBE_PROPERTY_HEADER_SIZE + RESV_MEM_LENGTH)
      .u16(0, ProbeType.RESV_MEM).u16(2, RESV_MEM_LENGTH)
      .u8(4, ResvMemSubtype.MSI).u64(8, MSI_WINDOW_START).u64(16, MSI_WINDOW_END).bytes);
    if (this.has(VirtioIommuFeature.ATTACH_TABLE) && ep.dev.pasidWidth > 0) {
      const info = await this.pasid.nestingInfo();
      // The registers of the IOMMU behind this endpoint: GET_HW_INFO on iommufd, else the container's.
      const hw = this.uapi.hwInfo(ep.id);
      props.push(new LeWriter(PROBE_PROPERTY_HEADER_SIZE + PASID_SIZE_LENGTH)
        .u16(0, ProbeType.PASID_SIZE).u16(2, PASID_SIZE_LENGTH).u8(4, Math.min(ep.dev.pasidWidth, info.pasidBits)).bytes);
      props.push(new LeWriter(PROBE_PROPERTY_HEADER_SIZE + PAGE_TABLE_FMT_VTD_LENGTH)
        .u16(0, ProbeType.PAGE_TABLE_FMT).u16(2, PAGE_TABLE_FMT_VTD_LENGTH)
        .u16(4, PGTF_VTD).u64(8, hw.cap ?? info.cap).u64(16, hw.ecap ?? info.ecap).bytes);
    }
    const out = new Uint8Array(this.probeSize);
    let off = 0;
    for (const p of props) {
      if (off + p.length > out.length) break;
      out.set(p, off);
      off += p.length;
    }
    return out;
  }

  // --- eventq -------------------------------------------------------------------------------------

  /**
   * Report an event on the eventq: into the next posted buffer, or held (up to
   * MAX_PENDING_EVENTS) until the driver posts one. A buffer smaller than the event gets used
   * length 0 and the event is dropped (a report is never split: §5.13.6, fault reporting).
   */
  deliverEvent(bytes: Uint8Array, onDrop?: () => void): void {
    this.pendingEvents.push({ bytes, onDrop });
    try {
      this.flushEvents();
    } catch (e) {
      if (e instanceof RingError) this.transport.needsReset(e.message);
      else throw e;
    }
    if (this.pendingEvents.length > MAX_PENDING_EVENTS) this.drop(this.pendingEvents.shift()!);
  }

  private flushEvents(): void {
    for (;;) {
      if (this.pendingEvents.length === 0) return;
      const vq = this.transport.queue(EVENTQ);
      if (!vq) return;
      const chain = vq.pop();
      if (!chain) return;
      const ev = this.pendingEvents.shift()!;
      if (chain.readableLen > 0 || chain.writableLen < ev.bytes.length) {
        vq.push(chain.head, 0);
        this.drop(ev);
      } else {
        vq.scatter(chain, 0, ev.bytes);
        vq.push(chain.head, ev.bytes.length);
      }
      this.transport.raiseUsed();
    }
  }

  private drop(ev: PendingEvent): void {
    this.droppedEvents++;
    this.log.warn('virtio-iommu: eventq report dropped');
    ev.onDrop?.();
  }

  /** Host FAULT for one of this VM's devices → a fault report (§5.13.6, fault reporting). */
  private onFault(msg: Extract<BackendEvent, { name: 'FAULT' }>['msg']): void {
    const ep = this.endpoints.get(msg.rid);
    if (!ep) {
      this.log.warn({ rid: msg.rid }, 'virtio-iommu: host fault for an unknown endpoint ignored');
      return;
    }
    const write = (msg.flags & HostFaultFlag.WRITE) !== 0;
    let flags = FaultFlag.ADDRESS | (write ? FaultFlag.WRITE : FaultFlag.READ) | (msg.flags & HostFaultFlag.EXEC ? FaultFlag.EXEC : 0);
    let pasid: number | undefined;
    if (msg.flags & HostFaultFlag.PASID_VALID && this.has(VirtioIommuFeature.ATTACH_TABLE)) {
      pasid = this.pasid.guestPasid(msg.pasid);
      flags |= FaultFlag.PASID;
    }
    const reason = virtioFaultReason(msg.reason);
    this.deliverEvent(encodeFault({ reason, flags, endpoint: ep.id, pasid, address: msg.addr }));
    this.ctx.trace.emit({
      kind: 'fault', side: 'guest', vm: this.ctx.name, name: 'virtio fault event',
      args: { endpoint: ep.id, reason, vtdReason: msg.reason, flags, pasid: pasid ?? null, addr: `0x${msg.addr.toString(16)}` },
    });
  }

  onBackendMessage(ev: BackendEvent): void {
    switch (ev.name) {
      case 'FAULT': this.onFault(ev.msg); return;
      case 'PAGE_REQUEST': this.pasid.onPageRequest(ev.msg); return;
      case 'PASID_FREED': this.pasid.onPasidFreed(ev.msg); return;
      default: return;
    }
  }

  private traceRequest(type: number, status: number | null, detail: string): void {
    if (status !== null && status !== ReqStatus.OK) this.log.debug({ type, status, detail }, 'virtio-iommu request failed');
    if (!this.ctx.trace.active) return;
    this.ctx.trace.emit({
      kind: 'descriptor', side: 'guest', vm: this.ctx.name, name: `virtio ${REQ_TYPE_NAMES[type] ?? `type ${type}`}`,
      args: { status: status === null ? 'used-len-0' : (STATUS_NAMES[status] ?? status), detail },
    });
  }
}

