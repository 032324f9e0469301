/**
 * Writes the allocation experiment's output directory:
 *   alloc.csv, latency-samples.csv, fairness.csv, fairness-vms.csv, dma.csv  (data)
 *   *.svg                                                                    (charts)
 *   summary.md                                                               (findings in numbers)
 *   results.json                                                             (everything, for tools)
 * Column names carry their unit (…_us, …_per_s, …_ms).
 */
import fs from 'node:fs';
import path from 'node:path';
import { toCsv, type CsvRow } from '../csv.js';
import { barChart, lineChart, type Series } from '../svg-chart.js';
import { mdNumber, mdTable } from '../markdown.js';
import { cdfPoints } from '../stats.js';
import { ALLOC_SCHEMES, QUOTA_POLICIES, SCHEME_LABEL, type AllocScheme } from '../grid.js';
import type { AllocResults, AllocRow } from './results.js';

export const ALLOC_COLUMNS = ['scheme', 'vms', 'pasids_per_vm', 'quota', 'attempted', 'succeeded', 'failed', 'errors', 'alloc_p50_us', 'alloc_p99_us', 'bind_p50_us', 'bind_p99_us', 'throughput_per_s', 'wall_ms'] as const;
export const SAMPLE_COLUMNS = ['scheme', 'vms', 'pasids_per_vm', 'quota', 'vm', 'op', 'latency_us'] as const;
export const FAIRNESS_COLUMNS = ['scheme', 'vms', 'policy', 'capacity', 'demand_per_vm', 'vms_started', 'total_bound', 'utilization', 'jain_index', 'min_share', 'max_share'] as const;
export const FAIRNESS_VM_COLUMNS = ['scheme', 'vms', 'policy', 'capacity', 'quota', 'demand', 'vm', 'setup_ok', 'succeeded', 'status'] as const;
export const DMA_COLUMNS = ['scheme', 'mapping', 'device', 'length', 'samples', 'ok', 'p50_us', 'p99_us', 'mean_us'] as const;

/** The section headings summary.md always has, in order. */
export const SUMMARY_SECTIONS = ['Findings', 'Setup', 'Allocation and bind latency', 'Throughput', 'Quota exhaustion', 'Fairness under a small PASID space', 'DMA path cost of non-identity mapping', 'Skipped points', 'Files'] as const;

function present<T extends { scheme: AllocScheme }>(rows: readonly T[]): AllocScheme[] {
  return ALLOC_SCHEMES.filter((s) => rows.some((r) => r.scheme === s));
}

/** Rows with enough quota for the whole demand (the latency/throughput points). */
function fullQuota(rows: readonly AllocRow[]): AllocRow[] {
  return rows.filter((r) => r.quota >= r.pasids_per_vm);
}

function maxOf(xs: number[]): number {
  return xs.length ? Math.max(...xs) : NaN;
}

/** Charts as name → SVG text (only those with data). */
export function buildCharts(r: AllocResults): Record<string, string> {
  const charts: Record<string, string> = {};
  const full = fullQuota(r.alloc);
  const schemes = present(full);
  const maxPasids = maxOf(full.map((x) => x.pasids_per_vm));
  const atMax = full.filter((x) => x.pasids_per_vm === maxPasids);

  if (atMax.length) {
    const s = (f: (x: AllocRow) => number): Series[] =>
      schemes.map((sc) => ({ name: SCHEME_LABEL[sc], points: atMax.filter((x) => x.scheme === sc).sort((a, b) => a.vms - b.vms).map((x) => [x.vms, f(x)] as [number, number]) }));
    const vsVms: [file: string, title: string, yLabel: string, y: (x: AllocRow) => number][] = [
      ['bind-latency-vs-vms.svg', 'Bind latency p50', 'bind latency p50 (µs)', (x) => x.bind_p50_us],
      ['alloc-latency-vs-vms.svg', 'Allocation latency p50', 'allocation latency p50 (µs)', (x) => x.alloc_p50_us],
      ['throughput-vs-vms.svg', 'Set-up throughput', 'PASIDs allocated and bound (per second, all VMs)', (x) => x.throughput_per_s],
    ];
    for (const [file, title, yLabel, y] of vsVms) {
      charts[file] = lineChart({
        title: `${title} vs concurrent VMs (${maxPasids} PASIDs per VM)`,
        xLabel: 'concurrent VMs (count)',
        xInteger: true,
        yLabel,
        series: s(y),
      });
    }
  }

  // CDF of alloc+bind latency at the largest full-quota point of each scheme.
  const cdfSeries: Series[] = [];
  for (const sc of schemes) {
    const rows = full.filter((x) => x.scheme === sc);
    const big = rows.sort((a, b) => b.vms * b.pasids_per_vm - a.vms * a.pasids_per_vm)[0];
    if (!big) continue;
    const lat = r.samples.filter((x) => x.scheme === sc && x.vms === big.vms && x.pasids_per_vm === big.pasids_per_vm && x.quota === big.quota && x.op === 'bind').map((x) => x.latency_us);
    if (lat.length) cdfSeries.push({ name: `${SCHEME_LABEL[sc]} (${big.vms} VMs)`, points: cdfPoints(lat, 200) });
  }
  if (cdfSeries.length && cdfSeries.some((s) => s.points.some((p) => p[0] > 0))) {
    charts['bind-latency-cdf.svg'] = lineChart({
      title: 'Bind latency distribution (CDF)',
      xLabel: 'bind latency (µs, log scale)',
      yLabel: 'fraction of binds (cumulative)',
      xLog: true,
      series: cdfSeries,
    });
  }

  const short = r.alloc.filter((x) => x.quota < x.pasids_per_vm);
  if (short.length) {
    const cats = [...new Set(short.map((x) => `${x.vms} VM × ${x.pasids_per_vm}, quota ${x.quota}`))];
    const sch = present(short);
    charts['quota-exhaustion.svg'] = barChart({
      title: 'PASIDs bound when the demand exceeds the quota',
      xLabel: 'grid point (VMs × PASIDs demanded per VM, quota per VM)',
      yLabel: 'PASIDs bound (count, all VMs)',
      categories: cats,
      series: sch.map((sc) => ({
        name: SCHEME_LABEL[sc],
        values: cats.map((c) => short.find((x) => x.scheme === sc && `${x.vms} VM × ${x.pasids_per_vm}, quota ${x.quota}` === c)?.succeeded ?? NaN),
      })),
    });
  }

  if (r.fairness.length) {
    const vmsCats = [...new Set(r.fairness.map((x) => x.vms))].sort((a, b) => a - b);
    const sc = present(r.fairness)[0]!;
    const rows = r.fairness.filter((x) => x.scheme === sc);
    const pols = QUOTA_POLICIES.filter((p) => rows.some((x) => x.policy === p));
    const bar = (metric: 'jain_index' | 'utilization', title: string, yLabel: string): string =>
      barChart({
        title,
        xLabel: 'VMs competing (count)',
        yLabel,
        categories: vmsCats.map((v) => `${v} VMs`),
        series: pols.map((p) => ({ name: `quota policy: ${p}`, values: vmsCats.map((v) => rows.find((x) => x.vms === v && x.policy === p)?.[metric] ?? NaN) })),
      });
    charts['fairness-jain.svg'] = bar('jain_index', `Fairness between VMs (${SCHEME_LABEL[sc]}, capacity ${rows[0]!.capacity})`, "Jain's fairness index (1 = equal)");
    charts['fairness-utilization.svg'] = bar('utilization', `Capacity used by the competing VMs (${SCHEME_LABEL[sc]})`, 'PASIDs bound / capacity (fraction)');
  }

  if (r.dma.length) {
    const lens = [...new Set(r.dma.map((x) => x.length))].sort((a, b) => a - b);
    const variants = [...new Set(r.dma.map((x) => `${x.scheme}/${x.device}`))];
    const vLabel = (v: string): string => {
      const [sc, dev] = v.split('/') as [AllocScheme, string];
      return `${SCHEME_LABEL[sc]}, ${dev}`;
    };
    const series = (metric: 'p50_us' | 'p99_us') => variants.map((v) => ({ name: vLabel(v), values: lens.map((l) => r.dma.find((x) => `${x.scheme}/${x.device}` === v && x.length === l)?.[metric] ?? NaN) }));
    charts['dma-latency.svg'] = barChart({
      title: 'Device DMA latency through a bound PASID (p50)',
      xLabel: 'DMA read length (bytes)',
      yLabel: 'DMA latency p50 (µs, guest request to result)',
      categories: lens.map((l) => `${l} B`),
      series: series('p50_us'),
    });
  }
  return charts;
}

function pct(a: number, b: number): string {
  return `${mdNumber(((a - b) / b) * 100)} %`;
}

/** summary.md: the findings first, in numbers, then one section per experiment. */
export function buildSummary(r: AllocResults, files: string[]): string {
  const out: string[] = [];
  out.push(`# Paravirtual PASID allocation experiment${r.quick ? ' (quick grid)' : ''}\n`);
  out.push(`Run ${r.startedAt} on ${r.machine.cores} × ${r.machine.cpus}, Node ${r.machine.node}. Latencies are wall-clock in the guest process, from the guest's first register/queue write to the result it can observe; the host is a separate process.\n`);

  const full = fullQuota(r.alloc);
  const findings: string[] = [];
  const big = (sc: AllocScheme): AllocRow | undefined => full.filter((x) => x.scheme === sc).sort((a, b) => b.vms * b.pasids_per_vm - a.vms * a.pasids_per_vm || a.vms - b.vms)[0];
  const ident = big('vcmd-identity');
  for (const sc of present(full)) {
    const b = big(sc)!;
    findings.push(
      `${SCHEME_LABEL[sc]}: at ${b.vms} VMs × ${b.pasids_per_vm} PASIDs, allocation p50 ${mdNumber(b.alloc_p50_us)} µs (p99 ${mdNumber(b.alloc_p99_us)} µs), bind p50 ${mdNumber(b.bind_p50_us)} µs (p99 ${mdNumber(b.bind_p99_us)} µs), ${mdNumber(b.throughput_per_s)} PASIDs set up per second.`,
    );
  }
  if (ident) {
    for (const sc of ['spid-vtd', 'virtio-spid'] as const) {
      const b = big(sc);
      if (!b) continue;
      const tot = (x: AllocRow): number => x.alloc_p50_us + x.bind_p50_us;
      findings.push(`Alloc + bind p50, ${SCHEME_LABEL[sc]} vs VCMD identity: ${mdNumber(tot(b))} µs vs ${mdNumber(tot(ident))} µs (${pct(tot(b), tot(ident))}).`);
    }
  }
  const short = r.alloc.filter((x) => x.quota < x.pasids_per_vm);
  for (const sc of present(short)) {
    const rows = short.filter((x) => x.scheme === sc);
    const exact = rows.filter((x) => x.succeeded === x.vms * x.quota).length;
    const errs = [...new Set(rows.flatMap((x) => x.errors.split(' ').filter(Boolean)))].join(', ') || 'none';
    findings.push(`Quota exhaustion, ${SCHEME_LABEL[sc]}: ${exact} of ${rows.length} points bound exactly quota × VMs PASIDs; refusals seen: ${errs}.`);
  }
  for (const f of r.fairness) {
    if (f.vms === maxOf(r.fairness.map((x) => x.vms)))
      findings.push(`Fairness, ${f.vms} VMs, policy ${f.policy} (${SCHEME_LABEL[f.scheme]}): Jain ${mdNumber(f.jain_index)}, ${f.vms_started}/${f.vms} VMs started, ${mdNumber(f.utilization * 100)} % of the ${f.capacity} IDs used, shares ${f.min_share}–${f.max_share}.`);
  }
  const dId = r.dma.find((x) => x.scheme === 'vcmd-identity' && x.device === 'pf');
  for (const d of r.dma.filter((x) => !(x.scheme === 'vcmd-identity' && x.device === 'pf'))) {
    const base = r.dma.find((x) => x.scheme === 'vcmd-identity' && x.device === 'pf' && x.length === d.length);
    if (base) findings.push(`DMA ${d.length} B p50, ${SCHEME_LABEL[d.scheme]} with ${d.device === 'adi' ? 'an' : 'a'} ${d.device} device vs identity with a pf device: ${mdNumber(d.p50_us)} µs vs ${mdNumber(base.p50_us)} µs (${pct(d.p50_us, base.p50_us)}; p99 ${mdNumber(d.p99_us)} vs ${mdNumber(base.p99_us)} µs).`);
  }
  if (r.micro) findings.push(`Host-side SPID translation alone (find_by_spid): ${mdNumber(r.micro.findBySpidNs)} ns per lookup, beside ${mdNumber(r.micro.mapGetNs)} ns for a Map lookup${dId ? ` — ${mdNumber((r.micro.findBySpidNs / 1000 / dId.p50_us) * 100)} % of one identity DMA round trip` : ''}.`);
  if (r.skipped.length) findings.push(`${r.skipped.length} grid point(s) could not run (see Skipped points).`);

  out.push(`## Findings\n`);
  out.push(findings.length ? findings.map((f) => `- ${f}`).join('\n') + '\n' : 'No point of the grid produced data.\n');

  out.push(`## Setup\n`);
  out.push(
    [
      '- Schemes: **VCMD identity** — VT-d guest allocates through the virtual command interface, guest PASID = host PASID; **guest-private, SPID (VT-d)** — VT-d guest without VCMD picks its own PASIDs, the host allocates a host PASID at bind time and records the guest PASID as its SPID; **guest-private, SPID (virtio-iommu)** — virtio-iommu guest-managed PASID tables, mapped the same way.',
      '- Allocation latency: VCMD write → VCRSP ready (identity); a guest-local pick for the SPID schemes (no host round trip).',
      '- Bind latency: PASID entry written + PASID-cache invalidation + wait descriptor status (VT-d), or ATTACH request completion (virtio-iommu); the host has bound the PASID when it completes.',
      '- VMs of a point run concurrently; each allocates and binds its PASIDs one after another.',
      '',
    ].join('\n'),
  );

  out.push(`## Allocation and bind latency\n`);
  out.push(
    full.length
      ? mdTable(['scheme', 'VMs', 'PASIDs/VM', 'alloc p50 (µs)', 'alloc p99 (µs)', 'bind p50 (µs)', 'bind p99 (µs)'], full.map((x) => [SCHEME_LABEL[x.scheme], x.vms, x.pasids_per_vm, x.alloc_p50_us, x.alloc_p99_us, x.bind_p50_us, x.bind_p99_us]))
      : 'No data.\n',
  );
  out.push(`## Throughput\n`);
  out.push(full.length ? mdTable(['scheme', 'VMs', 'PASIDs/VM', 'set up (per s)', 'wall (ms)'], full.map((x) => [SCHEME_LABEL[x.scheme], x.vms, x.pasids_per_vm, x.throughput_per_s, x.wall_ms])) : 'No data.\n');
  out.push(`## Quota exhaustion\n`);
  out.push(
    short.length
      ? 'Each VM demands more PASIDs than its IOASID set quota. Expected: exactly quota × VMs succeed and every further attempt is refused.\n\n' +
          mdTable(['scheme', 'VMs', 'demand/VM', 'quota/VM', 'succeeded', 'refused', 'refusal status'], short.map((x) => [SCHEME_LABEL[x.scheme], x.vms, x.pasids_per_vm, x.quota, x.succeeded, x.failed, x.errors || '–']))
      : 'No data.\n',
  );
  out.push(`## Fairness under a small PASID space\n`);
  out.push(
    r.fairness.length
      ? `Host PASID space ${r.fairness[0]!.capacity} IDs; every VM demands ${'`'}oversubscription × capacity / VMs${'`'}; VMs come up one after another, then allocate concurrently until refused. Policies: demand (quota = demand), fair-share (quota = capacity / VMs), unlimited (quota 0 = the rest of the capacity at set-up).\n\n` +
          mdTable(['scheme', 'VMs', 'policy', 'demand/VM', 'VMs started', 'bound', 'utilization', 'Jain', 'min share', 'max share'], r.fairness.map((x) => [SCHEME_LABEL[x.scheme], x.vms, x.policy, x.demand_per_vm, x.vms_started, x.total_bound, x.utilization, x.jain_index, x.min_share, x.max_share]))
      : 'No data.\n',
  );
  out.push(`## DMA path cost of non-identity mapping\n`);
  out.push(
    r.dma.length
      ? mdTable(['scheme', 'mapping', 'device', 'length (B)', 'samples', 'ok', 'p50 (µs)', 'p99 (µs)', 'mean (µs)'], r.dma.map((x) => [SCHEME_LABEL[x.scheme], x.mapping, x.device, x.length, x.samples, x.ok, x.p50_us, x.p99_us, x.mean_us])) +
          (r.micro ? `\nHost-side translation alone: find_by_spid ${mdNumber(r.micro.findBySpidNs)} ns per lookup; Map.get ${mdNumber(r.micro.mapGetNs)} ns.\n` : '')
      : 'No data.\n',
  );
  out.push(`## Skipped points\n`);
  out.push(r.skipped.length ? mdTable(['point', 'reason'], r.skipped.map((s) => [s.point, s.reason])) : 'None.\n');
  out.push(`## Files\n`);
  out.push(files.map((f) => `- [${f}](${f})${f.endsWith('.svg') ? `\n\n  ![${f}](${f})` : ''}`).join('\n') + '\n');
  return out.join('\n');
}

/** Write everything into `dir` (created if needed); returns the file names written. */
export function writeAllocReport(r: AllocResults, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {
    'alloc.csv': toCsv(ALLOC_COLUMNS, r.alloc as unknown as CsvRow[]),
    'latency-samples.csv': toCsv(SAMPLE_COLUMNS, r.samples as unknown as CsvRow[]),
    'fairness.csv': toCsv(FAIRNESS_COLUMNS, r.fairness as unknown as CsvRow[]),
    'fairness-vms.csv': toCsv(FAIRNESS_VM_COLUMNS, r.fairnessVms as unknown as CsvRow[]),
    'dma.csv': toCsv(DMA_COLUMNS, r.dma as unknown as CsvRow[]),
    ...buildCharts(r),
  };
  const names = [...Object.keys(files), 'results.json', 'summary.md'];
  files['results.json'] = JSON.stringify(r, null, 2) + '\n';
  files['summary.md'] = buildSummary(r, names.filter((n) => n !== 'summary.md'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return names;
}
