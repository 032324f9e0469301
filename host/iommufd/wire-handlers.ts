/**
 * The IOMMUFD_* requests of the wire (docs/protocol.md §13) mapped onto a VM's iommufd context.
 * `contextOf` answers the session's context, or throws EOPNOTSUPP for a VM of the VFIO SVA uAPI
 * (host/server/handlers.ts).
 */
import type { HandlerTable } from '../../vhost/roles/backend.js';
import type { IommufdContext } from './iommufd-context.js';

export function iommufdHandlers<C>(contextOf: () => IommufdContext): HandlerTable<C> {
  const fd = contextOf;
  return {
    IOMMUFD_DESTROY: (r) => fd().destroy(r.id),
    IOMMUFD_IOAS_ALLOC: (r) => ({ out_id: fd().ioasAlloc(r.flags) }),
    IOMMUFD_IOAS_ALLOW_IOVAS: (r) => fd().ioasAllowIovas(r.ioas_id, r.items),
    IOMMUFD_IOAS_COPY: (r) => ({ iova: fd().ioasCopy(r) }),
    IOMMUFD_IOAS_IOVA_RANGES: (r) => {
      const { alignment, ranges } = fd().ioasIovaRanges(r.ioas_id);
      return { count: ranges.length, out_iova_alignment: alignment, items: ranges };
    },
    IOMMUFD_IOAS_MAP: (r) => ({ iova: fd().ioasMap(r) }),
    IOMMUFD_IOAS_UNMAP: (r) => {
      // A large unmap is cut into slices (Ioas.unmap): the session holds this VM's later requests until it completes (host/server/handlers.ts).
      const length = fd().ioasUnmap(r);
      return typeof length === 'bigint' ? { length } : length.then((n) => ({ length: n }));
    },
    IOMMUFD_DEVICE_BIND: (r) => ({ out_id: fd().deviceBind(r) }),
    IOMMUFD_DEVICE_UNBIND: (r) => fd().deviceUnbind(r.id),
    IOMMUFD_DEVICE_ATTACH: (r) => hwptReply(fd().deviceAttach(r)),
    IOMMUFD_DEVICE_REPLACE: (r) => hwptReply(fd().deviceReplace(r)),
    IOMMUFD_DEVICE_DETACH: (r) => fd().deviceDetach(r),
    IOMMUFD_HWPT_ALLOC: (r) => {
      // A paging HWPT built from a large IOAS is filled in slices (IommufdContext.newPaging).
      const id = fd().hwptAlloc(r);
      return typeof id === 'number' ? { out_id: id } : id.then((out_id) => ({ out_id }));
    },
    IOMMUFD_GET_HW_INFO: (r) => fd().getHwInfo(r),
    IOMMUFD_HWPT_INVALIDATE: (r) => fd().hwptInvalidate(r),
    IOMMUFD_FAULT_QUEUE_ALLOC: (r) => ({ out_id: fd().faultQueueAlloc(r.flags) }),
    IOMMUFD_FAULT_READ: (r) => {
      const items = fd().faultRead(r.fault_id, r.max_records);
      return { count: items.length, items };
    },
    IOMMUFD_FAULT_RESPOND: (r) => fd().faultRespond(r),
  };
}

/** ATTACH / REPLACE's reply, also when it waits for an automatic HWPT filled in slices. */
function hwptReply(id: number | Promise<number>): { hwpt_id: number } | Promise<{ hwpt_id: number }> {
  return typeof id === 'number' ? { hwpt_id: id } : id.then((hwpt_id) => ({ hwpt_id }));
}
