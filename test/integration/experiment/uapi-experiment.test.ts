/**
 * `vsva experiment uapi` on the real system, few iterations: a spawned host, one VT-d VM per
 * host uAPI through startGuest({ uapi }), the guest driver's workload on each. Both uAPIs run
 * every operation without a failure, every operation's message count is the same in every
 * iteration, and the messages are each uAPI's own (docs/protocol.md §10 vs §13); the
 * virtio-iommu guest runs on both as well.
 */
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { scaled } from '../../support/wait.js';
import { runUapiExperiment, UAPI_OPS, type UapiOpRow, type Uapi, type UapiOp } from '../../../src/app/experiment/uapi/index.js';

describe('vsva experiment uapi (real system, 4 iterations)', () => {
  it('measures both uAPIs, operation by operation, with each uAPI’s own messages', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-uapi-it-'));
    try {
      const { results, files } = await runUapiExperiment({ out, iterations: 4, rounds: 2, progressStream: null });
      expect(results.skipped).toEqual([]);
      expect(results.failures).toEqual([]);
      expect(files).toContain('uapi-latency.svg');
      const row = (u: Uapi, op: UapiOp): UapiOpRow => results.ops.find((x) => x.uapi === u && x.op === op)!;
      for (const u of ['vfio-sva', 'iommufd'] as const) {
        for (const op of UAPI_OPS) {
          const r = row(u, op);
          expect(r.samples, `${u} ${op}`).toBe(4);
          expect(r.messages_min, `${u} ${op}: the same messages every time`).toBe(r.messages_max);
          expect(r.p50_us).toBeGreaterThan(0);
        }
        expect(row(u, 'alloc').request_names).toBe('PASID_ALLOC×1');
        expect(row(u, 'dma').request_names).toBe('DEVICE_DMA×1');
        expect(row(u, 'fault').backend_requests_per_op).toBe(1);
      }
      expect(row('vfio-sva', 'bind').request_names).toContain('BIND_GPASID×1');
      expect(row('iommufd', 'bind').request_names).toMatch(/IOMMUFD_HWPT_ALLOC×1/);
      expect(row('iommufd', 'bind').request_names).toMatch(/IOMMUFD_DEVICE_(ATTACH|REPLACE)×1/);
      expect(row('vfio-sva', 'invalidate').request_names).toBe('CACHE_INVALIDATE×1');
      expect(row('iommufd', 'invalidate').request_names).toBe('IOMMUFD_HWPT_INVALIDATE×1');
      expect(row('vfio-sva', 'unbind').request_names).toContain('UNBIND_GPASID×1');
      expect(row('iommufd', 'unbind').request_names).toContain('IOMMUFD_DEVICE_DETACH×1');
      const backend = (u: Uapi) => results.messages.filter((m) => m.uapi === u && m.op === 'fault' && m.class === 'backend-request').map((m) => m.message);
      expect(backend('vfio-sva')).toEqual(['PAGE_REQUEST']);
      expect(backend('iommufd')).toEqual(['IOMMUFD_FAULT']);
      // every message a uAPI sent is its own family's (or shared by both: PASID_*, DEVICE_DMA)
      const sent = (u: Uapi) => new Set(results.messages.filter((m) => m.uapi === u && m.class === 'request').map((m) => m.message));
      for (const m of sent('iommufd')) expect(m).not.toMatch(/^(BIND_GPASID|UNBIND_GPASID|CACHE_INVALIDATE|PAGE_RESPONSE|ATTACH|DETACH)$/);
      for (const m of sent('vfio-sva')) expect(m).not.toMatch(/^IOMMUFD_/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, scaled(120_000));

  it('runs the virtio-iommu guest on both uAPIs too', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-uapi-it-'));
    try {
      const { results } = await runUapiExperiment({ out, iterations: 3, rounds: 1, viommu: 'virtio', progressStream: null });
      expect(results.viommu).toBe('virtio');
      expect(results.skipped).toEqual([]);
      expect(results.failures).toEqual([]);
      const row = (u: Uapi, op: UapiOp): UapiOpRow => results.ops.find((x) => x.uapi === u && x.op === op)!;
      for (const u of ['vfio-sva', 'iommufd'] as const) for (const op of UAPI_OPS) expect(row(u, op).samples, `${u} ${op}`).toBe(3);
      // guest-private PASIDs: no message to allocate or free one
      for (const u of ['vfio-sva', 'iommufd'] as const) expect(row(u, 'alloc').messages_max + row(u, 'free').messages_max).toBe(0);
      expect(row('vfio-sva', 'invalidate').request_names).toBe('CACHE_INVALIDATE×1');
      expect(row('iommufd', 'invalidate').request_names).toBe('IOMMUFD_HWPT_INVALIDATE×1');
      expect(row('iommufd', 'bind').request_names).toMatch(/IOMMUFD_HWPT_ALLOC×1/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, scaled(120_000));
});
