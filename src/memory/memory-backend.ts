/**
 * How a half reaches guest RAM (`--memory-backend`, the `memoryBackend` option of startHost and
 * startGuest; docs/architecture.md "Memory model"):
 * - 'mapped': MAP_SHARED mappings through the native addon — loads and stores, no system call
 *   per access; guest RAM is a sealed memfd whose descriptor SET_MEM_TABLE passes;
 * - 'pread': positioned I/O on a file named by path (SET_MEM_TABLE's path form).
 * The default is 'mapped' when the addon loaded, else 'pread' after one warning. VSVA_NATIVE=off
 * unloads the addon and so forces 'pread', whatever was asked.
 */
import { fail } from '../errors.js';
import { nativeAvailable, warnNativeUnavailable } from '../native/native.js';

export type MemoryBackend = 'mapped' | 'pread';

export function resolveMemoryBackend(asked?: string): MemoryBackend {
  if (asked !== undefined && asked !== 'mapped' && asked !== 'pread') fail('EINVAL', `memory backend must be 'mapped' or 'pread', not '${asked}'`);
  if (asked === 'pread') return 'pread';
  if (nativeAvailable()) return 'mapped';
  warnNativeUnavailable();
  return 'pread';
}
