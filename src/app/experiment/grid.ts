/**
 * The parameter grid of `vsva experiment alloc` (paravirtual PASID allocation, docs/design.md §9 and
 * issue 10). Three experiments share one vocabulary:
 *
 * 1. `alloc` — latency, throughput and quota exhaustion. For every point (scheme × VMs × PASIDs
 *    per VM × quota) that many VMs connect to one host and run concurrently; each allocates and
 *    binds `pasidsPerVm` PASIDs one after another (the VMs interleave). `quota` below the demand
 *    shows what happens at quota exhaustion: how many succeed and the error each scheme reports.
 * 2. `fairness` — VMs competing for a small host PASID space (`pasidBits`, 10 by default:
 *    1023 IDs). Every VM demands `oversubscription × capacity / vms` PASIDs. The quota policy
 *    decides what each VM's IOASID set may reserve at VM setup:
 *      - `demand`: quota = the VM's demand (first come, first served at setup);
 *      - `fair-share`: quota = ⌊capacity / vms⌋;
 *      - `unlimited`: quota 0 (the rest of the capacity at setup, quota 0 = no limit, as in ioasid_set_alloc of Jacob Pan's "[PATCH V4 00/18] IOASID extensions for guest SVA", 2021).
 *    The VMs then allocate concurrently until their demand is met or an allocation fails;
 *    Jain's index over the per-VM successes measures fairness.
 * 3. `dma` — the DMA path cost of non-identity mapping: one bound PASID per VM and `samples`
 *    device DMAs of `length` bytes through it, for each of DMA_VARIANTS: identity (VCMD) with a
 *    `pf` device (PASID used as programmed) and with an `adi` device (the VDCM translates gPASID
 *    → hPASID with find_by_spid), guest-private PASIDs on VT-d (`adi`), and virtio-iommu
 *    (guest-private PASID mapped by SPID).
 *
 * Schemes:
 *   - `vcmd-identity`: VT-d guest with the virtual command interface; the host allocates and the
 *     guest uses the host PASID (guest PASID = host PASID).
 *   - `spid-vtd`: VT-d guest without VCMD; the guest picks its own PASIDs and the host maps each
 *     to a host PASID at bind time, recording the guest's as the SPID (non-identity).
 *   - `virtio-spid`: virtio-iommu guest with guest-managed PASID tables; PASIDs are guest-private
 *     and mapped by SPID like `spid-vtd`.
 */
import { fail } from '../../errors.js';

export const ALLOC_SCHEMES = ['vcmd-identity', 'spid-vtd', 'virtio-spid'] as const;
export type AllocScheme = (typeof ALLOC_SCHEMES)[number];

export const SCHEME_LABEL: Record<AllocScheme, string> = {
  'vcmd-identity': 'VCMD identity (VT-d)',
  'spid-vtd': 'guest-private, SPID (VT-d)',
  'virtio-spid': 'guest-private, SPID (virtio-iommu)',
};

export const QUOTA_POLICIES = ['demand', 'fair-share', 'unlimited'] as const;
export type QuotaPolicy = (typeof QUOTA_POLICIES)[number];

export interface AllocPoint {
  kind: 'alloc';
  scheme: AllocScheme;
  vms: number;
  pasidsPerVm: number;
  /** IOASID set quota of each VM. */
  quota: number;
}

export interface FairnessPoint {
  kind: 'fairness';
  scheme: AllocScheme;
  vms: number;
  policy: QuotaPolicy;
  pasidBits: number;
  /** Total demand / capacity. */
  oversubscription: number;
}

export interface DmaPoint {
  kind: 'dma';
  scheme: AllocScheme;
  /** `pf`: the PASID is used as programmed; `adi`: the VDCM translates it (find_by_spid). */
  device: 'pf' | 'adi';
  length: number;
  samples: number;
}

/**
 * The DMA experiment's variants: identity with a `pf` device (no translation) and with an `adi`
 * device (the VDCM's find_by_spid on the path, SPID = PASID), guest-private PASIDs on an `adi`
 * (VT-d) and on a `pf` behind virtio-iommu (the host PASID comes from the SPID mapping).
 */
export const DMA_VARIANTS: readonly { scheme: AllocScheme; device: 'pf' | 'adi' }[] = [
  { scheme: 'vcmd-identity', device: 'pf' },
  { scheme: 'vcmd-identity', device: 'adi' },
  { scheme: 'spid-vtd', device: 'adi' },
  { scheme: 'virtio-spid', device: 'pf' },
];

export interface AllocGrid {
  alloc: AllocPoint[];
  fairness: FairnessPoint[];
  dma: DmaPoint[];
}

export interface GridAxes {
  schemes: readonly AllocScheme[];
  vms: readonly number[];
  pasidsPerVm: readonly number[];
  /** Quota as a fraction of the demand (1 = enough; 0.5 = exhaustion half way). */
  quotaFactors: readonly number[];
  fairnessSchemes: readonly AllocScheme[];
  fairnessVms: readonly number[];
  policies: readonly QuotaPolicy[];
  pasidBits: number;
  oversubscription: number;
  dmaLengths: readonly number[];
  dmaSamples: number;
}

/** The documented full grid (docs/performance.md § Experiments). */
export const FULL_AXES: GridAxes = {
  schemes: ALLOC_SCHEMES,
  vms: [1, 4, 16],
  pasidsPerVm: [64, 256],
  quotaFactors: [1, 0.5],
  fairnessSchemes: ALLOC_SCHEMES,
  fairnessVms: [2, 4, 8],
  policies: QUOTA_POLICIES,
  pasidBits: 10,
  oversubscription: 2,
  dmaLengths: [64, 4096],
  dmaSamples: 2000,
};

/** The `--quick` grid: a few points of each experiment (under ~30 s in all). */
export const QUICK_AXES: GridAxes = {
  schemes: ALLOC_SCHEMES,
  vms: [1, 2],
  pasidsPerVm: [16],
  quotaFactors: [1, 0.5],
  fairnessSchemes: ['vcmd-identity'],
  fairnessVms: [2, 4],
  policies: ['demand', 'fair-share'],
  pasidBits: 10,
  oversubscription: 2,
  dmaLengths: [64],
  dmaSamples: 200,
};

function checkAxes(a: GridAxes): void {
  const posInts = (name: string, xs: readonly number[]): void => {
    if (xs.length === 0) fail('EINVAL', `grid axis '${name}' is empty`);
    for (const x of xs) if (!Number.isInteger(x) || x < 1) fail('EINVAL', `grid axis '${name}' has ${x}; expected a positive integer`);
  };
  posInts('vms', a.vms);
  posInts('pasidsPerVm', a.pasidsPerVm);
  posInts('fairnessVms', a.fairnessVms);
  posInts('dmaLengths', a.dmaLengths);
  posInts('dmaSamples', [a.dmaSamples]);
  if (a.schemes.length === 0) fail('EINVAL', "grid axis 'schemes' is empty");
  for (const s of [...a.schemes, ...a.fairnessSchemes]) if (!ALLOC_SCHEMES.includes(s)) fail('EINVAL', `unknown allocation scheme '${s}'`);
  for (const p of a.policies) if (!QUOTA_POLICIES.includes(p)) fail('EINVAL', `unknown quota policy '${p}'`);
  for (const f of a.quotaFactors) if (!(f > 0 && f <= 1)) fail('EINVAL', `quota factor ${f} is not in (0, 1]`);
  if (!Number.isInteger(a.pasidBits) || a.pasidBits < 4 || a.pasidBits > 20) fail('EINVAL', `pasidBits ${a.pasidBits} is not in [4, 20]`);
  if (!(a.oversubscription >= 1)) fail('EINVAL', `oversubscription ${a.oversubscription} is below 1`);
}

/** Expand axes into grid points, in a stable order (scheme outermost). */
export function buildGrid(axes: GridAxes): AllocGrid {
  checkAxes(axes);
  const alloc: AllocPoint[] = [];
  for (const scheme of axes.schemes)
    for (const vms of axes.vms)
      for (const pasidsPerVm of axes.pasidsPerVm)
        for (const f of axes.quotaFactors) alloc.push({ kind: 'alloc', scheme, vms, pasidsPerVm, quota: Math.max(1, Math.floor(pasidsPerVm * f)) });
  const fairness: FairnessPoint[] = [];
  for (const scheme of axes.fairnessSchemes)
    for (const vms of axes.fairnessVms)
      for (const policy of axes.policies) fairness.push({ kind: 'fairness', scheme, vms, policy, pasidBits: axes.pasidBits, oversubscription: axes.oversubscription });
  const dma: DmaPoint[] = [];
  for (const v of DMA_VARIANTS) {
    if (!axes.schemes.includes(v.scheme)) continue;
    for (const length of axes.dmaLengths) dma.push({ kind: 'dma', scheme: v.scheme, device: v.device, length, samples: axes.dmaSamples });
  }
  return { alloc, fairness, dma };
}

/** Quota each VM's set asks for under a policy, and what it then demands. */
export function fairnessPlan(p: FairnessPoint, capacity: number): { quota: number; demand: number } {
  const demand = Math.ceil((p.oversubscription * capacity) / p.vms);
  const quota = p.policy === 'demand' ? demand : p.policy === 'fair-share' ? Math.floor(capacity / p.vms) : 0;
  return { quota, demand };
}

export function pointLabel(p: AllocPoint | FairnessPoint | DmaPoint): string {
  switch (p.kind) {
    case 'alloc':
      return `alloc ${p.scheme} vms=${p.vms} pasids=${p.pasidsPerVm} quota=${p.quota}`;
    case 'fairness':
      return `fairness ${p.scheme} vms=${p.vms} policy=${p.policy}`;
    case 'dma':
      return `dma ${p.scheme} ${p.device} len=${p.length}`;
  }
}
