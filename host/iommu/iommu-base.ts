/**
 * The state every part of HostIommu works on (host-iommu.ts lists the parts): host memory and
 * the page-table pool, the translation engine with its IOTLB, the devices by RID and the domains
 * by DID; and the lookups and checks the parts share.
 */
import { fail } from '../../src/errors.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { SAGAW } from '../../src/vtd/cap-ecap.js';
import type { HostMemory } from '../memory/host-memory.js';
import { RID_PASID } from './constants.js';
import { checkRid, ridName } from './checks.js';
import type { IommuDevice } from './device.js';
import { IommuDomain } from './domain.js';
import { TranslationEngine } from './engine.js';
import type { IommuFault } from './fault.js';
import { PhysPort } from './phys-port.js';
import { PageTablePool, type PageTablePoolOptions } from './pt-pool.js';
import { Iotlb } from './tlb.js';

/** DID 0 is reserved; DID 1 is the pass-through domain's (Linux FLPT_DEFAULT_DID). */
export const IDENTITY_DID = 1;
/** The second-level widths this host IOMMU walks: 39-bit (3-level) and 48-bit (4-level). */
export const SAGAW_HOST = SAGAW.AW_39BIT | SAGAW.AW_48BIT;

export interface HostIommuOptions {
  /** The host physical address space: page tables are allocated in it, DMA goes into it. */
  memory: HostMemory;
  /** Host address width in bits (CAP.MGAW + 1). Default 48. */
  haw?: number;
  pool?: PageTablePoolOptions;
  /** IOTLB entries before the whole IOTLB is flushed to make room. Default 2^20. */
  iotlbCapacity?: number;
  /** Device-TLB entries per ATS device. Default 4096. */
  devTlbCapacity?: number;
  /** Trace events (bind, unbind, invalidate, fault, page-request, page-response). */
  trace?: TraceBus;
}

/** A domain by object or by DID. */
export type DomainRef = IommuDomain | number;

export abstract class IommuBase {
  readonly memory: HostMemory;
  /** Host address width in bits. */
  readonly haw: number;
  readonly pool: PageTablePool;
  readonly engine: TranslationEngine;

  protected readonly port: PhysPort;
  protected readonly iotlb: Iotlb;
  protected readonly devices = new Map<number, IommuDevice>();
  protected readonly domains = new Map<number, IommuDomain>();
  protected readonly devTlbCapacity: number;
  protected readonly trace: TraceBus | undefined;
  protected readonly identity: IommuDomain;

  constructor(opts: HostIommuOptions) {
    const haw = opts.haw ?? 48;
    if (!Number.isInteger(haw) || haw < 32 || haw > 52) fail('EINVAL', `host address width ${haw} is not in 32..52`);
    const iotlbCapacity = opts.iotlbCapacity ?? 1 << 20;
    const devTlbCapacity = opts.devTlbCapacity ?? 4096;
    if (!Number.isSafeInteger(iotlbCapacity) || iotlbCapacity < 1) fail('EINVAL', `IOTLB capacity ${iotlbCapacity} must be a positive integer`);
    if (!Number.isSafeInteger(devTlbCapacity) || devTlbCapacity < 1) fail('EINVAL', `device-TLB capacity ${devTlbCapacity} must be a positive integer`);
    this.memory = opts.memory;
    this.haw = haw;
    this.devTlbCapacity = devTlbCapacity;
    this.trace = opts.trace;
    this.pool = new PageTablePool(opts.memory, opts.pool);
    this.port = new PhysPort(opts.memory);
    this.iotlb = new Iotlb(iotlbCapacity);
    this.engine = new TranslationEngine(this.devices, this.iotlb, this.port, { haw, sagaw: SAGAW_HOST }, (dev, f) => this.reportFault(dev, f));
    this.identity = new IommuDomain(IDENTITY_DID, 'identity', 'identity', null, false, false, null);
    this.domains.set(IDENTITY_DID, this.identity);
  }

  /** A fault the engine reports (fault-reporting.ts delivers it). */
  protected abstract reportFault(dev: IommuDevice | undefined, fault: IommuFault): void;

  /** The static pass-through domain (PGTT = 4, DID 1). */
  get identityDomain(): IommuDomain {
    return this.identity;
  }

  /** The live domain with DID `did`. ENOENT. */
  domain(did: number): IommuDomain {
    const d = this.domains.get(did);
    if (d === undefined) fail('ENOENT', `no domain with DID ${did}`);
    return d;
  }

  /** The device with requester ID `rid`. EINVAL: not a RID; ENODEV: unknown. */
  device(rid: number): IommuDevice {
    return this.deviceOf(rid);
  }

  listDevices(): IommuDevice[] {
    return [...this.devices.values()];
  }

  listDomains(): IommuDomain[] {
    return [...this.domains.values()];
  }

  protected deviceOf(rid: number): IommuDevice {
    checkRid(rid);
    const dev = this.devices.get(rid);
    if (dev === undefined) fail('ENODEV', `no device ${ridName(rid)}`);
    return dev;
  }

  protected domainOf(ref: DomainRef): IommuDomain {
    const did = typeof ref === 'number' ? ref : ref.did;
    const d = this.domains.get(did);
    if (d === undefined || (typeof ref !== 'number' && d !== ref)) fail('ENOENT', `domain ${did} does not exist (freed?)`);
    return d;
  }

  protected pagingDomain(ref: DomainRef, what: string): IommuDomain {
    const d = this.domainOf(ref);
    if (d.type !== 'paging') fail('EINVAL', `${what}: domain ${d.did} is ${d.type}, not a paging domain`);
    return d;
  }

  /** `pasid` is a PASID the device can issue. EOPNOTSUPP: no PASID capability; ERANGE: beyond its width. */
  protected checkPasidOf(dev: IommuDevice, pasid: number): void {
    if (dev.pasidBits === 0) fail('EOPNOTSUPP', `device ${dev.bdf} has no PASID capability`);
    if (!Number.isInteger(pasid) || pasid < 0) fail('EINVAL', `PASID ${pasid} is not a non-negative integer`);
    if (pasid >= 2 ** dev.pasidBits) fail('ERANGE', `PASID ${pasid} is beyond device ${dev.bdf}'s ${dev.pasidBits}-bit PASID width`);
  }

  /** `pasid` can take a new route on `dev`: a PASID of the device, not RID_PASID, nothing attached. */
  protected checkPasidRoute(dev: IommuDevice, pasid: number): void {
    this.checkPasidOf(dev, pasid);
    if (pasid === RID_PASID) fail('EINVAL', `PASID ${RID_PASID} is RID_PASID (requests without PASID); use attachDevice`);
    const cur = dev.pasidAttachments.get(pasid);
    if (cur !== undefined) fail('EBUSY', `PASID ${pasid} of ${dev.bdf} is already attached to domain ${cur.domain.did}`);
  }
}
