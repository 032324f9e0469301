/**
 * An iommufd VM's objects as the host snapshot reports them (docs/protocol.md §13.11), for the
 * dashboard tests: IOAS 1 with a nest-parent paging HWPT 3 (two nested HWPTs 4 and 5 on it, 5 with
 * fault queue 6) and an automatic paging HWPT 7; device 2 (00:03.0) with its RID on HWPT 7 and
 * PASIDs 1 → 4, 2 → 5; device 8 (00:04.0) with global PASID 3 → 4; device 9 (00:05.0) unattached.
 */
import type { IommufdObjectsSnapshot } from '../../../../src/api/types.js';

export function sampleObjects(): IommufdObjectsSnapshot {
  return {
    ioas: [{ id: 1, areas: 1, mappedBytes: 16 * 2 ** 20, hwpts: [3, 7] }],
    hwpts: [
      { id: 3, kind: 'paging', ioas: 1, children: [4, 5], nestParent: true, auto: false, pasid: true, did: 5, fault: null, users: 2 },
      { id: 4, kind: 'nested', parent: 3, children: [], nestParent: false, auto: false, pasid: true, did: 5, flptr: '0x100000', fault: null, users: 2 },
      { id: 5, kind: 'nested', parent: 3, children: [], nestParent: false, auto: false, pasid: true, did: 5, flptr: '0x104000', fault: 6, users: 1 },
      { id: 7, kind: 'paging', ioas: 1, children: [], nestParent: false, auto: true, pasid: false, did: 6, fault: null, users: 1 },
    ],
    devices: [
      { id: 2, bdf: '00:03.0', hostBdf: '01:00.0', rid: 7, pasids: [{ pasid: 1, hwpt: 4, global: false }, { pasid: 2, hwpt: 5, global: false }] },
      { id: 8, bdf: '00:04.0', hostBdf: '01:00.1', rid: null, pasids: [{ pasid: 3, hwpt: 4, global: true }] },
      { id: 9, bdf: '00:05.0', hostBdf: '01:00.2', rid: null, pasids: [] },
    ],
    faults: [{ id: 6, queued: 0, unanswered: 0, users: 1 }],
  };
}
