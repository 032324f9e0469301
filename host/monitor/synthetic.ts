/**
 * A synthetic host snapshot of any size, for tests, previews and the scale figure of
 * docs/design.md §9 (64 VMs × 1024 PASIDs). Deterministic: the same options give the same
 * snapshot.
 */
import type { HostSnapshot, PasidSnapshot, VmSnapshot } from '../../src/api/types.js';

export interface SyntheticOptions {
  vms: number;
  pasidsPerVm: number;
  pasidBits?: number;
}

const USERS: readonly string[][] = [['iommu'], ['iommu', 'kvm'], ['iommu', 'vdcm'], ['iommu', 'kvm', 'vdcm']];

export function syntheticSnapshot({ vms, pasidsPerVm, pasidBits = 20 }: SyntheticOptions): HostSnapshot {
  const total = 2 ** pasidBits - 1;
  const list: VmSnapshot[] = [];
  let hpasid = 1;
  for (let v = 0; v < vms; v++) {
    const pasids: PasidSnapshot[] = new Array(pasidsPerVm);
    for (let i = 0; i < pasidsPerVm; i++) {
      const bound = i % 8 !== 7;
      pasids[i] = {
        hpasid: hpasid++,
        gpasid: i % 2 === 0 ? 100 + i : null,
        state: bound ? 'active' : i % 16 === 15 ? 'free-pending' : 'idle',
        refs: bound ? 2 : 1,
        users: USERS[i % USERS.length]!,
        bindings: bound ? [{ bdf: '00:03.0', pgtt: 'nested', flptr: '0x' + (0x1000_0000 + i * 0x1000).toString(16) }] : [],
      };
    }
    list.push({
      name: `vm${v}`,
      connected: true,
      set: { quota: Math.max(1024, pasidsPerVm), used: pasidsPerVm },
      devices: [
        { bdf: '00:03.0', kind: 'pf' },
        { bdf: '00:04.0', kind: 'adi' },
      ],
      pasids,
    });
  }
  return { pasidBits, capacity: { total, available: total - vms * pasidsPerVm }, vms: list };
}
