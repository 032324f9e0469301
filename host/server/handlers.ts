/**
 * The wire handlers of one session: each protocol request (docs/protocol.md §5) mapped onto the
 * session's VM — its container, memory table and devices. Arms stay short; the checks and
 * their errno live in the container (host/vfio/) and the VM (vm.ts).
 *
 * SET_MEM_TABLE: an identical table is accepted as a re-announcement (after a reconnect); a
 * different one replaces the old only while no DMA mapping exists (EBUSY otherwise).
 */
import { fail } from '../../src/errors.js';
import { VM_SETUP_REPLY_RESUMED, VM_SETUP_VIOMMU_MASK, VmViommu, isZeroToken } from '../../vhost/messages/vm.js';
import type { HandlerTable } from '../../vhost/roles/backend.js';
import type { Session } from '../../vhost/roles/server.js';
import type { FrontendRequestName } from '../../vhost/messages/catalogue.js';
import type { SessionHost } from './session-host.js';
import type { ViommuKind } from './vm.js';

const VIOMMU: Record<number, ViommuKind> = { [VmViommu.UNSPECIFIED]: 'unspecified', [VmViommu.VTD]: 'vtd', [VmViommu.VIRTIO]: 'virtio' };

export function buildHandlers(host: SessionHost, session: Session): HandlerTable<Session> {
  const vm = () => host.vmOf(session);
  const table: HandlerTable<Session> = {
    VM_SETUP: (r) => {
      const token = isZeroToken(r.session_token) ? null : r.session_token;
      const { vm: v, resumed } = host.setupVm(session, r.name, r.pasid_quota, VIOMMU[r.flags & VM_SETUP_VIOMMU_MASK] ?? 'unspecified', token);
      return { vm_id: v.id, flags: resumed ? VM_SETUP_REPLY_RESUMED : 0, session_token: v.token };
    },
    SET_MEM_TABLE: (t) => {
      const v = vm();
      if (v.mem.same(t)) return;
      v.mem.check(t);
      if (v.container.mappings > 0) fail('EBUSY', 'SET_MEM_TABLE: DMA mappings exist; unmap them before changing the memory table');
      v.mem.replace(t);
    },
    GET_STATE: () => ({ json: host.snapshotJson() }),
    DEVICE_ADD: (r) => vm().container.deviceAdd(r),
    DEVICE_CONFIG: (r) => vm().container.deviceConfig(r),
    DOMAIN_ALLOC: () => ({ domain: vm().container.domainAlloc() }),
    DOMAIN_FREE: (r) => vm().container.domainFree(r.domain),
    ATTACH: (r) => vm().container.attach(r),
    DETACH: (r) => vm().container.detach(r),
    GET_NESTING_INFO: () => vm().container.nestingInfo(),
    DMA_MAP: (r) => vm().container.dmaMap(r),
    DMA_UNMAP: (r) => vm().container.dmaUnmap(r),
    PASID_ALLOC: (r) => ({ pasid: vm().container.pasidAlloc(r) }),
    PASID_FREE: (r) => ({ freed: vm().container.pasidFree(r) }),
    BIND_GPASID: (r) => vm().container.bind(r),
    UNBIND_GPASID: (r) => vm().container.unbind(r),
    CACHE_INVALIDATE: (r) => vm().container.cacheInvalidate(r.entries),
    PAGE_RESPONSE: (r) => vm().container.pageResponse(r),
    DEVICE_DMA: (r) => vm().container.deviceDma(r),
  };
  return traced(host, session, table);
}

/**
 * Requests that cannot change a VM's device list, so the snapshot's cached copy stays valid (a
 * DEVICE_DMA that programs an ADI bumps the generation through the VDCM). PASID_ALLOC and
 * PASID_FREE change PASID rows only, which the snapshot tracks row by row through the IOASID
 * core's change listeners (pasid-rows.ts), not through the generation.
 */
const READ_ONLY_FOR_SNAPSHOT: ReadonlySet<FrontendRequestName> = new Set<FrontendRequestName>([
  'GET_STATE', 'GET_NESTING_INFO', 'DEVICE_DMA', 'CACHE_INVALIDATE', 'PAGE_RESPONSE', 'DMA_MAP', 'DMA_UNMAP', 'SET_MEM_TABLE',
  'DOMAIN_ALLOC', 'PASID_ALLOC', 'PASID_FREE',
]);

/** Emit a 'message' trace event per request while someone listens; keep the snapshot generation. */
function traced(host: SessionHost, session: Session, table: HandlerTable<Session>): HandlerTable<Session> {
  const out: Record<string, unknown> = {};
  for (const [name, h] of Object.entries(table) as [FrontendRequestName, (r: unknown, s: Session) => unknown][]) {
    const bumps = !READ_ONLY_FOR_SNAPSHOT.has(name);
    out[name] = (r: unknown, s: Session) => {
      if (bumps) {
        try {
          host.vmOf(session).generation++;
        } catch {
          /* no VM yet (VM_SETUP creates one with an empty cache) */
        }
      }
      const t = host.trace;
      if (t.active) {
        let vmName: string | undefined;
        try {
          vmName = host.vmOf(session).name;
        } catch {
          vmName = undefined;
        }
        t.emit({ kind: 'message', side: 'host', vm: vmName, name, args: { session: session.id } });
      }
      return h(r, s);
    };
  }
  return out as HandlerTable<Session>;
}
