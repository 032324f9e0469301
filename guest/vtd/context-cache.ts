/**
 * The root table latched by GCMD.SRTP and the context entries the model caches, as hardware may
 * with CAP.CM = 1 (VT-d spec §6.1 "Caching Mode"; §6.5 "Invalidation of Translation Caches"): an
 * entry is loaded on first use and kept until a context-cache invalidation (descriptor or CCMD) or
 * the next SRTP. QEMU caches the same way (hw/i386/intel_iommu.c `vtd_dev_to_context_entry`,
 * dropped by `vtd_context_global_invalidate`).
 *
 * Loading an entry also configures the device on the host: when its PRE (page requests) or DTE
 * (device-TLB, ATS) differs from what the host was last told, DEVICE_CONFIG is sent
 * (docs/protocol.md §10.3).
 */
import { VsvaError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import type { TraceBus } from '../../src/trace/bus.js';
import { FaultReason } from '../../src/vtd/fault.js';
import { hex64 } from '../../src/vtd/layout.js';
import { RTADDR_SMT } from '../../src/vtd/root-context.js';
import { DeviceCap } from '../../vhost/messages/device.js';
import { DeviceConfigFlag } from '../../vhost/messages/device-config.js';
import type { GuestRam } from '../memory/guest-ram.js';
import type { GuestDevice, HostCalls, ReplayReport } from '../viommu.js';
import { readContext, type ContextInfo, type Walk } from './tables.js';

/** RTADDR bits 63:12: the root table address. */
const RTADDR_RTA = 0xffff_ffff_ffff_f000n;
/** RTADDR bit 11: the high bit of TTM; set, the mode is reserved or abort-DMA (not scalable). */
const RTADDR_TTM_HI = 1n << 11n;

export class ContextCache {
  /** Root table latched by SRTP (null before the first), and whether RTADDR.TTM selected scalable mode. */
  private rootTable: bigint | null = null;
  private scalable = false;
  private readonly cached = new Map<number, ContextInfo>();
  /** DEVICE_CONFIG flags last sent per device (sent at the first context load, then on change). */
  private readonly deviceFlags = new Map<number, number>();
  private deviceConfigSupported = true;
  /** DEVICE_CONFIG requests the host accepted. */
  deviceConfigs = 0;

  constructor(
    private readonly ram: GuestRam,
    private readonly devices: readonly GuestDevice[],
    private readonly host: HostCalls,
    /** Called before any host request, so batched invalidations reach the host first. */
    private readonly beforeHostRequest: () => Promise<void>,
    private readonly log: Logger,
    private readonly trace: TraceBus,
    private readonly vm: string,
  ) {}

  /** GCMD.SRTP: latch RTADDR (root table and TTM) and drop every cached entry. */
  latchRoot(rtaddr: bigint): void {
    this.rootTable = rtaddr & RTADDR_RTA;
    this.scalable = (rtaddr & RTADDR_SMT) !== 0n && (rtaddr & RTADDR_TTM_HI) === 0n;
    this.cached.clear();
    this.trace.emit({ kind: 'mmio', side: 'guest', vm: this.vm, name: 'SRTP', args: { root: hex64(this.rootTable), scalable: this.scalable } });
  }

  /** The cached context entry of a device, loading it (and configuring the device) on a miss. */
  async get(rid: number): Promise<Walk<ContextInfo>> {
    const cached = this.cached.get(rid);
    if (cached !== undefined) return { ok: true, value: cached };
    const w = this.peek(rid);
    if (w.ok) this.cached.set(rid, w.value);
    await this.configureDevice(rid, w.ok ? w.value : null);
    return w;
  }

  /** The context entry as the cache or memory holds it, without caching it. */
  peek(rid: number): Walk<ContextInfo> {
    const cached = this.cached.get(rid);
    if (cached !== undefined) return { ok: true, value: cached };
    if (this.rootTable === null || !this.scalable) return { ok: false, reason: FaultReason.RTA_1_INVALID_ROOT_TABLE_ADDRESS, why: 'no scalable-mode root table' };
    return readContext(this.ram, this.rootTable, rid);
  }

  /** Forget a device's cached entry (context-cache invalidation); the next `get` reloads it. */
  drop(rid: number): void {
    this.cached.delete(rid);
  }

  /** Tell the host about PRE/DTE of a device's context entry when they changed (DEVICE_CONFIG). */
  private async configureDevice(rid: number, ctx: ContextInfo | null): Promise<void> {
    const dev = this.devices.find((d) => d.rid === rid);
    if (dev === undefined || !this.deviceConfigSupported) return;
    let flags = 0;
    if (ctx?.pre && (dev.caps & DeviceCap.PRI) !== 0) flags |= DeviceConfigFlag.PRI_ENABLE;
    if (ctx?.dte && (dev.caps & DeviceCap.ATS) !== 0) flags |= DeviceConfigFlag.ATS_ENABLE;
    if (this.deviceFlags.get(rid) === flags) return;
    await this.beforeHostRequest();
    try {
      await this.host.call('DEVICE_CONFIG', { rid, flags });
      this.deviceFlags.set(rid, flags);
      this.deviceConfigs++;
      this.trace.emit({
        kind: 'message', side: 'guest', vm: this.vm, name: 'DEVICE_CONFIG',
        args: { rid, pri: (flags & DeviceConfigFlag.PRI_ENABLE) !== 0, ats: (flags & DeviceConfigFlag.ATS_ENABLE) !== 0 },
      });
    } catch (e) {
      const code = e instanceof VsvaError ? e.code : '';
      if (code === 'ENOTTY' || code === 'EOPNOTSUPP' || code === 'EPROTO') {
        this.deviceConfigSupported = false;
        this.log.warn({ err: e }, 'host has no DEVICE_CONFIG; PRI/ATS enables are not forwarded');
      } else {
        this.log.warn({ err: e, rid }, 'DEVICE_CONFIG failed');
      }
    }
  }

  /** Replay on a fresh host (docs/reliability.md §2.2): every device's PRI / ATS enables as last sent. */
  async replay(host: HostCalls, r: ReplayReport): Promise<void> {
    for (const [rid, flags] of this.deviceFlags) {
      if (flags === 0) continue;
      try {
        await host.call('DEVICE_CONFIG', { rid, flags });
        r.deviceConfigs++;
      } catch (e) {
        r.failures.push(`DEVICE_CONFIG ${rid.toString(16)}: ${e instanceof VsvaError ? e.code : 'EIO'}`);
      }
    }
  }
}
