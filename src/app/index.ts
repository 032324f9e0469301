/**
 * The package root (`import { ... } from 'vsva'`): the public harness API of docs/design.md §7 and the
 * building blocks harnesses may use directly.
 */
export { VsvaError, Errno, fail, isVsvaError, type ErrnoName } from '../errors.js';
export { logger, setLogLevel, childLogger } from '../log.js';
export { VERSION } from '../version.js';
export { GuestRam } from '../../guest/memory/guest-ram.js';
export { HostMemory } from '../../host/memory/host-memory.js';
export { FileBacking, InProcessBacking, openBacking, type MemoryBacking } from '../memory/backing.js';
export { startHost, type StartedHost, type StartHostExtraOptions } from './harness/start-host.js';
export { startGuest, type StartedGuest, type StartGuestExtraOptions, type StartGuestAllOptions } from './harness/start-guest.js';

// Public harness types (docs/design.md §7).
export type {
  HostSnapshot, VmSnapshot, PasidSnapshot, PasidBindingSnapshot, PasidState, HostHandle, GuestHandle,
  StartHostOptions, StartGuestOptions, DmaRequest, DmaResult, DeviceSpec, DeviceKind,
} from '../api/types.js';

// Guest-side building blocks: Linux-like drivers on GuestHandle, processes, workloads.
export { VtdDriver } from '../../guest/driver/vtd-driver.js';
export { VirtioIommuDriver } from '../../guest/driver/virtio-iommu-driver.js';
export { GuestProcess, flushRangeFor } from '../../guest/driver/guest-process.js';
export { PageAllocator } from '../../guest/driver/page-allocator.js';
export { startSvaGuest, SvaGuest, VtdSvaGuest, VirtioSvaGuest, runDmaJob, checkDmaJob } from '../../guest/workload/index.js';

// Scenarios, demo, traces.
export { loadScenario, parseScenario, formatIssues } from './scenario/parse.js';
export { runScenario } from './scenario/runner.js';
export { renderReport } from './scenario/report.js';
export { Demo } from './demo/demo.js';
export { TraceBus } from '../trace/bus.js';
export type { TraceEvent, TraceKind } from '../trace/events.js';
export { TraceRecorder, readTrace } from '../trace/recorder.js';
export { toChromeTrace, validateChromeTrace } from '../trace/chrome-export.js';

// Bit-exact VT-d formats, for harnesses that build structures by hand.
export * as vtd from '../vtd/index.js';

// The host half, for embedding (in-process hosts and unit tests of host pieces).
export { HostServer } from '../../host/server/index.js';
export { IoasidCore } from '../../host/ioasid/index.js';
export { HostIommu } from '../../host/iommu/index.js';
