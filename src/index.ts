/**
 * The package root (`import { ... } from 'vsva'`): the public harness API of DESIGN §7 and the
 * building blocks harnesses may use directly.
 */
export { VsvaError, Errno, fail, isVsvaError, type ErrnoName } from './errors.js';
export { logger, setLogLevel, childLogger } from './log.js';
export { VERSION } from './version.js';
export { GuestRam } from '../guest/memory/guest-ram.js';
export { HostMemory } from '../host/memory/host-memory.js';
export { FileBacking, InProcessBacking, openBacking, type MemoryBacking } from './memory/backing.js';
export { startHost, type StartedHost, type StartHostExtraOptions } from './api/start-host.js';
export { startGuest, type StartedGuest, type StartGuestExtraOptions, type StartGuestAllOptions } from './api/start-guest.js';
