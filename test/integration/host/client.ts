/**
 * A small guest half for the host tests: a FrontendClient that sets up a VM, guest RAM in a
 * shared file (or in-process), x86-64 first-level page tables written straight into guest RAM,
 * and typed helpers for the container calls. It records every backend-channel message and can
 * answer page requests automatically.
 */
import { GuestRam } from '../../../guest/memory/guest-ram.js';
import { VsvaError } from '../../../src/errors.js';
import {
  FrontendClient, DeviceCap, DeviceKind, IOMMU_GPASID_BIND_DATA_SIZE, IOMMU_GPASID_BIND_VERSION_1, IOMMU_PASID_FORMAT_INTEL_VTD,
  IOMMU_SVA_GPASID_VAL, cacheInvalidateEntry, DeviceDmaOp, DeviceDmaFlag,
  type BackendEvent, type GpasidBindRequest, type CacheInvalidateEntry, type DeviceDmaReply, type Transport,
} from '../../../vhost/index.js';
import type { HostSnapshot, VmSnapshot } from '../../../src/api/types.js';

export const PAGE = 4096;

/** x86-64 4-level first-level tables in guest RAM, tables taken from a bump area. */
export class FirstLevelTables {
  constructor(private readonly ram: GuestRam, private next: number, private readonly end: number) {}

  private allocTable(): number {
    if (this.next + PAGE > this.end) throw new Error('page-table area exhausted');
    const t = this.next;
    this.next += PAGE;
    this.ram.write(t, new Uint8Array(PAGE));
    return t;
  }

  newRoot(): number {
    return this.allocTable();
  }

  /** Map the 4 KiB page at `gva` to `gpa` (user, present; writable unless readOnly). */
  map(root: number, gva: bigint, gpa: number, opts: { readOnly?: boolean; supervisor?: boolean } = {}): void {
    let table = root;
    for (let level = 4; level > 1; level--) {
      const idx = Number((gva >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
      const at = table + idx * 8;
      let e = this.ram.readU64(at);
      if ((e & 1n) === 0n) {
        const t = this.allocTable();
        e = BigInt(t) | 0x7n; // P | RW | US
        this.ram.writeU64(at, e);
      }
      table = Number(e & 0x000ffffffffff000n);
    }
    const idx = Number((gva >> 12n) & 0x1ffn);
    let leaf = BigInt(gpa) | 1n;
    if (!opts.readOnly) leaf |= 2n;
    if (!opts.supervisor) leaf |= 4n;
    this.ram.writeU64(table + idx * 8, leaf);
  }

  /** Clear the leaf of `gva` (the caller flushes). */
  unmap(root: number, gva: bigint): void {
    let table = root;
    for (let level = 4; level > 1; level--) {
      const idx = Number((gva >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
      const e = this.ram.readU64(table + idx * 8);
      if ((e & 1n) === 0n) return;
      table = Number(e & 0x000ffffffffff000n);
    }
    this.ram.writeU64(table + Number((gva >> 12n) & 0x1ffn) * 8, 0n);
  }
}

export interface TestDevice {
  rid: number;
  kind?: 'pf' | 'adi';
  /** Default PASID | ATS | PRI, 20-bit PASIDs. */
  caps?: number;
  pasidWidth?: number;
}

export interface TestGuestOptions {
  name: string;
  path?: string;
  connect?: () => Promise<Transport>;
  quota?: number;
  /** Bytes of guest RAM (default 4 MiB); the first 1 MiB holds page tables. */
  memory?: number;
  backing?: 'file' | 'inproc';
  devices?: TestDevice[];
  /** Map all of guest RAM GPA→GPA in domain 0 (default true). */
  mapRam?: boolean;
  /** Reuse RAM (for a reconnect). */
  ram?: GuestRam;
  token?: Uint8Array;
}

export class TestGuest {
  readonly events: BackendEvent[] = [];
  /** When set, PAGE_REQUESTs are answered with this code (0 success, 1 invalid, 2 failure). */
  autoRespond: number | null = null;
  /** Called for each PAGE_REQUEST before the automatic response (e.g. to map the page). */
  onPageRequest: ((ev: Extract<BackendEvent, { name: 'PAGE_REQUEST' }>) => void) | null = null;
  readonly fl: FirstLevelTables;
  token: Uint8Array = new Uint8Array(16);
  resumed = false;

  private constructor(readonly fe: FrontendClient, readonly ram: GuestRam, readonly name: string) {
    this.fl = new FirstLevelTables(ram, PAGE, 0x10_0000);
    fe.onBackendMessage((ev) => {
      this.events.push(ev);
      if (ev.name === 'PAGE_REQUEST') {
        this.onPageRequest?.(ev);
        if (this.autoRespond !== null) {
          const m = ev.msg;
          const code = this.autoRespond;
          void fe.call('PAGE_RESPONSE', { rid: m.rid, flags: m.flags & 1, pasid: m.pasid, grpid: m.prgi, code }).catch(() => {});
        }
      }
    });
  }

  static async start(o: TestGuestOptions): Promise<TestGuest> {
    const fe = await FrontendClient.connect(o.connect ? { connect: o.connect } : { path: o.path! });
    const ram = o.ram ?? GuestRam.create(o.memory ?? 4 * 1024 * 1024, { backing: o.backing ?? 'file' });
    const g = new TestGuest(fe, ram, o.name);
    await fe.handshake();
    const reply = await fe.setupVm({ name: o.name, pasid_quota: o.quota ?? 64, flags: 1, session_token: o.token ?? new Uint8Array(16) });
    g.token = reply.session_token;
    g.resumed = (reply.flags & 1) !== 0;
    if (!g.resumed) {
      await fe.call('SET_MEM_TABLE', { regions: [{ guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: ram.path }] });
      for (const d of o.devices ?? [{ rid: 0x18 }]) {
        const caps = d.caps ?? (DeviceCap.PASID | DeviceCap.ATS | DeviceCap.PRI);
        await fe.call('DEVICE_ADD', { rid: d.rid, kind: d.kind === 'adi' ? DeviceKind.ADI : DeviceKind.PF, pasid_width: (caps & DeviceCap.PASID) !== 0 ? (d.pasidWidth ?? 20) : 0, caps });
      }
      if (o.mapRam !== false) await fe.call('DMA_MAP', { domain: 0, flags: 3, iova: 0n, gpa: 0n, size: BigInt(ram.size) });
    }
    return g;
  }

  alloc(min = 1, max = 0xfffff): Promise<number> {
    return this.fe.call('PASID_ALLOC', { min, max }).then((r) => r.pasid);
  }

  free(min: number, max = min): Promise<number> {
    return this.fe.call('PASID_FREE', { min, max }).then((r) => r.freed);
  }

  bind(rid: number, hpasid: number, gpgd: number, gpasid: number | null = null, over: Partial<GpasidBindRequest> = {}): Promise<void> {
    return this.fe.call('BIND_GPASID', bindData(rid, hpasid, gpgd, gpasid, over));
  }

  unbind(rid: number, hpasid: number, over: Partial<GpasidBindRequest> = {}): Promise<void> {
    return this.fe.call('UNBIND_GPASID', bindData(rid, hpasid, 0, null, over));
  }

  invalidate(entries: Partial<CacheInvalidateEntry>[]) {
    return this.fe.call('CACHE_INVALIDATE', { entries: entries.map(invEntry) });
  }

  async read(rid: number, addr: bigint, length: number, pasid?: number, flags = 0): Promise<DeviceDmaReply> {
    return this.fe.call('DEVICE_DMA', { rid, op: DeviceDmaOp.READ, flags: (pasid !== undefined ? DeviceDmaFlag.PASID_VALID : 0) | flags, pasid: pasid ?? 0, addr, length });
  }

  async write(rid: number, addr: bigint, data: Uint8Array, pasid?: number): Promise<DeviceDmaReply> {
    return this.fe.call('DEVICE_DMA', { rid, op: DeviceDmaOp.WRITE, flags: pasid !== undefined ? DeviceDmaFlag.PASID_VALID : 0, pasid: pasid ?? 0, addr, length: data.length, data });
  }

  async state(): Promise<HostSnapshot> {
    return JSON.parse((await this.fe.call('GET_STATE')).json) as HostSnapshot;
  }

  async vm(): Promise<VmSnapshot & Record<string, unknown>> {
    const s = await this.state();
    const v = s.vms.find((x) => x.name === this.name);
    if (!v) throw new Error(`VM ${this.name} not in snapshot`);
    return v as VmSnapshot & Record<string, unknown>;
  }

  close(): void {
    this.fe.close();
  }
}

export function bindData(rid: number, hpasid: number, gpgd: number, gpasid: number | null, over: Partial<GpasidBindRequest> = {}): GpasidBindRequest {
  return {
    rid,
    argsz: IOMMU_GPASID_BIND_DATA_SIZE,
    version: IOMMU_GPASID_BIND_VERSION_1,
    format: IOMMU_PASID_FORMAT_INTEL_VTD,
    addr_width: 48,
    flags: gpasid === null ? 0n : IOMMU_SVA_GPASID_VAL,
    gpgd: BigInt(gpgd),
    hpasid: BigInt(hpasid),
    gpasid: BigInt(gpasid ?? 0),
    padding: 0n,
    vtd_flags: 0n,
    vtd_pat: 0,
    vtd_emt: 0,
    ...over,
  };
}

export function invEntry(e: Partial<CacheInvalidateEntry>): CacheInvalidateEntry {
  return cacheInvalidateEntry({ cache: 1, granularity: 0, ...e });
}

/** Errno code of a rejected promise (fails the test when it resolves). */
export async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof VsvaError) return e.code;
    throw e;
  }
  throw new Error('expected the call to fail');
}
