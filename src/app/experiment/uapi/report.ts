/**
 * Writes the uAPI experiment's output directory:
 *   uapi-ops.csv        per uAPI and operation: latency p50/p99/mean (µs), messages per operation
 *   uapi-messages.csv   frames per operation by class and message name
 *   uapi-samples.csv    every measured operation
 *   uapi-latency.svg    p50 and p99 latency per operation, both uAPIs (log scale)
 *   uapi-messages.svg   messages on the wire per operation, both uAPIs
 *   summary.md          the comparison in numbers
 *   results.json        everything, for tools
 * Column names carry their unit (…_us).
 */
import fs from 'node:fs';
import path from 'node:path';
import { toCsv, type CsvRow } from '../csv.js';
import { barChart } from '../svg-chart.js';
import { mdNumber, mdTable } from '../markdown.js';
import { HEADLINE_OPS, OP_DESCRIPTION, UAPI_LABEL, UAPI_OPS, UAPIS, type Uapi, type UapiOp } from './types.js';
import type { UapiOpRow, UapiResults } from './results.js';

export const UAPI_OP_COLUMNS = [
  'uapi', 'op', 'samples', 'failed', 'p50_us', 'p99_us', 'mean_us', 'messages_per_op', 'messages_min', 'messages_max',
  'requests_per_op', 'replies_per_op', 'backend_requests_per_op', 'backend_replies_per_op', 'request_names',
] as const;
export const UAPI_MESSAGE_COLUMNS = ['uapi', 'op', 'class', 'message', 'per_op'] as const;
export const UAPI_SAMPLE_COLUMNS = ['uapi', 'op', 'iteration', 'latency_us', 'messages', 'requests', 'replies', 'backend_requests', 'backend_replies'] as const;

/** The section headings summary.md always has, in order. */
export const UAPI_SUMMARY_SECTIONS = ['Findings', 'Setup', 'Messages on the wire', 'Latency', 'Messages by name', 'Failures', 'Files'] as const;

const VIOMMU_LABEL = { vtd: 'VT-d', virtio: 'virtio-iommu' } as const;

function row(r: UapiResults, uapi: Uapi, op: UapiOp): UapiOpRow | undefined {
  return r.ops.find((x) => x.uapi === uapi && x.op === op && x.samples > 0);
}

function presentUapis(r: UapiResults): Uapi[] {
  return UAPIS.filter((u) => r.ops.some((x) => x.uapi === u && x.samples > 0));
}

function presentOps(r: UapiResults): UapiOp[] {
  return UAPI_OPS.filter((op) => r.ops.some((x) => x.op === op && x.samples > 0));
}

/** Charts as name → SVG text (none without data). */
export function buildUapiCharts(r: UapiResults): Record<string, string> {
  const uapis = presentUapis(r);
  const ops = presentOps(r);
  if (uapis.length === 0 || ops.length === 0) return {};
  const value = (u: Uapi, op: UapiOp, k: 'p50_us' | 'p99_us' | 'messages_per_op'): number => row(r, u, op)?.[k] ?? NaN;
  return {
    'uapi-latency.svg': barChart({
      title: 'Latency per operation: VFIO SVA vs iommufd',
      xLabel: `operation (guest driver, one ${VIOMMU_LABEL[r.viommu]} VM per uAPI on one host)`,
      yLabel: 'latency (µs, log scale; guest call to completion)',
      categories: ops,
      yLog: true,
      series: uapis.flatMap((u) => [
        { name: `${UAPI_LABEL[u]} p50`, values: ops.map((op) => value(u, op, 'p50_us')) },
        { name: `${UAPI_LABEL[u]} p99`, values: ops.map((op) => value(u, op, 'p99_us')) },
      ]),
    }),
    'uapi-messages.svg': barChart({
      title: 'Messages on the wire per operation: VFIO SVA vs iommufd',
      xLabel: 'operation',
      yLabel: 'messages per operation (count, both directions)',
      categories: ops,
      series: uapis.map((u) => ({ name: UAPI_LABEL[u], values: ops.map((op) => value(u, op, 'messages_per_op')) })),
    }),
  };
}

function msgs(x: UapiOpRow | undefined): string {
  if (!x) return '–';
  const m = mdNumber(x.messages_per_op);
  return x.messages_min === x.messages_max ? m : `${m} (${x.messages_min}–${x.messages_max})`;
}

/** summary.md: the findings first, in numbers, then one section per view. */
export function buildUapiSummary(r: UapiResults, files: string[]): string {
  const out: string[] = [];
  const uapis = presentUapis(r);
  const ops = presentOps(r);
  out.push(`# Host uAPI experiment: VFIO SVA vs iommufd, ${VIOMMU_LABEL[r.viommu]} guests${r.quick ? ' (quick)' : ''}\n`);
  out.push(
    `Run ${r.startedAt} on ${r.machine.cores} × ${r.machine.cpus}, Node ${r.machine.node}; host: ${r.hostKind}. ${r.iterations} iterations per uAPI over ${r.rounds} rounds, the two VMs taking turns (order swapped every round). Latency is wall-clock in the guest process around the guest driver's call.\n`,
  );

  const findings: string[] = [];
  if (uapis.length === 2) {
    for (const op of HEADLINE_OPS) {
      const a = row(r, 'vfio-sva', op);
      const b = row(r, 'iommufd', op);
      if (!a || !b) continue;
      findings.push(
        `${op}: ${msgs(a)} vs ${msgs(b)} messages (VFIO SVA vs iommufd; guest requests ${a.request_names || 'none'} vs ${b.request_names || 'none'}); p50 ${mdNumber(a.p50_us)} vs ${mdNumber(b.p50_us)} µs, p99 ${mdNumber(a.p99_us)} vs ${mdNumber(b.p99_us)} µs.`,
      );
    }
  }
  for (const s of r.skipped) findings.push(`The ${UAPI_LABEL[s.uapi]} VM could not start: ${s.reason}`);
  if (r.failures.length) findings.push(`${r.failures.length} operation(s) failed (see Failures).`);
  out.push(`## Findings\n`);
  out.push(findings.length ? findings.map((f) => `- ${f}`).join('\n') + '\n' : 'No operation produced data.\n');

  out.push(`## Setup\n`);
  out.push(
    [
      `- One host, two VMs on it: a ${VIOMMU_LABEL[r.viommu]} guest (one PCIe function with PASID, ATS and PRI) on each uAPI, chosen at VM_SETUP (docs/protocol.md §13), the same guest driver and workload on both.`,
      `- One iteration = one guest process of ${OP_DESCRIPTION[r.viommu]}.`,
      `- Messages: ${r.counting}. An operation's messages are those between its start and the moment every request the VM sent has been answered.`,
      '',
    ].join('\n'),
  );

  out.push(`## Messages on the wire\n`);
  out.push(
    ops.length
      ? mdTable(['operation', ...uapis.flatMap((u) => [`${UAPI_LABEL[u]} messages`, `${UAPI_LABEL[u]} guest requests`])], ops.map((op) => [op, ...uapis.flatMap((u) => [msgs(row(r, u, op)), row(r, u, op)?.request_names || '–'])]))
      : 'No data.\n',
  );
  out.push(`## Latency\n`);
  out.push(
    ops.length
      ? mdTable(['operation', ...uapis.flatMap((u) => [`${UAPI_LABEL[u]} p50 (µs)`, `${UAPI_LABEL[u]} p99 (µs)`]), 'samples'], ops.map((op) => [op, ...uapis.flatMap((u) => [row(r, u, op)?.p50_us, row(r, u, op)?.p99_us]), uapis.map((u) => row(r, u, op)?.samples ?? 0).join(' / ')]))
      : 'No data.\n',
  );
  out.push(`## Messages by name\n`);
  out.push(
    r.messages.length
      ? 'Frames per operation: `request` guest → host, `reply` host → guest, `backend-request` host → guest on the backend channel, `backend-reply` its ack.\n\n' +
          mdTable(['uAPI', 'operation', 'class', 'message', 'per operation'], r.messages.map((m) => [UAPI_LABEL[m.uapi], m.op, m.class, m.message, m.per_op]))
      : 'No data.\n',
  );
  out.push(`## Failures\n`);
  out.push(r.failures.length || r.skipped.length ? mdTable(['uAPI', 'operation', 'iteration', 'status'], [...r.skipped.map((s) => [UAPI_LABEL[s.uapi], 'start', '–', s.reason] as const), ...r.failures.map((f) => [UAPI_LABEL[f.uapi], f.op, f.iteration, f.status] as const)]) : 'None.\n');
  out.push(`## Files\n`);
  out.push(files.map((f) => `- [${f}](${f})${f.endsWith('.svg') ? `\n\n  ![${f}](${f})` : ''}`).join('\n') + '\n');
  return out.join('\n');
}

/** Write everything into `dir` (created if needed); returns the file names written. */
export function writeUapiReport(r: UapiResults, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {
    'uapi-ops.csv': toCsv(UAPI_OP_COLUMNS, r.ops as unknown as CsvRow[]),
    'uapi-messages.csv': toCsv(UAPI_MESSAGE_COLUMNS, r.messages as unknown as CsvRow[]),
    'uapi-samples.csv': toCsv(UAPI_SAMPLE_COLUMNS, r.samples as unknown as CsvRow[]),
    ...buildUapiCharts(r),
  };
  const names = [...Object.keys(files), 'results.json', 'summary.md'];
  files['results.json'] = JSON.stringify(r, null, 2) + '\n';
  files['summary.md'] = buildUapiSummary(r, names.filter((n) => n !== 'summary.md'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return names;
}
