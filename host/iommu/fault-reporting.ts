/**
 * HostIommu's faults and page requests: the fault handler each device may register (Linux
 * iommu_register_device_fault_handler), delivery of the faults the engine reports, PRI page
 * requests from a device and the page responses that complete them (VT-d spec chapter 7, page
 * request and page group response; PCIe Page Request Interface).
 */
import { fail } from '../../src/errors.js';
import { childLogger } from '../../src/log.js';
import { PAGE_SIZE } from '../../src/vtd/page-table.js';
import { hex, pageAndOffset } from './checks.js';
import { PageResponseCode, type IommuDevice, type PageResponseCodeValue } from './device.js';
import type { FaultHandler, IommuFault, IommuFaultEvent, PageRequest } from './fault.js';
import { IommuAttach } from './attach.js';

const log = childLogger('iommu');

/** Faults kept in `recentFaults`. */
const RECENT_FAULTS = 64;
/** Page request group indexes per (device, PASID): PRGI is 9 bits. */
const PRGI_COUNT = 512;

export interface PageRequestOptions {
  pasid?: number;
  addr: bigint;
  write?: boolean;
  exec?: boolean;
  priv?: boolean;
  /** Page request group index 0..511; the lowest free one when omitted. */
  prgi?: number;
  /** Last page in group. Default true. */
  lpig?: boolean;
}

export abstract class IommuFaultReporting extends IommuAttach {
  /** Recent faults (newest last, at most 64), for inspection. */
  readonly recentFaults: IommuFault[] = [];
  protected pageRequests = 0;
  protected pageResponses = 0;

  /** Register the device's fault handler (one per device; EBUSY when one is registered). */
  registerFaultHandler(rid: number, handler: FaultHandler): void {
    const dev = this.deviceOf(rid);
    if (typeof handler !== 'function') fail('EINVAL', 'fault handler must be a function');
    if (dev.faultHandler !== null) fail('EBUSY', `device ${dev.bdf} already has a fault handler`);
    dev.faultHandler = handler;
  }

  unregisterFaultHandler(rid: number): void {
    const dev = this.deviceOf(rid);
    if (dev.faultHandler === null) fail('ENOENT', `device ${dev.bdf} has no fault handler`);
    dev.faultHandler = null;
  }

  /**
   * A page request from a PRI-capable device (after a failed ATS translation). It is delivered to
   * the device's fault handler; the promise resolves with the response code given to
   * pageResponse(). Without a handler it completes at once with INVALID (Linux answers requests
   * nobody handles with an invalid-request response).
   */
  pageRequest(rid: number, opts: PageRequestOptions): Promise<PageResponseCodeValue> {
    const dev = this.deviceOf(rid);
    if (!dev.pri) fail('EOPNOTSUPP', `device ${dev.bdf} has no PRI capability`);
    if (opts.pasid !== undefined) this.checkPasidOf(dev, opts.pasid);
    if (opts.exec === true && opts.write === true) fail('EINVAL', 'a page request cannot ask for write and execute');
    const [vpn] = pageAndOffset(opts.addr);
    const pkey = (opts.pasid ?? -1) + 1;
    let prgi = opts.prgi;
    if (prgi === undefined) {
      prgi = 0;
      while (prgi < PRGI_COUNT && dev.pendingPageRequests.has(pkey * PRGI_COUNT + prgi)) prgi++;
      if (prgi === PRGI_COUNT) fail('EBUSY', `device ${dev.bdf}: all ${PRGI_COUNT} page request group indexes are outstanding`);
    } else if (!Number.isInteger(prgi) || prgi < 0 || prgi >= PRGI_COUNT) {
      fail('EINVAL', `page request group index ${prgi} is not in 0..${PRGI_COUNT - 1}`);
    } else if (dev.pendingPageRequests.has(pkey * PRGI_COUNT + prgi)) {
      fail('EBUSY', `device ${dev.bdf}: page request group ${prgi} is already outstanding`);
    }
    this.pageRequests++;
    const request: PageRequest = {
      rid,
      addr: BigInt(vpn) * PAGE_SIZE,
      prgi,
      lpig: opts.lpig ?? true,
      read: opts.write !== true,
      write: opts.write === true,
      exec: opts.exec === true,
      priv: opts.priv === true,
    };
    if (opts.pasid !== undefined) request.pasid = opts.pasid;
    this.trace?.emit({ kind: 'page-request', side: 'host', name: 'page request', args: { rid, pasid: opts.pasid ?? null, prgi, addr: hex(request.addr) } });
    if (dev.faultHandler === null) return Promise.resolve(PageResponseCode.INVALID);
    const key = pkey * PRGI_COUNT + prgi;
    const p = new Promise<PageResponseCodeValue>((resolve) => {
      dev.pendingPageRequests.set(key, { pasid: opts.pasid ?? null, prgi: prgi!, resolve });
    });
    this.deliver(dev, { kind: 'page-request', request });
    return p;
  }

  /** Complete an outstanding page request with a page group response code (0 success, 1 invalid, 0xf failure). */
  pageResponse(rid: number, pasid: number | null | undefined, prgi: number, code: number): void {
    const dev = this.deviceOf(rid);
    if (code !== PageResponseCode.SUCCESS && code !== PageResponseCode.INVALID && code !== PageResponseCode.FAILURE) {
      fail('EINVAL', `page response code 0x${code.toString(16)} is not 0 (success), 1 (invalid) or 0xf (failure)`);
    }
    const key = ((pasid ?? -1) + 1) * PRGI_COUNT + prgi;
    const pending = dev.pendingPageRequests.get(key);
    if (pending === undefined) fail('ENOENT', `device ${dev.bdf} has no outstanding page request ${prgi}${pasid == null ? '' : ` for PASID ${pasid}`}`);
    dev.pendingPageRequests.delete(key);
    this.pageResponses++;
    this.trace?.emit({ kind: 'page-response', side: 'host', name: 'page response', args: { rid, pasid: pasid ?? null, prgi, code } });
    pending.resolve(code as PageResponseCodeValue);
  }

  /** Keep, log, trace and deliver a fault the engine reports. */
  protected override reportFault(dev: IommuDevice | undefined, rec: IommuFault): void {
    this.recentFaults.push(rec);
    if (this.recentFaults.length > RECENT_FAULTS) this.recentFaults.shift();
    log.debug({ rid: rec.rid, pasid: rec.pasid, reason: rec.reason, addr: hex(rec.addr) }, rec.text);
    this.trace?.emit({
      kind: 'fault',
      side: 'host',
      name: `fault 0x${rec.reason.toString(16)}`,
      args: { rid: rec.rid, pasid: rec.pasid ?? null, reason: rec.reason, addr: hex(rec.addr), write: rec.write },
    });
    if (dev !== undefined) this.deliver(dev, { kind: 'fault', fault: rec });
  }

  private deliver(dev: IommuDevice, ev: IommuFaultEvent): void {
    const h = dev.faultHandler;
    if (h === null) return;
    try {
      h(ev);
    } catch (e) {
      log.error({ err: e, rid: dev.rid }, 'fault handler threw');
    }
  }
}
