/**
 * DMA jobs (docs/design.md §3.3 "workloads"): copy, fill, compare, read and write that an assigned
 * device performs on behalf of a guest process, through the process's PASID, with
 * GuestHandle.dma in chunks (one DEVICE_DMA request moves at most DEVICE_DMA_MAX_LENGTH bytes;
 * jobs use smaller chunks that never cross a chunk-aligned boundary, so a fault names a small
 * range). Results are checked in guest memory through the process's own page tables, as the
 * process would see them.
 *
 * Contracts:
 * - A job stops at the first chunk that faults and reports the fault and the bytes done before
 *   it; the device's own page-request handling (PRI) happens inside one chunk's DMA call.
 * - `copy` reads the whole source first, then writes the destination (a bounce through the
 *   device), so overlapping ranges copy the source as it was before the job.
 * - `checkDmaJob` returns undefined when guest memory shows the job's effect, else what differs.
 */
import type { DmaResult, GuestHandle } from '../../src/api/types.js';
import { fail } from '../../src/errors.js';
import type { GuestProcess } from '../driver/guest-process.js';
import { firstDifference, hexAround, patternBytes } from './data.js';

/** Bytes per device request: 64 KiB (well under DEVICE_DMA_MAX_LENGTH, 1 MiB). */
export const DMA_CHUNK = 64 * 1024;

export interface DmaTarget {
  dma: GuestHandle['dma'];
  /** The device that performs the job. */
  bdf: string;
  /** The PASID the device tags its requests with; omitted: requests without PASID (IOVA). */
  pasid?: number;
}

export type DmaJob =
  | { op: 'read'; addr: bigint; length: number }
  | { op: 'write'; addr: bigint; data: Uint8Array }
  | { op: 'fill'; addr: bigint; length: number; value: number }
  | { op: 'copy'; src: bigint; dst: bigint; length: number }
  | { op: 'compare'; a: bigint; b: bigint; length: number };

export type DmaFault = { reason: number; addr: bigint; pasid?: number };

export type DmaJobResult =
  | { ok: true; bytes: number; data?: Uint8Array; equal?: boolean; requests: number }
  | { ok: false; fault: DmaFault; bytes: number; requests: number };

export function jobLength(job: DmaJob): number {
  return job.op === 'write' ? job.data.length : job.length;
}

/** Run one job on the device. Throws only for refused requests (VsvaError), never for faults. */
export async function runDmaJob(t: DmaTarget, job: DmaJob, chunk = DMA_CHUNK): Promise<DmaJobResult> {
  const length = jobLength(job);
  if (!Number.isSafeInteger(length) || length < 1) fail('EINVAL', `DMA job length ${length} must be positive`);
  let requests = 0;
  const read = async (addr: bigint, n: number, out: Uint8Array): Promise<DmaFault | null> => {
    let done = 0;
    while (done < n) {
      const at = addr + BigInt(done);
      const step = Math.min(n - done, chunk - Number(at % BigInt(chunk)));
      const r = await issue(t, { addr: at, length: step });
      requests++;
      if (!r.ok) return r.fault;
      out.set(r.data ?? new Uint8Array(0), done);
      done += step;
    }
    return null;
  };
  const write = async (addr: bigint, data: Uint8Array): Promise<{ fault: DmaFault | null; done: number }> => {
    let done = 0;
    while (done < data.length) {
      const at = addr + BigInt(done);
      const step = Math.min(data.length - done, chunk - Number(at % BigInt(chunk)));
      const r = await issue(t, { addr: at, data: data.subarray(done, done + step) });
      requests++;
      if (!r.ok) return { fault: r.fault, done };
      done += step;
    }
    return { fault: null, done };
  };
  switch (job.op) {
    case 'read': {
      const out = new Uint8Array(length);
      const f = await read(job.addr, length, out);
      return f ? { ok: false, fault: f, bytes: 0, requests } : { ok: true, bytes: length, data: out, requests };
    }
    case 'write':
    case 'fill': {
      const data = job.op === 'write' ? job.data : patternBytes(job.value, length);
      const w = await write(job.addr, data);
      return w.fault ? { ok: false, fault: w.fault, bytes: w.done, requests } : { ok: true, bytes: length, requests };
    }
    case 'copy': {
      const buf = new Uint8Array(length);
      const f = await read(job.src, length, buf);
      if (f) return { ok: false, fault: f, bytes: 0, requests };
      const w = await write(job.dst, buf);
      return w.fault ? { ok: false, fault: w.fault, bytes: w.done, requests } : { ok: true, bytes: length, requests };
    }
    case 'compare': {
      const a = new Uint8Array(length);
      const b = new Uint8Array(length);
      const f = (await read(job.a, length, a)) ?? (await read(job.b, length, b));
      if (f) return { ok: false, fault: f, bytes: 0, requests };
      return { ok: true, bytes: length, equal: firstDifference(a, b) < 0, requests };
    }
  }
}

function issue(t: DmaTarget, req: { addr: bigint; length?: number; data?: Uint8Array }): Promise<DmaResult> {
  return t.dma(t.bdf, t.pasid === undefined ? req : { ...req, pasid: t.pasid });
}

/**
 * Check a completed job's effect in the process's memory (read through its page tables).
 * Returns undefined when it holds, else a sentence saying what differs.
 */
export async function checkDmaJob(proc: Pick<GuestProcess, 'read' | 'name'>, job: DmaJob, result: DmaJobResult): Promise<string | undefined> {
  if (!result.ok) return `the job faulted (reason 0x${result.fault.reason.toString(16)} at 0x${result.fault.addr.toString(16)})`;
  const length = jobLength(job);
  const hx = (a: bigint) => '0x' + a.toString(16);
  const same = (what: string, actual: Uint8Array, expected: Uint8Array, base: bigint): string | undefined => {
    const d = firstDifference(actual, expected);
    if (d < 0) return undefined;
    return `${what}: byte ${d} (VA ${hx(base + BigInt(d))}) is ${hexAround(actual, d)}, expected ${hexAround(expected, d)}`;
  };
  switch (job.op) {
    case 'read':
      return same(`${proc.name} memory vs data the device read`, result.data!, await proc.read(job.addr, length), job.addr);
    case 'write':
      return same(`${proc.name} memory after the device's write`, await proc.read(job.addr, length), job.data, job.addr);
    case 'fill':
      return same(`${proc.name} memory after the device's fill`, await proc.read(job.addr, length), patternBytes(job.value, length), job.addr);
    case 'copy':
      return same(`${proc.name} destination after the device's copy`, await proc.read(job.dst, length), await proc.read(job.src, length), job.dst);
    case 'compare': {
      const equal = firstDifference(await proc.read(job.a, length), await proc.read(job.b, length)) < 0;
      return equal === result.equal ? undefined : `the device found the buffers ${result.equal ? 'equal' : 'different'}, the process sees them ${equal ? 'equal' : 'different'}`;
    }
  }
}
