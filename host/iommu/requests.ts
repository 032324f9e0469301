/**
 * HostIommu's requests from devices: one translation, and DMA reads, writes and copies of any
 * length through the translation engine into host memory (dma.ts moves the bytes).
 *
 * One request type (`TranslationRequest`) and one fault type (`IommuFault`, fault.ts) serve
 * every call: a device builds the request once, and the result carries the fault record the
 * device turns into its DEVICE_DMA reply and FAULT message. Addresses are bigint; the checked
 * request becomes numbers (RID, PASID or NO_PASID, page number, offset, ACCESS_* flags) for the
 * engine.
 */
import { fail } from '../../src/errors.js';
import { ACCESS_EXEC, ACCESS_PRIV, ACCESS_WRITE, NO_PASID, REQ_NO_REPORT } from './constants.js';
import { checkLength, checkPasid, checkRid, hex, pageAndOffset } from './checks.js';
import { DmaMover } from './dma.js';
import { DMA_UNBACKED_HPA, faultRecord, type IommuFault } from './fault.js';
import { IommuFaultReporting } from './fault-reporting.js';

/** A request as the IOMMU sees it: one DMA access or (noReport) an ATS translation request. */
export interface TranslationRequest {
  rid: number;
  /** Omit for a request without PASID. */
  pasid?: number;
  addr: bigint;
  /** A write (dmaWrite implies it; dmaRead refuses it). */
  write?: boolean;
  /** Execute (instruction fetch; reads only). */
  exec?: boolean;
  priv?: boolean;
  /**
   * Do not report a fault to the handler: an ATS translation request, whose failure goes back to
   * the device (which may then issue a page request).
   */
  noReport?: boolean;
}

/** Outcome of a DMA: `done` bytes were moved; on a fault, every byte before the faulting address. */
export type IommuDmaResult = { ok: true; done: number } | { ok: false; done: number; fault: IommuFault };
/** A DMA read's outcome with the bytes read (the `done` bytes before a fault). */
export type IommuDmaReadResult = IommuDmaResult & { data: Uint8Array };

export abstract class IommuRequests extends IommuFaultReporting {
  private readonly dma = new DmaMover(this.engine, this.port);

  /**
   * Translate one request: the HPA (a number: HPAs fit the host address width), or XLATE_FAULT
   * with details in `lastFault()`.
   * @throws EINVAL for a malformed request (not for translation faults).
   */
  translate(req: TranslationRequest): number {
    const flags = requestFlags(req, req.write === true);
    const [vpn, off] = pageAndOffset(req.addr);
    return this.engine.translateVpn(req.rid, req.pasid ?? NO_PASID, vpn, off, flags);
  }

  /** The hot-path form: addr < 2^53, pasid = NO_PASID (−1) for none, flags = ACCESS_* | REQ_NO_REPORT. */
  translateRaw(rid: number, pasid: number, addr: number, flags: number): number {
    return this.engine.translate(rid, pasid, addr, flags);
  }

  /** The last translation fault, as a record. */
  lastFault(): IommuFault {
    return this.engine.lastFault();
  }

  /**
   * Read `length` bytes through the IOMMU into a fresh array, or into `into` (at least `length`
   * bytes; EINVAL otherwise). On a fault, `data` holds the `done` bytes read before it.
   */
  dmaRead(req: TranslationRequest, length: number, into?: Uint8Array): IommuDmaReadResult {
    checkLength(length);
    if (req.write === true) fail('EINVAL', 'a DMA read cannot be a write request');
    if (into !== undefined && into.length < length) fail('EINVAL', `DMA read of ${length} bytes into ${into.length}`);
    const flags = requestFlags(req, false);
    const [vpn, off] = pageAndOffset(req.addr, length);
    const data = into !== undefined ? into.subarray(0, length) : new Uint8Array(length);
    const done = this.dma.read(req.rid, req.pasid ?? NO_PASID, vpn, off, flags, data);
    const r = this.dmaResult(req, flags, done);
    return { ...r, data: done === length ? data : data.subarray(0, done) };
  }

  /** Write `data` through the IOMMU. On a fault, the `done` bytes before it were written. */
  dmaWrite(req: TranslationRequest, data: Uint8Array): IommuDmaResult {
    if (req.write === false) fail('EINVAL', 'a DMA write cannot be a read request');
    const flags = requestFlags(req, true);
    const [vpn, off] = pageAndOffset(req.addr, data.length);
    const done = this.dma.write(req.rid, req.pasid ?? NO_PASID, vpn, off, flags, data);
    return this.dmaResult(req, flags, done);
  }

  /** Copy `length` bytes: read through `src`'s requester, write through `dst`'s. */
  dmaCopy(src: TranslationRequest, dst: TranslationRequest, length: number): IommuDmaResult {
    checkLength(length);
    if (src.write === true) fail('EINVAL', 'the source of a DMA copy cannot be a write request');
    if (dst.write === false) fail('EINVAL', 'the destination of a DMA copy cannot be a read request');
    const sflags = requestFlags(src, false);
    const dflags = requestFlags(dst, true);
    const [svpn, soff] = pageAndOffset(src.addr, length);
    const [dvpn, doff] = pageAndOffset(dst.addr, length);
    const done = this.dma.copy(src.rid, src.pasid ?? NO_PASID, svpn, soff, sflags, dst.rid, dst.pasid ?? NO_PASID, dvpn, doff, dflags, length);
    return this.dma.stop.side === 'src' ? this.dmaResult(src, sflags, done) : this.dmaResult(dst, dflags, done);
  }

  /** The result of the last DMA job, `req` being the side it stopped on. */
  private dmaResult(req: TranslationRequest, flags: number, done: number): IommuDmaResult {
    const st = this.dma.stop;
    if (st.kind === 'none') return { ok: true, done };
    if (st.kind === 'translation') return { ok: false, done, fault: this.engine.lastFault() };
    const fault = faultRecord(DMA_UNBACKED_HPA, req.rid, req.pasid ?? NO_PASID, req.addr + BigInt(done), flags);
    fault.text = `host physical address ${hex(st.hpa)} is not backed by host memory`;
    fault.hpa = BigInt(st.hpa);
    return { ok: false, done, fault };
  }
}

/** The ACCESS_* | REQ_NO_REPORT flags of a request, checked. EINVAL for a malformed request. */
function requestFlags(req: TranslationRequest, write: boolean): number {
  checkRid(req.rid);
  if (req.pasid !== undefined) checkPasid(req.pasid);
  const exec = req.exec === true;
  const priv = req.priv === true;
  if (exec && write) fail('EINVAL', 'a request cannot both write and execute');
  if (req.pasid === undefined && (exec || priv)) fail('EINVAL', 'execute and privileged requests need a PASID');
  return (write ? ACCESS_WRITE : 0) | (exec ? ACCESS_EXEC : 0) | (priv ? ACCESS_PRIV : 0) | (req.noReport === true ? REQ_NO_REPORT : 0);
}
