/**
 * The iommufd objects of one VM for the host snapshot: IOASes, HWPTs with their parent / children
 * and host DID, bound devices with their RID and PASID attachments, fault queues — the object
 * graph of Kevin Tian's /dev/iommu proposal (2021), as iommufd built it.
 */
import type { IommufdObjectsSnapshot } from '../../src/api/types.js';
import { formatBdf } from '../../src/pci.js';
import type { IommufdDevice } from './device.js';
import type { FaultQueue } from './fault-queue.js';
import type { HwptNested, HwptPaging } from './hw-pagetable.js';
import type { Ioas } from './ioas.js';
import type { ObjectTable } from './object-table.js';

export type IommufdSnapshot = IommufdObjectsSnapshot;

export function snapshotOf(objects: ObjectTable): IommufdSnapshot {
  const paging = objects.ofKind<HwptPaging>('hwpt-paging');
  const nested = objects.ofKind<HwptNested>('hwpt-nested');
  return {
    ioas: objects.ofKind<Ioas>('ioas').map((i) => ({
      id: i.id,
      areas: i.areas.length,
      mappedBytes: Number(i.mappedBytes),
      hwpts: paging.filter((h) => h.ioas === i).map((h) => h.id),
    })),
    hwpts: [
      ...paging.map((h) => ({
        id: h.id, kind: 'paging' as const, ioas: h.ioas.id, children: [...h.children].map((c) => c.id), nestParent: h.nestParent,
        auto: h.auto, pasid: h.pasidCapable, did: h.domain.did, fault: h.fault?.id ?? null, users: h.users,
      })),
      ...nested.map((h) => ({
        id: h.id, kind: 'nested' as const, parent: h.parent.id, children: [], nestParent: false, auto: false, pasid: h.pasidCapable,
        did: h.parent.domain.did, flptr: `0x${h.s1.flptr.toString(16)}`, fault: h.fault?.id ?? null, users: h.users,
      })),
    ].sort((a, b) => a.id - b.id),
    devices: objects.ofKind<IommufdDevice>('device').map((d) => ({
      id: d.id,
      bdf: d.bdf,
      hostBdf: formatBdf(d.hostRid),
      rid: d.rid?.hwpt.id ?? null,
      pasids: [...d.pasids].sort((a, b) => a[0] - b[0]).map(([pasid, a]) => ({ pasid, hwpt: a.hwpt.id, global: a.global })),
    })),
    faults: objects.ofKind<FaultQueue>('fault').map((f) => ({ id: f.id, queued: f.queued, unanswered: f.unanswered, users: f.users })),
  };
}
