/**
 * The wire handlers of one session: each protocol request (docs/protocol.md §5) mapped onto the
 * session's VM — its container, memory table and devices. Arms stay short; the checks and
 * their errno live in the container (host/vfio/) and the VM (vm.ts).
 *
 * SET_MEM_TABLE: an identical table is accepted as a re-announcement (after a reconnect); a
 * different one replaces the old only while no DMA mapping and no IOAS mapping exists (EBUSY
 * otherwise). The descriptors of the fd form belong to this handler: the memory table takes
 * them over in `replace`; on every other path they are closed here.
 */
import { fail } from '../../src/errors.js';
import { closeFd } from '../../src/native/native.js';
import { VM_SETUP_REPLY_RESUMED, VM_SETUP_UAPI_IOMMUFD, VM_SETUP_VIOMMU_MASK, VmViommu, isZeroToken } from '../../vhost/messages/vm.js';
import { ProtocolFeature } from '../../vhost/wire/features.js';
import { iommufdHandlers } from '../iommufd/index.js';
import type { HandlerTable } from '../../vhost/roles/backend.js';
import type { Session } from '../../vhost/roles/server.js';
import type { FrontendRequestName } from '../../vhost/messages/catalogue.js';
import type { SessionHost } from './session-host.js';
import type { ViommuKind } from './vm.js';
import { DeviceDmaFlag } from '../../vhost/messages/device-dma.js';
import { stagedDeviceDma } from './staged-dma.js';

const VIOMMU: Record<number, ViommuKind> = { [VmViommu.UNSPECIFIED]: 'unspecified', [VmViommu.VTD]: 'vtd', [VmViommu.VIRTIO]: 'virtio' };

export function buildHandlers(host: SessionHost, session: Session): HandlerTable<Session> {
  const vm = () => host.vmOf(session);
  const table: HandlerTable<Session> = {
    VM_SETUP: (r) => {
      const token = isZeroToken(r.session_token) ? null : r.session_token;
      const iommufd = (r.flags & VM_SETUP_UAPI_IOMMUFD) !== 0;
      if (iommufd && !session.dispatcher.has(ProtocolFeature.VSVA_IOMMUFD)) fail('EOPNOTSUPP', 'VM_SETUP: UAPI_IOMMUFD needs the VSVA_IOMMUFD protocol feature');
      const { vm: v, resumed } = host.setupVm(session, r.name, r.pasid_quota, VIOMMU[r.flags & VM_SETUP_VIOMMU_MASK] ?? 'unspecified', token);
      // A resumed VM keeps the uAPI it was created with (docs/protocol.md §13).
      if (iommufd && !resumed) v.useIommufd();
      const reply = { vm_id: v.id, flags: resumed ? VM_SETUP_REPLY_RESUMED : 0, session_token: v.token };
      // Answered once the registry records the VM (a restarted host then protects its name).
      return host.registryPersisted().then(() => reply);
    },
    SET_MEM_TABLE: (t) => {
      let fds = t.fds ?? [];
      try {
        const v = vm();
        if (v.mem.same(t)) return;
        v.mem.check(t);
        if (v.container.mappings > 0) fail('EBUSY', 'SET_MEM_TABLE: DMA mappings exist; unmap them before changing the memory table');
        if (v.iommufd?.hasIoasMappings() === true) fail('EBUSY', 'SET_MEM_TABLE: IOAS mappings exist; unmap them (IOMMUFD_IOAS_UNMAP) before changing the memory table');
        fds = [];
        v.mem.replace(t);
      } finally {
        for (const fd of fds) closeFd(fd);
      }
      // Answered once the registry records the VM's RAM files (no other VM may claim them after a restart).
      return host.registryPersisted();
    },
    GET_STATE: (r) => ({ json: host.stateJson(session, r ?? undefined) }),
    DEVICE_ADD: (r) => vm().container.deviceAdd(r),
    DEVICE_CONFIG: (r) => vm().deviceConfig(r),
    DOMAIN_ALLOC: () => ({ domain: vm().container.domainAlloc() }),
    DOMAIN_FREE: (r) => vm().container.domainFree(r.domain),
    ATTACH: (r) => vm().container.attach(r),
    DETACH: (r) => vm().container.detach(r),
    GET_NESTING_INFO: () => vm().container.nestingInfo(),
    DMA_MAP: (r) => vm().container.dmaMap(r),
    DMA_UNMAP: (r) => vm().container.dmaUnmap(r),
    PASID_ALLOC: (r) => ({ pasid: vm().container.pasidAlloc(r) }),
    PASID_FREE: (r) => {
      const freed = vm().container.pasidFree(r); // a Promise when cut into slices (pasid-requests.ts)
      return typeof freed === 'number' ? { freed } : freed.then((n) => ({ freed: n }));
    },
    BIND_GPASID: (r) => vm().container.bind(r),
    UNBIND_GPASID: (r) => vm().container.unbind(r),
    CACHE_INVALIDATE: (r) => vm().container.cacheInvalidate(r.entries),
    PAGE_RESPONSE: (r) => vm().container.pageResponse(r),
    DEVICE_DMA: (r) => {
      const v = vm();
      if ((r.flags & DeviceDmaFlag.STAGED) === 0) return v.deviceDma(r);
      return stagedDeviceDma(r, v.mem, host.memory, v);
    },
    ...iommufdHandlers<Session>(() => {
      const v = vm();
      if (v.iommufd === null) fail('EOPNOTSUPP', `VM '${v.name}' uses the VFIO SVA uAPI, not iommufd`);
      return v.iommufd;
    }),
  };
  return inOrder(traced(host, session, table));
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

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Requests whose handler may return a Promise that must finish before the session's next
 * request runs: DMA_UNMAP and PASID_FREE cut into slices (host/vfio/dma-map.ts,
 * pasid-requests.ts) change the container between slices, IOMMUFD_IOAS_UNMAP the IOAS and its
 * HWPTs (host/iommufd/ioas.ts); IOMMUFD_HWPT_ALLOC / DEVICE_ATTACH / DEVICE_REPLACE fill a new
 * paging HWPT from a large IOAS in slices (host/iommufd/iommufd-context.ts newPaging), which
 * must see the IOAS unchanged. (DEVICE_DMA also returns a Promise while it waits for a PAGE_RESPONSE, which arrives
 * on the same session: it must not hold later requests.)
 */
const EXCLUSIVE: ReadonlySet<FrontendRequestName> = new Set<FrontendRequestName>(['DMA_UNMAP', 'PASID_FREE', 'IOMMUFD_IOAS_UNMAP', 'IOMMUFD_HWPT_ALLOC', 'IOMMUFD_DEVICE_ATTACH', 'IOMMUFD_DEVICE_REPLACE']);

/**
 * A sliced DMA_UNMAP yields to the event loop between slices so that other sessions' requests
 * run meanwhile; this session's later requests are held until it settles (resolved or
 * rejected) and then start in arrival order, so each sees the state its predecessors left.
 * Replies keep request order either way: the dispatcher writes them in request order
 * (vhost/roles/dispatcher.ts, docs/protocol.md §8). With nothing held, handlers run at once,
 * as before.
 */
function inOrder(table: HandlerTable<Session>): HandlerTable<Session> {
  let tail: Promise<void> | null = null;
  const hold = (p: PromiseLike<unknown>): void => {
    const settled = Promise.resolve(p).then(
      () => undefined,
      () => undefined,
    );
    tail = settled;
    void settled.then(() => {
      if (tail === settled) tail = null;
    });
  };
  const out: Record<string, unknown> = {};
  for (const [name, h] of Object.entries(table) as [FrontendRequestName, (r: unknown, s: Session) => unknown][]) {
    const exclusive = EXCLUSIVE.has(name);
    out[name] = (r: unknown, s: Session) => {
      if (tail === null) {
        const v = h(r, s);
        if (exclusive && isThenable(v)) hold(v);
        return v;
      }
      // Held: the next request may start once this one has started (or, for an exclusive one,
      // once it has finished).
      let markStarted!: () => void;
      const started = new Promise<void>((resolve) => (markStarted = resolve));
      const later = tail.then(() => {
        markStarted();
        return h(r, s);
      });
      hold(exclusive ? later : started);
      return later;
    };
  }
  return out as HandlerTable<Session>;
}
