/** The host half as a service (docs/design.md §4): server, VMs, wire handlers. */
export { HostServer, DEFAULT_GRACE_MS, DEFAULT_MAX_VMS, type HostServerOptions } from './host-server.js';
export { Vm, type ViommuKind } from './vm.js';
export { buildHandlers } from './handlers.js';
export { VfioContainer, IOMMU_USER, GPA_DOMAIN, MAX_DEVICES, MAX_DOMAINS, MAX_MAPPINGS, type ContainerCounters } from '../vfio/container.js';
export { KVM_USER } from '../kvm/kvm.js';
export { VDCM_USER } from '../vdcm/vdcm.js';
export { DEFAULT_MAX_PENDING_PAGE_REQUESTS, DEFAULT_PAGE_REQUEST_TIMEOUT_MS } from '../devices/page-requests.js';
