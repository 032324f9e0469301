/**
 * The host uAPI of a VM (host-uapi.ts): VFIO SVA (docs/protocol.md §10) or iommufd (§13),
 * chosen per VM at VM_SETUP.
 */
import { fail } from '../../src/errors.js';
import type { HostCalls } from './host-uapi.js';
import type { HostUapi, UapiKind } from './host-uapi.js';
import { IommufdUapi } from './iommufd.js';
import { VfioSvaUapi } from './vfio-sva.js';

export function createHostUapi(kind: UapiKind, host: HostCalls): HostUapi {
  if (kind === 'vfio-sva') return new VfioSvaUapi(host);
  if (kind === 'iommufd') return new IommufdUapi(host);
  return fail('EINVAL', `uapi must be 'vfio-sva' or 'iommufd', not '${String(kind)}'`);
}

export { UAPI_KINDS, type FirstLevelTable, type HostCalls, type HostHwInfo, type HostUapi, type PageResponseArgs, type PasidRef, type PasidRoute, type UapiDevice, type UapiKind } from './host-uapi.js';
export type { InvalidationSink } from './invalidation-sink.js';
export { IommufdUapi, type IommufdObjects } from './iommufd.js';
export { VfioSvaUapi, gpasidBindData } from './vfio-sva.js';
