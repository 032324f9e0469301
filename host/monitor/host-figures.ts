/**
 * The host process's resource figures for the dashboard's pong (types.ts HostFigures): memory
 * from Node's process.memoryUsage(), heap in use right after a full collection when the process
 * was started with --expose-gc (V8's `gc()` global), open descriptors from /proc/self/fd (Linux
 * proc(5)), the page-table pool's counters and the host IOMMU's sizes.
 */
import { readdirSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import type { HostFigures, IommuFigures, PoolFigures } from './types.js';

/** At most one forced collection per this many ms, however often figures are asked for. */
export const MIN_GC_INTERVAL_MS = 1000;

export class HostFiguresReader {
  private lastGcAt: number | null = null;
  private lastAfterGc: number | null = null;
  private lastCodeAfterGc: number | null = null;

  constructor(
    private readonly pool: () => PoolFigures | null,
    private readonly iommu: () => IommuFigures | null = () => null,
  ) {}

  read(): HostFigures {
    const gc = (globalThis as { gc?: () => void }).gc;
    const now = performance.now();
    if (typeof gc === 'function' && (this.lastGcAt === null || now - this.lastGcAt >= MIN_GC_INTERVAL_MS)) {
      gc();
      this.lastGcAt = performance.now();
      this.lastAfterGc = process.memoryUsage().heapUsed;
      this.lastCodeAfterGc = codeSpaceBytes();
    }
    const m = process.memoryUsage();
    return {
      rssBytes: m.rss,
      heapUsedBytes: m.heapUsed,
      heapUsedAfterGcBytes: this.lastAfterGc,
      codeSpaceAfterGcBytes: this.lastCodeAfterGc,
      gcAgeMs: this.lastGcAt === null ? null : Math.round(performance.now() - this.lastGcAt),
      externalBytes: m.external,
      arrayBuffersBytes: m.arrayBuffers,
      openFds: openFdCount(),
      pageTablePool: this.pool(),
      iommu: this.iommu(),
    };
  }
}

/**
 * Bytes in use in V8's code spaces (compiled functions): part of heapUsed that grows as the JIT
 * optimizes more of the program, not with what the process holds.
 */
export function codeSpaceBytes(): number {
  let n = 0;
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'code_space' || s.space_name === 'code_large_object_space') n += s.space_used_size;
  return n;
}

/** Open descriptors of this process (the listing's own descriptor excluded), or null off Linux. */
export function openFdCount(): number | null {
  try {
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return null;
  }
}
