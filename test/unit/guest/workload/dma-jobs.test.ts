/**
 * Workload DMA jobs (guest/workload/dma-jobs.ts) over a fake device with a flat address space:
 * chunking at chunk-aligned boundaries, stopping at the first fault, checks that find a wrong
 * result, and the deterministic data generators.
 */
import { describe, it, expect } from 'vitest';
import { checkDmaJob, runDmaJob, type DmaJob } from '../../../../guest/workload/dma-jobs.js';
import { firstDifference, patternBytes, seededBytes } from '../../../../guest/workload/data.js';
import type { DmaRequest, DmaResult } from '../../../../src/api/types.js';

/** A device over 1 MiB of memory at 0; addresses ≥ `faultFrom` fault with reason 0x71. */
function fakeDevice(faultFrom = 1n << 20n) {
  const mem = new Uint8Array(1 << 20);
  const calls: DmaRequest[] = [];
  const dma = async (_bdf: string, req: DmaRequest): Promise<DmaResult> => {
    calls.push(req);
    const n = req.data?.length ?? req.length!;
    if (req.addr + BigInt(n) > faultFrom) return { ok: false, fault: { reason: 0x71, addr: req.addr, ...(req.pasid !== undefined ? { pasid: req.pasid } : {}) } };
    const a = Number(req.addr);
    if (req.data) {
      mem.set(req.data, a);
      return { ok: true };
    }
    return { ok: true, data: mem.slice(a, a + n) };
  };
  /** The process view: identity-mapped. */
  const proc = { name: 'p', read: async (va: bigint, len: number) => mem.slice(Number(va), Number(va) + len) };
  return { mem, calls, dma, proc };
}

describe('DMA jobs', () => {
  it('split into chunk-aligned requests tagged with the PASID', async () => {
    const d = fakeDevice();
    const r = await runDmaJob({ dma: d.dma, bdf: '00:03.0', pasid: 5 }, { op: 'fill', addr: 0x0f000n, length: 0x12000, value: 7 }, 0x10000);
    expect(r).toEqual({ ok: true, bytes: 0x12000, requests: 3 });
    expect(d.calls.map((c) => [c.addr, c.data!.length, c.pasid])).toEqual([
      [0x0f000n, 0x1000, 5],
      [0x10000n, 0x10000, 5],
      [0x20000n, 0x1000, 5],
    ]);
    expect(d.mem.subarray(0x0f000, 0x21000).every((b) => b === 7)).toBe(true);
  });

  it('copy, compare and read do what they say, and the checks agree', async () => {
    const d = fakeDevice();
    d.mem.set(seededBytes(3, 8192), 0x1000);
    const jobs: DmaJob[] = [
      { op: 'copy', src: 0x1000n, dst: 0x8000n, length: 8192 },
      { op: 'compare', a: 0x1000n, b: 0x8000n, length: 8192 },
      { op: 'read', addr: 0x8000n, length: 16 },
      { op: 'write', addr: 0x20000n, data: patternBytes(0x33, 100) },
    ];
    for (const job of jobs) {
      const r = await runDmaJob({ dma: d.dma, bdf: '00:03.0' }, job);
      expect(r.ok).toBe(true);
      expect(await checkDmaJob(d.proc, job, r)).toBeUndefined();
      if (job.op === 'compare' && r.ok) expect(r.equal).toBe(true);
      if (job.op === 'read' && r.ok) expect(r.data).toEqual(seededBytes(3, 16));
    }
    expect(d.calls.every((c) => c.pasid === undefined)).toBe(true);
  });

  it('stop at the first fault and report the bytes done', async () => {
    const d = fakeDevice(0x30000n);
    const r = await runDmaJob({ dma: d.dma, bdf: '00:03.0', pasid: 1 }, { op: 'fill', addr: 0x10000n, length: 0x40000, value: 1 }, 0x10000);
    expect(r).toEqual({ ok: false, fault: { reason: 0x71, addr: 0x30000n, pasid: 1 }, bytes: 0x20000, requests: 3 });
    expect(await checkDmaJob(d.proc, { op: 'fill', addr: 0x10000n, length: 0x40000, value: 1 }, r)).toBe('the job faulted (reason 0x71 at 0x30000)');
  });

  it('a check finds memory that does not show the job’s effect', async () => {
    const d = fakeDevice();
    const job: DmaJob = { op: 'fill', addr: 0x2000n, length: 64, value: 0xaa };
    const r = await runDmaJob({ dma: d.dma, bdf: '00:03.0' }, job);
    d.mem[0x2000 + 10] = 0; // something else wrote there
    expect(await checkDmaJob(d.proc, job, r)).toBe("p memory after the device's fill: byte 10 (VA 0x200a) is 00 aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa …, expected aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa …");
  });
});

describe('data', () => {
  it('seeded bytes are deterministic and differ by seed', () => {
    expect(seededBytes(1, 64)).toEqual(seededBytes(1, 64));
    expect(firstDifference(seededBytes(1, 64), seededBytes(2, 64))).toBeGreaterThanOrEqual(0);
    expect(seededBytes(0, 7)).toHaveLength(7);
    expect(firstDifference(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(-1);
  });
});
