/**
 * The iommufd objects of one VM for the host snapshot: IOASes, HWPTs with their parent / children
 * and host DID, bound devices with their RID and PASID attachments, fault queues — the object
 * graph of Kevin Tian's /dev/iommu proposal (2021), as iommufd built it.
 */
import type { IommufdObjectsSnapshot, PasidBindingSnapshot } from '../../src/api/types.js';
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

/**
 * The PASID table row's bindings of a global PASID (docs/protocol.md §13 PASIDs): every device
 * attachment of the VM at that PASID with GLOBAL_PASID — the attachments that hold its IOASID
 * reference of user `iommufd`, so the row changes in the same call that changes them
 * (host/server/pasid-rows.ts). A nested HWPT binds the guest's first-level table (PGTT nested);
 * a paging HWPT translates by its second level (PGTT sl). Device-local PASIDs are not in the
 * IOASID core and have no row; the topology shows them.
 */
export function globalPasidBindings(objects: ObjectTable, pasid: number): PasidBindingSnapshot[] {
  const out: PasidBindingSnapshot[] = [];
  for (const d of objects.ofKind<IommufdDevice>('device')) {
    const a = d.pasids.get(pasid);
    if (a === undefined || !a.global) continue;
    out.push(a.hwpt.kind === 'hwpt-nested' ? { bdf: d.bdf, pgtt: 'nested', flptr: `0x${a.hwpt.s1.flptr.toString(16)}` } : { bdf: d.bdf, pgtt: 'sl' });
  }
  return out;
}

/**
 * Which global PASIDs' bindings changed since the last look (REPLACE moves an attachment to
 * another HWPT without an IOASID core call, so no change listener names it). Looks only when
 * `generation` (bumped by every request that can change the VM) moved; a look costs one pass
 * over the devices' PASID attachments and names only the PASIDs whose attached HWPTs differ.
 */
export class GlobalPasidTracker {
  private generation: number | null = null;
  private seen = new Map<number, string>();

  changed(objects: ObjectTable, generation: number): number[] {
    if (generation === this.generation) return [];
    this.generation = generation;
    const now = new Map<number, string>();
    for (const d of objects.ofKind<IommufdDevice>('device')) {
      for (const [pasid, a] of d.pasids) {
        if (!a.global) continue;
        const sig = `${d.id}:${a.hwpt.id}`;
        const prev = now.get(pasid);
        now.set(pasid, prev === undefined ? sig : `${prev},${sig}`);
      }
    }
    const out: number[] = [];
    for (const [pasid, sig] of now) if (this.seen.get(pasid) !== sig) out.push(pasid);
    for (const pasid of this.seen.keys()) if (!now.has(pasid)) out.push(pasid);
    this.seen = now;
    return out;
  }
}
